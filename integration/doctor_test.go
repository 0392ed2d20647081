package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/doctor"
)

// doctorRun runs `baton doctor --json ARGS...`, checks that it exits 0
// exactly when no warning or critical finding is left and that every
// finding says what it saw, why and the fix, and returns the report.
func doctorRun(t *testing.T, args ...string) doctor.Report {
	t.Helper()
	res := batontest.RunCLI(batontest.BatonBinary(t), append([]string{"doctor", "--json"}, args...)...)
	var r doctor.Report
	if err := json.Unmarshal([]byte(res.Stdout), &r); err != nil {
		t.Fatalf("baton doctor --json %s: exit %d, %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), res.Code, err, res.Stdout, res.Stderr)
	}
	if want := map[bool]int{false: 0, true: 1}[r.Failing()]; res.Code != want {
		t.Errorf("baton doctor exit %d, want %d (failing %v): %s", res.Code, want, r.Failing(), res.Stderr)
	}
	if !slices.Equal(r.Checked, doctor.CheckNames()) {
		t.Errorf("checked %q, want every check %q", r.Checked, doctor.CheckNames())
	}
	for _, f := range r.Findings {
		if f.Saw == "" || f.Why == "" || f.Fix == "" || f.Subject == "" || f.Severity == "" {
			t.Errorf("finding without saw/why/fix: %+v", f)
		}
	}
	t.Logf("baton doctor %s: %d findings in %.0f ms (exit %d)", strings.Join(args, " "), len(r.Findings), r.TookMs, res.Code)
	return r
}

// doctorFind returns the findings of check that involve port or one of
// pids.
func doctorFind(r doctor.Report, check string, port int, pids ...int) []doctor.Finding {
	var out []doctor.Finding
	for _, f := range r.Findings {
		if f.Check != check {
			continue
		}
		hit := slices.Contains(f.Ports, port)
		for _, p := range pids {
			hit = hit || slices.Contains(f.Pids, p)
		}
		if hit {
			out = append(out, f)
		}
	}
	return out
}

func logFinding(t *testing.T, f doctor.Finding) {
	t.Logf("%s %s %s\n  saw: %s\n  why: %s\n  fix: %s", strings.ToUpper(string(f.Severity)), f.Check, f.Subject, f.Saw, f.Why, f.Fix)
}

// A baton supervising HAProxy with the keep-alive settings of the example
// (idle-close-on-response, hard-stop-after) gives no finding about its
// listener, its generation or its configuration.
func TestDoctorCleanBatonSetup(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	port := batontest.FreePort(t)
	cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
	text := batontest.HAProxyConfig(port, 1, append([]string{"hard-stop-after 4m"}, batontest.KeepAliveSafe.Global...), batontest.KeepAliveSafe.Defaults)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	b := batontest.StartBaton(t, []string{"-l", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--", haproxy, "-f", cfg}, batontest.StartOptions{})
	st := b.WaitActive(30 * time.Second)
	ours := []int{b.Pid()}
	for _, g := range st.Generations {
		ours = append(ours, g.Pid)
		for _, p := range g.Processes {
			ours = append(ours, p.Pid)
		}
	}

	scoped := doctorRun(t, "--control", b.Control, "--port", strconv.Itoa(port))
	for _, f := range scoped.Findings {
		if len(f.Ports) > 0 || len(f.Pids) > 0 {
			t.Errorf("finding about baton's setup:\n  %s %s %s: %s", f.Severity, f.Check, f.Subject, f.Saw)
		}
	}
	if !slices.Contains(scoped.Host.Batons, b.Control) {
		t.Errorf("doctor did not ask the baton on %s: %+v", b.Control, scoped.Host)
	}
	// Without a scope: nothing about this port or these processes either.
	all := doctorRun(t, "--control", b.Control)
	for _, f := range all.Findings {
		hit := slices.Contains(f.Ports, port)
		for _, p := range ours {
			hit = hit || slices.Contains(f.Pids, p)
		}
		if hit {
			t.Errorf("finding about baton's setup (pids %v, port %d):\n  %s %s %s: %s", ours, port, f.Severity, f.Check, f.Subject, f.Saw)
		}
	}
	// Discovery finds this baton without --control.
	found := doctorRun(t, "--port", strconv.Itoa(port))
	if !slices.Contains(found.Host.Batons, b.Control) {
		t.Errorf("baton on %s not discovered: %q", b.Control, found.Host.Batons)
	}
}

// reuseportChildEnv makes TestDoctorReuseportChild a child that listens
// with SO_REUSEPORT on the address it names.
const reuseportChildEnv = "BATON_DOCTOR_REUSEPORT_ADDR"

// TestDoctorReuseportChild is not a test: run by TestDoctorReuseportGroup
// with reuseportChildEnv set, it binds its own SO_REUSEPORT socket, says
// "ready" and holds it until its stdin closes.
func TestDoctorReuseportChild(t *testing.T) {
	addr := os.Getenv(reuseportChildEnv)
	if addr == "" {
		t.Skip("helper process for TestDoctorReuseportGroup")
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, 0xf /* SO_REUSEPORT */, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	defer l.Close()
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startReuseportChild re-executes the test binary as a child holding its
// own SO_REUSEPORT socket on addr; cleanup closes its stdin and waits.
func startReuseportChild(t *testing.T, addr string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestDoctorReuseportChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), reuseportChildEnv+"="+addr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		t.Fatalf("reuseport child: %q %v", line, err)
	}
	return cmd.Process.Pid
}

// The stale-503 incident's mechanism: two processes, each with its own
// SO_REUSEPORT socket on one port. doctor names both.
func TestDoctorReuseportGroup(t *testing.T) {
	port := batontest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	a := startReuseportChild(t, addr)
	b := startReuseportChild(t, addr)

	r := doctorRun(t, "--port", strconv.Itoa(port), "--control", filepath.Join(batontest.ShortTempDir(t), "none.sock"))
	fs := doctorFind(r, "reuseport-group", port)
	if len(fs) != 1 {
		t.Fatalf("reuseport-group findings for port %d: %+v", port, fs)
	}
	logFinding(t, fs[0])
	if !slices.Contains(fs[0].Pids, a) || !slices.Contains(fs[0].Pids, b) || fs[0].Subject != addr {
		t.Errorf("finding names %s and pids %v, want %s and pids %d and %d", fs[0].Subject, fs[0].Pids, addr, a, b)
	}
	if !r.Failing() {
		t.Error("a SO_REUSEPORT group does not fail doctor")
	}

	// The text report has the same finding in a block of its own.
	res := batontest.RunCLI(batontest.BatonBinary(t), "doctor", "--port", strconv.Itoa(port), "--control", filepath.Join(batontest.ShortTempDir(t), "none.sock"))
	for _, want := range []string{"WARNING reuseport-group " + addr, "  saw: 2 listening sockets on " + addr, "  why: ", "  fix: ", "finding"} {
		if !strings.Contains(res.Stdout, want) {
			t.Errorf("text report lacks %q:\n%s", want, res.Stdout)
		}
	}
	if res.Code != 1 {
		t.Errorf("baton doctor exit %d, want 1", res.Code)
	}
}

// The health-check flapping incident: a proxy started with NOFILE 1024.
// Its configuration also lacks the keep-alive and drain settings.
func TestDoctorNofile1024(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	prlimit := batontest.RequireBinary(t, "prlimit")
	port := batontest.FreePort(t)
	cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
	// maxconn 100 fits in 1024 descriptors: HAProxy starts and keeps the limit.
	text := strings.Replace(batontest.HAProxyConfig(port, 1, nil, nil), "maxconn 4096", "maxconn 100", 1)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := startListening(t, port, 1, prlimit, "--nofile=1024:1024", haproxy, "-db", "-f", cfg) // prlimit execs haproxy: the same pid
	if soft, hard, err := batontest.Nofile(pid); err != nil || soft != "1024" || hard != "1024" {
		t.Fatalf("haproxy NOFILE %s/%s (%v), want 1024/1024", soft, hard, err)
	}

	r := doctorRun(t, "--pid", strconv.Itoa(pid), "--control", filepath.Join(batontest.ShortTempDir(t), "none.sock"))
	for _, want := range []struct {
		check string
		sev   doctor.Severity
	}{{"nofile-low", doctor.Critical}, {"haproxy-keepalive", doctor.Warning}, {"haproxy-hard-stop", doctor.Warning}} {
		fs := doctorFind(r, want.check, -1, pid)
		if len(fs) != 1 || fs[0].Severity != want.sev {
			t.Errorf("%s findings for pid %d: %+v, want one %s", want.check, pid, fs, want.sev)
			continue
		}
		logFinding(t, fs[0])
	}
}

// startListening starts argv (output to a file), waits until port has
// sockets LISTEN sockets, and returns its pid; cleanup kills it by pid.
func startListening(t *testing.T, port, sockets int, argv ...string) int {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := os.Create(filepath.Join(batontest.ShortTempDir(t), "out.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = cmd.Wait()
		out.Close()
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-done
	})
	batontest.Eventually(t, 10*time.Second, func() error {
		socks, err := batontest.ListenSockets(port)
		if err == nil && len(socks) < sockets {
			err = fmt.Errorf("%s (pid %d): %d sockets on port %d, want %d", argv[0], pid, len(socks), port, sockets)
		}
		return err
	})
	return pid
}

// The stale-503 incident itself, with HAProxy as an init script reloads it
// without baton: a second haproxy binds its own SO_REUSEPORT socket beside
// the first, which never exits and keeps answering with its config.
func TestDoctorStaleHAProxy(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	port := batontest.FreePort(t)
	cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
	text := batontest.HAProxyConfig(port, 1, []string{"hard-stop-after 4m"}, batontest.KeepAliveSafe.Defaults)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	old := startListening(t, port, 1, haproxy, "-db", "-f", cfg)
	accWait(1200 * time.Millisecond) // two starts, more than a second apart
	newer := startListening(t, port, 2, haproxy, "-db", "-f", cfg)
	accWait(1100 * time.Millisecond)

	r := doctorRun(t, "--port", strconv.Itoa(port), "--old-after", "1s", "--control", filepath.Join(batontest.ShortTempDir(t), "none.sock"))
	group := doctorFind(r, "reuseport-group", port)
	if len(group) != 1 || group[0].Severity != doctor.Critical || !slices.Contains(group[0].Pids, old) || !slices.Contains(group[0].Pids, newer) {
		t.Errorf("reuseport-group: %+v, want one critical naming pids %d and %d", group, old, newer)
	}
	stale := doctorFind(r, "old-proxy-process", port)
	if len(stale) != 1 || stale[0].Subject != fmt.Sprintf("pid %d haproxy", old) {
		t.Fatalf("old-proxy-process: %+v, want pid %d only", stale, old)
	}
	logFinding(t, group[0])
	logFinding(t, stale[0])
}

// A long-lived old generation: gen 1 holds a slow request and drains; with
// --old-after 1s, doctor reports it 1.5 s after the reload.
func TestDoctorOldGeneration(t *testing.T) {
	be := batontest.StartSlowBackend(t, 60*time.Second)
	p := startAccProxy(t, batontest.HAProxyOpts{BackendPort: be.Port}, []string{"--drain-timeout", "10m"}, batontest.StartOptions{})
	gen1, pid1 := p.status(t).Active()
	slow := make(chan batontest.HTTPResult, 1)
	go func() { slow <- batontest.HTTPGet(p.addr, "/slow", 60*time.Second) }()
	if err := be.WaitSlow(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.write(t, 2)
	gen2, _ := p.reload(t)
	if g := p.status(t).Gen(gen1); g == nil || g.State != "draining" {
		t.Fatalf("generation %d after the reload to %d: %+v, want draining", gen1, gen2, g)
	}
	accWait(1500 * time.Millisecond)

	r := doctorRun(t, "--control", p.b.Control, "--old-after", "1s", "--port", strconv.Itoa(p.port))
	fs := doctorFind(r, "old-generation", p.port, pid1)
	if len(fs) != 1 || !strings.Contains(fs[0].Subject, fmt.Sprintf("generation %d (pid %d)", gen1, pid1)) {
		t.Fatalf("old-generation findings: %+v, want generation %d (pid %d)", fs, gen1, pid1)
	}
	logFinding(t, fs[0])
	if fs[0].Severity != doctor.Warning {
		t.Errorf("severity %s, want warning (gen %d no longer holds the listener)", fs[0].Severity, gen1)
	}
	// With the default --old-after (10m) it is no finding yet.
	if fs := doctorFind(doctorRun(t, "--control", p.b.Control, "--port", strconv.Itoa(p.port)), "old-generation", p.port, pid1); len(fs) != 0 {
		t.Errorf("old-generation with the default --old-after: %+v", fs)
	}
	be.Release()
	if res := <-slow; res.Err != nil || res.Status != 200 {
		t.Errorf("the slow request held by the old generation: status %d, %v", res.Status, res.Err)
	}
}

// baton stopped and started again on the same control path re-creates the
// listening socket (a new inode): a finding. A failed first start before
// them (the socket it bound never served) is none.
func TestDoctorListenerChurn(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	port := batontest.FreePort(t)
	dir := batontest.ShortTempDir(t)
	cfg := filepath.Join(dir, "haproxy.cfg")
	text := batontest.HAProxyConfig(port, 1, []string{"hard-stop-after 4m"}, batontest.KeepAliveSafe.Defaults)
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	control := filepath.Join(dir, "b.sock")
	args := []string{"run", "-c", control, "--log-format", "console", "-l", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--", haproxy, "-f", cfg}

	// A first start with a config HAProxy refuses: baton binds the
	// address, records the socket, and exits 1 when the generation fails.
	broken := filepath.Join(dir, "broken.cfg")
	if err := os.WriteFile(broken, []byte(batontest.HAProxyConfig(port, 1, []string{"bogus_keyword on"}, nil)), 0o644); err != nil {
		t.Fatal(err)
	}
	failed := batontest.RunCLIWith(batontest.RunOpts{}, batontest.BatonBinary(t), append(slices.Clone(args[:len(args)-1]), broken)...)
	hist, _ := os.ReadFile(control + ".listeners")
	t.Logf("failed first start: exit %d in %s; history: %s", failed.Code, failed.Took.Round(time.Millisecond), strings.TrimSpace(string(hist)))
	if failed.Code != 1 || !strings.Contains(string(hist), `"pending":true`) {
		t.Fatalf("a first start with a broken config: exit %d (want 1), history %q (want a pending record): %s", failed.Code, hist, failed.Stderr)
	}

	first := batontest.StartBatonArgs(t, args, control, batontest.StartOptions{})
	st1 := first.WaitActive(30 * time.Second)
	if r := doctorRun(t, "--control", control, "--port", strconv.Itoa(port)); len(doctorFind(r, "listener-churn", port)) != 0 {
		t.Fatalf("listener-churn after a failed first start and a start that serves: %+v", r.Findings)
	}
	// Its first generation served: its record is no longer pending.
	served := fmt.Sprintf(`"baton_pid":%d,`, first.Pid())
	if _, ok := batontest.PollUntil(10*time.Second, 10*time.Millisecond, func() bool {
		h, _ := os.ReadFile(control + ".listeners")
		for _, line := range strings.Split(string(h), "\n") {
			if strings.Contains(line, served) {
				return !strings.Contains(line, `"pending":true`)
			}
		}
		return false
	}); !ok {
		h, _ := os.ReadFile(control + ".listeners")
		t.Fatalf("the serving baton's record is still pending 10 s after its first generation served: %s", h)
	}
	if res := first.CLI("stop", "--fast"); res.Code != 0 {
		t.Fatalf("baton stop: exit %d: %s", res.Code, res.Stderr)
	}
	if _, err := first.ExitCode(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	second := batontest.StartBatonArgs(t, args, control, batontest.StartOptions{})
	st2 := second.WaitActive(30 * time.Second)
	if st1.Listeners[0].Inode == st2.Listeners[0].Inode {
		t.Fatalf("the second baton has the same socket (inode %d): nothing to find", st1.Listeners[0].Inode)
	}

	r := doctorRun(t, "--control", control, "--port", strconv.Itoa(port))
	fs := doctorFind(r, "listener-churn", port)
	if len(fs) != 1 {
		t.Fatalf("listener-churn findings for port %d: %+v", port, r.Findings)
	}
	logFinding(t, fs[0])
	f := fs[0]
	if !slices.Contains(f.Pids, first.Pid()) || !slices.Contains(f.Pids, second.Pid()) ||
		!strings.Contains(f.Saw, strconv.FormatUint(st1.Listeners[0].Inode, 10)) || !strings.Contains(f.Saw, strconv.FormatUint(st2.Listeners[0].Inode, 10)) {
		t.Errorf("finding %+v: want both baton pids (%d, %d) and both inodes (%d, %d)", f, first.Pid(), second.Pid(), st1.Listeners[0].Inode, st2.Listeners[0].Inode)
	}
	if !strings.Contains(f.Fix, "baton reload") {
		t.Errorf("fix %q does not say to reload instead", f.Fix)
	}
}

// Drains that never end, nginx side: a baton-supervised nginx whose
// configuration has no worker_shutdown_timeout.
func TestDoctorNginxShutdownTimeout(t *testing.T) {
	nginx := batontest.RequireBinary(t, "nginx")
	port := batontest.FreePort(t)
	cfg := filepath.Join(batontest.ShortTempDir(t), "nginx.conf")
	if err := os.WriteFile(cfg, []byte(batontest.NginxConfig(port, 1, nil, nil)), 0o644); err != nil {
		t.Fatal(err)
	}
	b := batontest.StartBaton(t, []string{"-l", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--", nginx, "-c", cfg}, batontest.StartOptions{})
	r := doctorRun(t, "--control", b.Control, "--pid", strconv.Itoa(b.Pid()))
	fs := doctorFind(r, "nginx-shutdown-timeout", -1, b.Pid())
	if len(fs) != 1 || fs[0].Subject != cfg {
		t.Fatalf("nginx-shutdown-timeout findings: %+v, want one about %s", fs, cfg)
	}
	logFinding(t, fs[0])
	// Keep-alive is on (30 s) without keepalive_min_timeout: a warning on
	// an nginx that has the setting, information before it.
	want := doctor.Info
	if batontest.VersionAtLeast(batontest.ProxyVersion(nginx), 1, 27, 4) {
		want = doctor.Warning
	}
	if ka := doctorFind(r, "nginx-keepalive", -1, b.Pid()); len(ka) != 1 || ka[0].Severity != want {
		t.Errorf("nginx-keepalive findings: %+v, want one %s", ka, want)
	} else {
		logFinding(t, ka[0])
	}

	// With the setting, nothing.
	if err := os.WriteFile(cfg, []byte(batontest.NginxConfig(port, 1, []string{"worker_shutdown_timeout 4m;"}, nil)), 0o644); err != nil {
		t.Fatal(err)
	}
	if fs := doctorFind(doctorRun(t, "--control", b.Control, "--pid", strconv.Itoa(b.Pid())), "nginx-shutdown-timeout", -1, b.Pid()); len(fs) != 0 {
		t.Errorf("nginx-shutdown-timeout with the setting: %+v", fs)
	}
}
