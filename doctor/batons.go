package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor"
)

// batonRun describes the `baton run` command line of a process: the
// control socket it uses, from (first found) its -c/--control flag, its
// BATON_CONTROL variable, its --config file's `control` key, or the
// default. env and readFile may fail (another user's process): they are
// then skipped. A relative path is taken from cwd. ok is false when the
// command line is not `baton run`.
func batonRun(cmdline []string, env func() []string, readFile func(string) ([]byte, error), cwd string) (control string, ok bool) {
	if len(cmdline) < 2 || cmdline[1] != "run" {
		return "", false
	}
	var flag, config string
	args := cmdline[2:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		name, val, hasVal := strings.Cut(a, "=")
		switch name {
		case "-c", "--control", "-control":
		case "--config", "-config":
		default:
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				break
			}
			i++
			val = args[i]
		}
		if strings.HasSuffix(name, "config") {
			config = val
		} else {
			flag = val
		}
	}
	control = flag
	if control == "" {
		for _, kv := range env() {
			if v, ok := strings.CutPrefix(kv, "BATON_CONTROL="); ok && v != "" {
				control = v
			}
		}
	}
	if control == "" && config != "" {
		if data, err := readFile(abs(config, cwd)); err == nil {
			var doc struct {
				Control string `yaml:"control"`
			}
			if yaml.Unmarshal(data, &doc) == nil {
				control = doc.Control
			}
		}
	}
	if control == "" {
		control = supervisor.DefaultControlPath
	}
	return abs(control, cwd), true
}

func abs(p, dir string) string {
	if filepath.IsAbs(p) || dir == "" {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// discoverBatons lists the control sockets of the `baton run` processes
// among procs (deduplicated: as PID 1, the init and the supervisor share
// one command line), with the pid of the newest process using each.
func discoverBatons(procs map[int]*Process, readProc func(pid int) procInfo) map[string]int {
	out := map[string]int{}
	pids := make([]int, 0)
	for pid, p := range procs {
		if p.Program == "baton" {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	for _, pid := range pids {
		p := procs[pid]
		info := readProc(pid)
		cl := p.Cmdline
		if cl == nil {
			cl = info.cmdline
		}
		if proc.IsExecShim(cl) {
			continue
		}
		control, ok := batonRun(cl, info.env, readBatonConfig, info.cwd)
		if !ok {
			continue
		}
		if prev, ok := out[control]; !ok || procs[prev].Start.Before(p.Start) {
			out[control] = pid
		}
	}
	return out
}

// procInfo is what discovery reads of a process beyond its stat.
type procInfo struct {
	cmdline []string
	env     func() []string
	cwd     string
}

// statusClient asks one baton for its status over its control socket.
func statusClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		DisableKeepAlives: true,
	}}
}

// queryStatus is GET /v1/status on the control socket at path.
func queryStatus(ctx context.Context, path string, timeout time.Duration) (*api.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://baton/v1/status", nil)
	if err != nil {
		return nil, err
	}
	c := statusClient(path)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return nil, dialError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/status: %s", resp.Status)
	}
	var st api.Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("GET /v1/status: %w", err)
	}
	return &st, nil
}

// dialError shortens the usual control-socket failures.
func dialError(err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return errors.New("no such socket")
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused")
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return errors.New("permission denied (run as root or as baton's user)")
	}
	return err
}

// orphans lists the generations a state file names whose leader still runs
// (same start time) while its baton is gone.
func orphans(h *supervisor.Handover, procs map[int]*Process) []Orphan {
	if h == nil {
		return nil
	}
	if p, ok := procs[h.BatonPid]; ok && p.Program == "baton" {
		return nil // baton lives; it just did not answer
	}
	var ports []int
	for _, l := range h.Listeners {
		sp, err := fdpass.ParseSpec(l.Spec)
		if err != nil {
			continue
		}
		if ap, err := netip.ParseAddrPort(sp.Addr); err == nil && !slices.Contains(ports, int(ap.Port())) {
			ports = append(ports, int(ap.Port()))
		}
	}
	var out []Orphan
	for _, g := range h.Gens {
		if p, ok := procs[g.Pid]; ok && p.StartTicks == g.StartTicks {
			out = append(out, Orphan{Gen: int(g.Gen), Pid: g.Pid, Start: p.Start, Ports: ports})
		}
	}
	return out
}

// markGenerations tags the processes of every generation of b with the
// generation number and b's control path.
func markGenerations(b *Baton, procs map[int]*Process) {
	mark := func(pid, gen int) {
		if p, ok := procs[pid]; ok {
			p.Gen, p.BatonControl = gen, b.Control
		}
	}
	if b.Status != nil {
		for _, g := range b.Status.Generations {
			mark(g.Pid, g.Gen)
			for _, ps := range g.Processes {
				mark(ps.Pid, g.Gen)
			}
		}
	}
	for _, o := range b.Orphans {
		for pid, p := range procs {
			if p.Pgrp == o.Pid {
				mark(pid, o.Gen)
			}
		}
	}
}
