package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonproxy/baton/internal/testbed"
)

// batonMethod runs the proxy under `baton run` (the binary built from
// ./cmd/baton, logging JSON to DIR/baton.log) and reloads it with the
// `baton reload` command, as a user's script would.
type batonMethod struct {
	e     *env
	id    string
	kind  configKind
	extra []string // more `baton run` flags
	cmd   func(cfg string) []string
	// noCheck drops the generic driver's --check-command.
	noCheck bool
	// idle: the child answers no HTTP (the scale run's sleep).
	idle bool
	// render, when set, replaces the kind's config; ports, when set,
	// replace the one listener on Start's port.
	render func(version int) string
	ports  []int
	// fromConfig: no --listen; baton reads the listeners from the
	// proxy's config.
	fromConfig bool
	// activeAfter is how long baton took from its start to an active
	// generation.
	activeAfter time.Duration

	dir, cfg, ctl, log string
	port               int
	p                  *proc
	ctlc               *batonCtl
	seen               map[procID]bool // every descendant seen, for Stop
}

func newBatonHAProxy(e *env) *batonMethod {
	return &batonMethod{e: e, id: "baton-haproxy", kind: haproxyConfig,
		cmd: func(cfg string) []string { return []string{e.haproxy, "-f", cfg} }}
}

func newBatonNginx(e *env) *batonMethod {
	return &batonMethod{e: e, id: "baton-nginx", kind: nginxConfig,
		cmd: func(cfg string) []string { return []string{e.nginx, "-e", "stderr", "-c", cfg} }}
}

// newBatonGeneric supervises examples/activated with the generic driver;
// its config is checked by `activated -check` before each start.
func newBatonGeneric(e *env) *batonMethod {
	return &batonMethod{e: e, id: "baton-generic", kind: activatedConfig,
		extra: []string{"--proxy", "generic"},
		cmd:   func(cfg string) []string { return []string{e.activated, "-config", cfg} }}
}

func (m *batonMethod) ID() string { return m.id }

func (m *batonMethod) Name() string {
	switch m.kind {
	case haproxyConfig:
		return "baton + HAProxy"
	case nginxConfig:
		return "baton + nginx"
	}
	return "baton + generic (examples/activated)"
}

// Pid is baton's pid.
func (m *batonMethod) Pid() int { return m.p.Pid() }

func (m *batonMethod) Start(ctx context.Context, port int) error {
	var err error
	if m.dir, err = m.e.dir(m.id); err != nil {
		return err
	}
	m.port, m.seen = port, map[procID]bool{}
	m.cfg = filepath.Join(m.dir, "proxy.conf")
	m.ctl = filepath.Join(m.dir, "b.sock")
	m.log = filepath.Join(m.dir, "baton.log")
	m.ctlc = newBatonCtl(m.ctl)
	if err := m.writeConfig(1); err != nil {
		return err
	}
	args := []string{m.e.baton, "run", "-c", m.ctl, "--log-format", "json", "--drain-timeout", "30s"}
	listen := m.ports
	if len(listen) == 0 && !m.fromConfig {
		listen = []int{port}
	}
	for _, p := range listen {
		args = append(args, "-l", "tcp://"+addr(p))
	}
	args = append(append(args, m.extra...), m.e.batonRun...)
	if m.kind == activatedConfig && !m.noCheck {
		args = append(args, "--check-command", m.e.activated+" -check -config "+m.cfg)
	}
	args = append(append(args, "--"), m.cmd(m.cfg)...)
	// SIGQUIT is baton's fast stop: it takes its generations down with it.
	begin := time.Now()
	if m.p, err = startProc(args, m.log, syscall.SIGQUIT); err != nil {
		return err
	}
	if err := m.waitActive(ctx, 60*time.Second); err != nil {
		return err
	}
	m.activeAfter = time.Since(begin)
	if m.idle {
		return nil
	}
	return waitServing(ctx, addr(port), 1, 30*time.Second, func() bool { return !m.p.Exited() })
}

// writeConfig writes the config of version.
func (m *batonMethod) writeConfig(version int) error {
	if m.render != nil {
		return testbed.WriteFileAtomic(m.cfg, []byte(m.render(version)))
	}
	return writeConfig(m.cfg, m.kind, m.port, version)
}

// waitActive polls status until a generation is active.
func (m *batonMethod) waitActive(ctx context.Context, timeout time.Duration) error {
	var last error
	ok := pollUntil(timeout, 10*time.Millisecond, func() bool {
		if m.p.Exited() || ctx.Err() != nil {
			return true
		}
		st, err := m.status(ctx)
		if gen, _ := st.Active(); err == nil && gen > 0 {
			return true
		}
		last = err
		return false
	})
	switch {
	case m.p.Exited():
		return fmt.Errorf("baton exited before serving: %v\n%s", m.p.err, tail(m.log, 20))
	case ctx.Err() != nil:
		return ctx.Err()
	case !ok:
		return fmt.Errorf("no active generation after %s: %v\n%s", timeout, last, tail(m.log, 20))
	}
	return nil
}

// status asks the control API and remembers every process it names.
func (m *batonMethod) status(ctx context.Context) (testbed.Status, error) {
	st, err := m.ctlc.status(ctx)
	for _, g := range st.Generations {
		for _, p := range g.Processes {
			if id, ok := idOf(p.Pid); ok {
				m.seen[id] = true
			}
		}
	}
	return st, err
}

// Reload runs `baton reload --json`; the ack is its return.
func (m *batonMethod) Reload(ctx context.Context, version int) (reloadInfo, error) {
	if err := m.writeConfig(version); err != nil {
		return reloadInfo{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.e.baton, "reload", "--json", "-c", m.ctl)
	cmd.WaitDelay = time.Second
	var out, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return reloadInfo{}, fmt.Errorf("baton reload: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var res reloadResponse
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		return reloadInfo{}, fmt.Errorf("baton reload: %w", err)
	}
	return reloadInfo{Server: time.Duration(res.DurationMs * float64(time.Millisecond))}, nil
}

// apiMethod is a baton method whose reloads go through the control API
// from the bench process instead of the `baton reload` CLI: the same
// request without a program start.
type apiMethod struct{ *batonMethod }

func viaAPI(m *batonMethod) Method { return apiMethod{m} }

func (m apiMethod) ID() string   { return m.batonMethod.ID() + "-api" }
func (m apiMethod) Name() string { return m.batonMethod.Name() + ", control API" }

// Reload writes the config and sends POST /v1/reload itself.
func (m apiMethod) Reload(ctx context.Context, version int) (reloadInfo, error) {
	if err := m.writeConfig(version); err != nil {
		return reloadInfo{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	res, err := m.reloadAPI(ctx)
	if err != nil {
		return reloadInfo{}, fmt.Errorf("POST /v1/reload: %w", err)
	}
	return reloadInfo{Server: time.Duration(res.DurationMs * float64(time.Millisecond))}, nil
}

// reloadAPI reloads through the control API directly (no exec of the
// CLI), for the scale runs.
func (m *batonMethod) reloadAPI(ctx context.Context) (reloadResponse, error) {
	return m.ctlc.reload(ctx)
}

// Kill kill -9s the serving process of the active generation: HAProxy's
// worker (its master then exits), every nginx process of the generation,
// the socket-activated server itself.
func (m *batonMethod) Kill() (string, error) {
	st, err := m.status(context.Background())
	if err != nil {
		return "", err
	}
	for _, g := range st.Generations {
		if g.State != "active" {
			continue
		}
		var victims []int
		for _, p := range g.Processes {
			if m.kind != haproxyConfig || p.Pid != g.Pid {
				victims = append(victims, p.Pid)
			}
		}
		if len(victims) == 0 {
			return "", fmt.Errorf("generation %d has no process to kill", g.Gen)
		}
		for _, pid := range victims {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return fmt.Sprintf("generation %d: pids %v", g.Gen, victims), nil
	}
	return "", errors.New("no active generation")
}

func (m *batonMethod) Serving() bool {
	if m.p == nil || m.p.Exited() {
		return false
	}
	st, err := m.status(context.Background())
	gen, _ := st.Active()
	return err == nil && gen > 0
}

// settle waits up to timeout until only the active generation is left.
func (m *batonMethod) settle(ctx context.Context, timeout time.Duration) bool {
	return pollUntil(timeout, 20*time.Millisecond, func() bool {
		st, err := m.status(ctx)
		return ctx.Err() != nil || (err == nil && len(st.Generations) == 1)
	})
}

// Stop is baton's fast stop (SIGQUIT), then SIGKILL by pid of anything
// left: baton itself after 20 s, any process it started.
func (m *batonMethod) Stop() error {
	if m.p == nil {
		return nil
	}
	for _, id := range descendantIDs(m.Pid()) {
		m.seen[id] = true
	}
	m.p.stop(syscall.SIGQUIT, 20*time.Second)
	var ids []procID
	for id := range m.seen {
		ids = append(ids, id)
	}
	if left := reap(ids); len(left) > 0 {
		return fmt.Errorf("%s: processes left after stop: %v", m.id, left)
	}
	return nil
}

// batonCtl talks to baton's control API over its unix socket.
type batonCtl struct {
	hc *http.Client
}

// reloadResponse is baton's answer to a reload.
type reloadResponse struct {
	Generation int     `json:"generation"`
	Pid        int     `json:"pid"`
	DurationMs float64 `json:"duration_ms"`
}

func newBatonCtl(path string) *batonCtl {
	return &batonCtl{hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 1,
	}}}
}

func (c *batonCtl) call(ctx context.Context, method, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://baton"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(body)))
	}
	return json.Unmarshal(body, out)
}

func (c *batonCtl) status(ctx context.Context) (testbed.Status, error) {
	var st testbed.Status
	err := c.call(ctx, http.MethodGet, "/v1/status", &st)
	return st, err
}

func (c *batonCtl) reload(ctx context.Context) (reloadResponse, error) {
	var res reloadResponse
	err := c.call(ctx, http.MethodPost, "/v1/reload", &res)
	return res, err
}

// statusCLI times one `baton status` (the human-readable form).
func statusCLI(ctx context.Context, bin, ctl string) (time.Duration, error) {
	start := time.Now()
	cmd := exec.CommandContext(ctx, bin, "status", "-c", ctl)
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("baton status: %w: %s", err, out)
	}
	return time.Since(start), nil
}

// itoa is strconv.Itoa, for argv building.
func itoa(n int) string { return strconv.Itoa(n) }
