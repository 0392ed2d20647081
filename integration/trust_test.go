package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/internal/proc"
)

// trustRig is `baton run` of the generic driver over examples/activated on
// a control path chosen before baton starts (so that a test can put files
// there first).
type trustRig struct {
	act, cfg, control, addr string
	port                    int
}

func newTrustRig(t *testing.T) *trustRig {
	t.Helper()
	dir := batontest.ShortTempDir(t)
	r := &trustRig{act: batontest.BuildBinary(t, "./examples/activated"), cfg: filepath.Join(dir, "activated.conf"),
		control: filepath.Join(dir, "b.sock"), port: batontest.FreePort(t)}
	r.addr = fmt.Sprintf("127.0.0.1:%d", r.port)
	writeConf(t, r.cfg, activatedConf(1))
	return r
}

func (r *trustRig) args() []string {
	return []string{"run", "-c", r.control, "--log-format", "console", "--log-level", "debug",
		"--proxy", "generic", "-l", "tcp://" + r.addr, "--", r.act, "-config", r.cfg}
}

func (r *trustRig) start(t *testing.T) *batontest.Baton {
	t.Helper()
	return batontest.StartBatonArgs(t, r.args(), r.control, batontest.StartOptions{})
}

// stopBaton runs `baton stop` and waits for baton to exit 0.
func stopBaton(t *testing.T, b *batontest.Baton) {
	t.Helper()
	if res := b.CLI("stop"); res.Code != 0 {
		t.Fatalf("baton stop: exit %d: %s", res.Code, res.Stderr)
	}
	if code, err := b.ExitCode(15 * time.Second); code != 0 || err != nil {
		t.Fatalf("baton exit %d, %v", code, err)
	}
}

// TestForgedStateFileNotAdopted guards the forged state file incident end
// to end: a state file listing an unrelated process (a sleep the test
// started, with its real start time) as the active generation, with a
// directory outside the run directory, makes baton report that pid at WARN
// and start its own generation; stopping baton never signals the process
// and never removes the directory.
func TestForgedStateFileNotAdopted(t *testing.T) {
	r := newTrustRig(t)
	victim := exec.Command("sleep", "60")
	victim.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { victim.Process.Kill(); victim.Wait() }()
	pid := victim.Process.Pid
	ticks, err := proc.StartTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	keep := filepath.Join(outside, "keep")
	writeConf(t, keep, "data")
	forged := map[string]any{
		"version": 1, "run_dir": r.control + ".d", "baton_pid": 999999, "baton_start_ticks": 1,
		"machine":   map[string]any{"generations": []any{map[string]any{"Gen": 1, "State": 3, "Pid": pid}}, "last_generation": 1},
		"listeners": []any{map[string]any{"spec": "tcp://" + r.addr, "inode": 1, "users": []int{1}}},
		"gens":      []any{map[string]any{"generation": 1, "pid": pid, "start_ticks": ticks, "dir": outside}},
	}
	data, _ := json.Marshal(forged)
	writeConf(t, r.control+".state", string(data))
	if err := os.Chmod(r.control+".state", 0o600); err != nil {
		t.Fatal(err)
	}
	b := r.start(t)
	st := b.WaitActive(10 * time.Second)
	if _, leader := st.Active(); leader == pid {
		t.Fatalf("baton adopted the forged process %d as its active generation", pid)
	}
	if !strings.Contains(b.Log(), "WARN") || !strings.Contains(b.Log(), `"pid": `+strconv.Itoa(pid)) {
		t.Errorf("no WARN naming pid %d:\n%s", pid, b.LogTail(30))
	}
	if g := batontest.HTTPGet(r.addr, "/", 5*time.Second); g.Status != 200 {
		t.Errorf("GET: %+v", g)
	}
	stopBaton(t, b)
	if err := syscall.Kill(pid, 0); err != nil || procStat(pid) == "Z" {
		t.Errorf("the forged process %d was signalled (kill 0: %v, state %q)", pid, err, procStat(pid))
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("the forged directory's file: %v", err)
	}
}

// TestTruncatedStateFileAdopted guards the truncated state file: after a
// kill -9 of baton, a truncated state file is moved aside and the restarted
// baton still adopts the running generation (found by its marker) with its
// very socket, instead of failing on "address already in use"; reloads and
// stop then work as usual.
func TestTruncatedStateFileAdopted(t *testing.T) {
	r := newTrustRig(t)
	b := r.start(t)
	st := b.WaitActive(10 * time.Second)
	gen, leader := st.Active()
	inode := st.Listeners[0].Inode
	if err := syscall.Kill(b.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.ExitCode(10 * time.Second); code == 0 {
		t.Fatal("baton survived SIGKILL")
	}
	state, err := os.ReadFile(r.control + ".state")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.control+".state", state[:len(state)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	nb := r.start(t)
	st = nb.WaitActive(10 * time.Second)
	gen2, leader2 := st.Active()
	if gen2 != gen || leader2 != leader || st.Listeners[0].Inode != inode {
		t.Fatalf("restarted baton: generation %d pid %d inode %d, want the running %d pid %d inode %d\n%s",
			gen2, leader2, st.Listeners[0].Inode, gen, leader, inode, nb.LogTail(30))
	}
	if !strings.Contains(nb.Log(), "state file not trusted") {
		t.Errorf("no report of the truncated state file")
	}
	if _, err := os.Stat(r.control + ".state.bad"); err != nil {
		t.Errorf("state file not moved aside: %v", err)
	}
	writeConf(t, r.cfg, activatedConf(2))
	if res := nb.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload after the adoption: exit %d: %s", res.Code, res.Stderr)
	}
	if g := batontest.HTTPGet(r.addr, "/", 5*time.Second); g.Status != 200 || !strings.Contains(g.Body, "version 2") {
		t.Errorf("GET after the reload: %+v", g)
	}
	stopBaton(t, nb)
	if batontest.Alive(leader) {
		t.Errorf("the adopted generation (pid %d) outlived baton's stop", leader)
	}
	for _, p := range []string{r.control, r.control + ".lock", r.control + ".d", r.control + ".state"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after the stop: %v", p, err)
		}
	}
}

// TestBusyAddressNamesHolder: an address another process holds makes
// `baton run` exit 1 naming that process and what to do.
func TestBusyAddressNamesHolder(t *testing.T) {
	r := newTrustRig(t)
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File() // a copy for the holder
	ln.Close()
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sleep", "60")
	holder.ExtraFiles = []*os.File{f}
	err = holder.Start()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	res := batontest.RunCLIWith(batontest.RunOpts{Timeout: 20 * time.Second}, batontest.BatonBinary(t), r.args()...)
	t.Logf("exit %d: %s", res.Code, strings.TrimSpace(res.Stderr))
	want := fmt.Sprintf("held by pid %d (sleep 60)", holder.Process.Pid)
	if res.Code != 1 || !strings.Contains(res.Stderr, "address already in use") || !strings.Contains(res.Stderr, want) ||
		!strings.Contains(res.Stderr, fmt.Sprintf("kill %d", holder.Process.Pid)) {
		t.Errorf("exit %d, stderr %q; want 1 naming %q and what to do", res.Code, res.Stderr, want)
	}
	for _, p := range []string{r.control, r.control + ".lock", r.control + ".d"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}

// procStat is the state letter of pid ("" if gone).
func procStat(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2 : i+3]
	}
	return ""
}

// TestKill9BatonStateLostAdoptsProxies guards recovery by the generation
// markers with the real proxies: after a kill -9 of baton and the loss of
// its state file, the restarted baton finds HAProxy's master (marker in its
// environment) and nginx's master (which overwrites its environment with
// its process title: recognised by its command line naming its generation
// directory) and adopts each with its very socket.
func TestKill9BatonStateLostAdoptsProxies(t *testing.T) {
	for _, proxy := range []string{"haproxy", "nginx"} {
		t.Run(proxy, func(t *testing.T) {
			var p *accProxy
			if proxy == "haproxy" {
				p = startAccProxy(t, batontest.HAProxyOpts{}, nil, batontest.StartOptions{})
			} else {
				p = startNginxAcc(t, func(port int) string { return nginxConf(t, port, 1, nil, nil) }, nil, batontest.StartOptions{})
			}
			st := p.b.WaitActive(10 * time.Second)
			gen, leader := st.Active()
			inode := st.Listeners[0].Inode
			if err := syscall.Kill(p.b.Pid(), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if code, _ := p.b.ExitCode(10 * time.Second); code == 0 {
				t.Fatal("baton survived SIGKILL")
			}
			if err := os.Remove(p.b.Control + ".state"); err != nil {
				t.Fatal(err)
			}
			nb := batontest.StartBatonArgs(t, p.b.Cmd.Args[1:], p.b.Control, batontest.StartOptions{})
			st = nb.WaitActive(10 * time.Second)
			gen2, leader2 := st.Active()
			t.Logf("%s: generation %d (pid %d) before the kill; after the restart without a state file: generation %d (pid %d), inode %d → %d",
				proxy, gen, leader, gen2, leader2, inode, st.Listeners[0].Inode)
			if gen2 != gen || leader2 != leader || st.Listeners[0].Inode != inode {
				t.Fatalf("not adopted:\n%s", nb.LogTail(30))
			}
			p.b = nb
			if g := p.get(t); g != "1" {
				t.Errorf("GET answered by config version %q, want 1", g)
			}
			stopBaton(t, nb)
			if batontest.Alive(leader) {
				t.Errorf("the adopted master (pid %d) outlived baton's stop", leader)
			}
		})
	}
}
