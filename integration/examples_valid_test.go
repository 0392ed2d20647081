package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
)

// examplePath is a file under examples/.
func examplePath(rel string) string {
	return filepath.Join(batontest.ModuleRoot(), "examples", rel)
}

// exampleRun runs a program with a time bound and returns its combined output.
func exampleRun(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = t.TempDir()
	cmd.WaitDelay = 5 * time.Second
	done := make(chan struct{})
	timer := time.AfterFunc(30*time.Second, func() {
		select {
		case <-done:
		default:
			if cmd.Process != nil {
				_ = cmd.Process.Kill()
			}
		}
	})
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	close(done)
	return string(out), err
}

// exampleBatonYAML is examples/container/baton.yaml.
type exampleBatonYAML struct {
	Listen       []string `yaml:"listen"`
	Control      string   `yaml:"control"`
	Watch        []string `yaml:"watch"`
	Metrics      string   `yaml:"metrics"`
	DrainTimeout string   `yaml:"drain-timeout"`
	KillGrace    string   `yaml:"kill-grace"`
	LogFormat    string   `yaml:"log-format"`
	Command      []string `yaml:"command"`
}

func exampleContainerYAML(t *testing.T) (exampleBatonYAML, map[string]any) {
	t.Helper()
	data, err := os.ReadFile(examplePath("container/baton.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var y exampleBatonYAML
	var keys map[string]any
	if err := yaml.Unmarshal(data, &y); err != nil {
		t.Fatalf("examples/container/baton.yaml: %v", err)
	}
	if err := yaml.Unmarshal(data, &keys); err != nil {
		t.Fatal(err)
	}
	return y, keys
}

// exampleRunFlags are the option names `baton run --help` lists, plus the
// hidden `command` key of --config files.
func exampleRunFlags(t *testing.T, bin string) map[string]bool {
	t.Helper()
	res := batontest.RunCLI(bin, "run", "--help")
	if res.Code != 0 {
		t.Fatalf("baton run --help: exit %d: %s", res.Code, res.Stderr)
	}
	names := map[string]bool{"command": true}
	re := regexp.MustCompile(`^\s+--([a-z][a-z0-9-]*)`)
	for _, line := range strings.Split(res.Stdout, "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			names[m[1]] = true
		}
	}
	if !names["listen"] || !names["drain-timeout"] {
		t.Fatalf("baton run --help lists no --listen / --drain-timeout:\n%s", res.Stdout)
	}
	return names
}

// exampleBinds returns the addresses of the `bind` lines of an HAProxy config.
func exampleBinds(cfg string) []string {
	var out []string
	for _, line := range strings.Split(cfg, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "bind" {
			out = append(out, f[1])
		}
	}
	return out
}

// exampleListenAddr is the HOST:PORT of a --listen spec.
func exampleListenAddr(t *testing.T, spec string) string {
	t.Helper()
	sp, err := fdpass.ParseSpec(spec)
	if err != nil {
		t.Fatalf("--listen %q: %v", spec, err)
	}
	_, rest, _ := strings.Cut(sp.String(), "://")
	addr, _, _ := strings.Cut(rest, "?")
	return addr
}

// TestExamplesAreValid checks that what examples/ tells people to run works
// and agrees with itself: the HAProxy and nginx configs pass their proxy's
// check; the init script parses and, run for real against a scratch
// directory, starts, reloads (and refuses a broken config), reports and
// stops; the systemd unit passes `systemd-analyze verify`; the container's
// baton.yaml names only real options and, run as PID 1 the way the
// Dockerfile does (listen, control, metrics and watch moved to the test's
// scratch space), serves and drains on SIGTERM; the Kubernetes manifest is
// two YAML documents whose HAProxy config passes `haproxy -c` and whose
// ports, paths and grace period match baton.yaml.
func TestExamplesAreValid(t *testing.T) {
	bin := batontest.BatonBinary(t)

	t.Run("haproxy-configs", func(t *testing.T) {
		haproxy := batontest.RequireBinary(t, "haproxy")
		for _, rel := range []string{"haproxy/haproxy.cfg", "container/haproxy.cfg"} {
			// -c only: the container config binds 0.0.0.0:8080.
			out, err := exampleRun(t, haproxy, "-c", "-f", examplePath(rel))
			t.Logf("haproxy -c -f examples/%s: %v: %s", rel, err, strings.TrimSpace(out))
			if err != nil || !strings.Contains(out, "Configuration file is valid") {
				t.Errorf("examples/%s is refused by haproxy -c", rel)
			}
		}
	})

	t.Run("nginx-config", func(t *testing.T) {
		nginx := batontest.RequireBinary(t, "nginx")
		pid := filepath.Join(t.TempDir(), "x.pid")
		out, err := exampleRun(t, nginx, "-t", "-c", examplePath("nginx/nginx.conf"), "-g", "pid "+pid+";", "-e", "stderr")
		t.Logf("nginx -t: %v: %s", err, strings.TrimSpace(out))
		if err != nil || !strings.Contains(out, "test is successful") {
			t.Errorf("examples/nginx/nginx.conf is refused by nginx -t")
		}
	})

	t.Run("init-script", func(t *testing.T) { exampleInitScript(t, bin) })

	t.Run("systemd-unit", func(t *testing.T) {
		unit, err := os.ReadFile(examplePath("systemd/baton-haproxy.service"))
		if err != nil {
			t.Fatal(err)
		}
		exampleUnitFlags(t, bin, string(unit))
		analyze, err := exec.LookPath("systemd-analyze")
		if err != nil {
			t.Skip("systemd-analyze not installed: unit not verified")
		}
		// verify wants the commands to exist: point ExecStart/ExecReload at
		// the baton just built.
		dir := t.TempDir()
		copyPath := filepath.Join(dir, "baton-haproxy.service")
		if err := os.WriteFile(copyPath, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/baton", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exampleRun(t, analyze, "verify", copyPath)
		t.Logf("systemd-analyze verify: %v: %q", err, strings.TrimSpace(out))
		// verify exits 0 on unknown keys and bad values too; it prints them.
		if err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify complains about examples/systemd/baton-haproxy.service")
		}
	})

	t.Run("container", func(t *testing.T) { exampleContainer(t, bin) })

	t.Run("kubernetes", func(t *testing.T) { exampleKubernetes(t) })

	// k8s.io/api and sigs.k8s.io/yaml decode the manifest in this test
	// only: none of it may link into baton.
	t.Run("kubernetes-test-only", func(t *testing.T) {
		out, err := exampleRun(t, "go", "version", "-m", bin)
		if err != nil {
			t.Fatalf("go version -m %s: %v: %s", bin, err, out)
		}
		deps := strings.Count(out, "\tdep\t")
		t.Logf("go version -m: the baton binary links %d modules", deps)
		if deps == 0 || strings.Contains(out, "k8s.io") {
			t.Errorf("the baton binary links a Kubernetes module (or none at all):\n%s", out)
		}
	})
}

// exampleUnitFlags checks the unit's ExecStart against `baton run`: every
// option exists, every --listen parses, ExecReload uses the same control
// socket, and TimeoutStopSec covers --drain-timeout plus --kill-grace; and
// the settings crash survival needs: the proxies outlive baton's process
// (KillMode=process), the run directory with the state file outlives an
// automatic restart (RuntimeDirectoryPreserve=restart), and a crash is
// restarted (Restart=on-failure).
func exampleUnitFlags(t *testing.T, bin, unit string) {
	t.Helper()
	joined := strings.ReplaceAll(unit, "\\\n", " ")
	settings := map[string]string{}
	for _, line := range strings.Split(joined, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			settings[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	start := strings.Fields(settings["ExecStart"])
	i := slices.Index(start, "--")
	if len(start) < 3 || start[1] != "run" || i < 0 {
		t.Fatalf("ExecStart %q: want baton run OPTIONS -- COMMAND", settings["ExecStart"])
	}
	known := exampleRunFlags(t, bin)
	opts := map[string]string{}
	for j := 2; j < i; j++ {
		name, ok := strings.CutPrefix(start[j], "--")
		if !ok {
			continue
		}
		if !known[name] {
			t.Errorf("ExecStart uses --%s, which `baton run` does not know", name)
		}
		if j+1 < i {
			if name == "listen" {
				exampleListenAddr(t, start[j+1])
			}
			opts[name] = start[j+1]
		}
	}
	reload := strings.Fields(settings["ExecReload"])
	if !slices.Equal(reload, []string{start[0], "reload", "--control", opts["control"]}) {
		t.Errorf("ExecReload %q does not reload the baton ExecStart runs (control %s)", settings["ExecReload"], opts["control"])
	}
	drain, err1 := time.ParseDuration(opts["drain-timeout"])
	grace, err2 := time.ParseDuration(opts["kill-grace"])
	stopSec, err3 := strconv.Atoi(settings["TimeoutStopSec"])
	t.Logf("unit: ExecStart %q; drain-timeout %s + kill-grace %s vs TimeoutStopSec %ds; KillMode %s, Type %s",
		settings["ExecStart"], drain, grace, stopSec, settings["KillMode"], settings["Type"])
	if err := errors.Join(err1, err2, err3); err != nil || time.Duration(stopSec)*time.Second <= drain+grace {
		t.Errorf("TimeoutStopSec %q must exceed --drain-timeout %q + --kill-grace %q (%v)", settings["TimeoutStopSec"], opts["drain-timeout"], opts["kill-grace"], err)
	}
	t.Logf("unit: RuntimeDirectory %s, RuntimeDirectoryPreserve %s, Restart %s, OOMPolicy %s",
		settings["RuntimeDirectory"], settings["RuntimeDirectoryPreserve"], settings["Restart"], settings["OOMPolicy"])
	for k, want := range map[string]string{
		"Type": "notify", "KillMode": "process", "RuntimeDirectoryPreserve": "restart", "Restart": "on-failure",
		"OOMPolicy": "continue", "Delegate": "yes",
	} {
		if settings[k] != want {
			t.Errorf("%s=%q, want %s (README, \"Running it in production\")", k, settings[k], want)
		}
	}
	if dir := filepath.Dir(opts["control"]); dir != "/run/"+settings["RuntimeDirectory"] {
		t.Errorf("--control %s is not in RuntimeDirectory=%s (/run/%[2]s): the state file would not be preserved", opts["control"], settings["RuntimeDirectory"])
	}
}

// exampleInitScript runs examples/init/baton-haproxy for real, its settings
// (normally /etc/default/baton-haproxy) pointing into a scratch directory:
// every action, with the exit codes the LSB gives them, the pid file
// following `upgrade`, and a crash of baton (kill -9) that `status` reports
// and `start` recovers from.
func exampleInitScript(t *testing.T, bin string) {
	script := examplePath("init/baton-haproxy")
	if out, err := exampleRun(t, "sh", "-n", script); err != nil {
		t.Fatalf("sh -n examples/init/baton-haproxy: %v: %s", err, out)
	}
	haproxy := batontest.RequireBinary(t, "haproxy")
	if _, err := exec.LookPath("start-stop-daemon"); err != nil {
		t.Skip("start-stop-daemon (Debian's dpkg) not installed: the init script is only parsed")
	}
	dir := batontest.ShortTempDir(t)
	port := batontest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg, pidfile, logfile := filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "baton.pid"), filepath.Join(dir, "baton.log")
	control := filepath.Join(dir, "c.sock")
	writeConf(t, cfg, batontest.HAProxyConfig(port, 1, nil, nil))
	// A slow haproxy (0.5 s before each run, the check included), so that
	// the first generation serves well after baton answers on its control
	// socket: `start` must wait for the former.
	slowHAProxy := filepath.Join(dir, "bin", "haproxy")
	if err := os.Mkdir(filepath.Dir(slowHAProxy), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(slowHAProxy, []byte("#!/bin/sh\nsleep 0.5\nexec "+shq(haproxy)+` "$@"`+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	defaults := fmt.Sprintf("BATON=%s\nHAPROXY=%s\nCONFIG=%s\nCONTROL=%s\nPIDFILE=%s\nLOGFILE=%s\nLISTEN=\"--listen tcp://%s\"\nEXTRA_OPTS=\"--drain-timeout 10s\"\n",
		shq(bin), shq(slowHAProxy), shq(cfg), shq(control), shq(pidfile), shq(logfile), addr)
	writeConf(t, filepath.Join(dir, "defaults"), defaults)
	text, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	const source = `[ -r /etc/default/$NAME ] && . /etc/default/$NAME`
	if !strings.Contains(string(text), source) {
		t.Fatalf("examples/init/baton-haproxy no longer reads its settings with %q", source)
	}
	local := filepath.Join(dir, "baton-haproxy")
	writeConf(t, local, strings.Replace(string(text), source, ". "+shq(filepath.Join(dir, "defaults")), 1))
	readPid := func() int {
		data, _ := os.ReadFile(pidfile)
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		return pid
	}
	var started []int // every baton and HAProxy pid seen, for the cleanup
	t.Cleanup(func() {
		// Whatever the script started and left, by pid: batons (and their
		// children) and HAProxy processes a killed baton left.
		for _, pid := range append([]int{readPid()}, started...) {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if pid > 1 && (exe == bin || filepath.Base(exe) == filepath.Base(haproxy)) {
				_ = batontest.SignalPids(append([]int{pid}, batontest.Descendants(pid)...), syscall.SIGKILL)
			}
		}
	})
	initCmd := func(action string) (int, string) {
		out, err := exampleRun(t, "sh", local, action)
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("init script %s: %v", action, err)
		}
		t.Logf("baton-haproxy %s → exit %d: %s", action, code, strings.TrimSpace(out))
		return code, out
	}
	want := func(action string, code int, why string) string {
		t.Helper()
		got, out := initCmd(action)
		if got != code {
			t.Errorf("%s: exit %d, want %d (%s)", action, got, code, why)
		}
		return out
	}
	status := func() batontest.Status {
		t.Helper()
		res := batontest.RunCLI(bin, "status", "--json", "-c", control)
		var st batontest.Status
		if res.Code != 0 || exampleJSON(res.Stdout, &st) != nil {
			t.Fatalf("baton status: exit %d: %s %s", res.Code, res.Stdout, res.Stderr)
		}
		started = append(started, st.Pid)
		for _, g := range st.Generations {
			for _, p := range g.Processes {
				started = append(started, p.Pid)
			}
		}
		return st
	}

	startAt := time.Now()
	if code, _ := initCmd("start"); code != 0 {
		t.Fatalf("start failed; log:\n%s", exampleReadFile(logfile))
	}
	// "Wait until the first generation serves": once start returned, it does.
	st := status()
	t.Logf("start returned %s after it began; generations then: %+v", time.Since(startAt).Round(time.Millisecond), st.Generations)
	if len(st.Generations) != 1 || st.Generations[0].State != "active" {
		t.Errorf("start returned %s after it began, before the first generation served: generations %+v", time.Since(startAt).Round(time.Millisecond), st.Generations)
	}
	if pid := readPid(); pid != st.Pid {
		t.Errorf("pid file %s holds %d after start; baton is %d", pidfile, pid, st.Pid)
	}
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Err != nil || r.Status != 200 {
		t.Errorf("GET after start: %d %v", r.Status, r.Err)
	}
	want("start", 0, "LSB: start on a running service succeeds")
	if out := want("status", 0, "LSB: running"); !strings.Contains(out, "active") {
		t.Errorf("status does not show the active generation: %q", out)
	}
	writeConf(t, cfg, batontest.HAProxyConfig(port, 2, nil, nil))
	want("reload", 0, "a good config")
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Gen != "2" {
		t.Errorf("after reload: X-Gen %q, want 2", r.Gen)
	}
	writeConf(t, cfg, batontest.HAProxyConfig(port, 3, []string{"bogus_keyword on"}, nil))
	want("reload", 1, "a config HAProxy refuses")
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Gen != "2" {
		t.Errorf("after a refused reload: X-Gen %q, want 2 (the old generation keeps serving)", r.Gen)
	}
	writeConf(t, cfg, batontest.HAProxyConfig(port, 2, nil, nil))

	// upgrade: a new baton pid, in the pid file; the same HAProxy and socket.
	before := status()
	_, hapPid := before.Active()
	want("upgrade", 0, "baton upgrade")
	after := status()
	_, hapAfter := after.Active()
	t.Logf("upgrade: baton pid %d → %d, pid file %d; serving HAProxy %d → %d; listener inode %d → %d",
		before.Pid, after.Pid, readPid(), hapPid, hapAfter, before.Listeners[0].Inode, after.Listeners[0].Inode)
	if after.Pid == before.Pid || readPid() != after.Pid {
		t.Errorf("after upgrade: baton pid %d (was %d), pid file %d: the pid file must name the new baton", after.Pid, before.Pid, readPid())
	}
	if hapAfter != hapPid || after.Listeners[0].Inode != before.Listeners[0].Inode {
		t.Errorf("after upgrade: HAProxy %d (was %d), inode %d (was %d): want both unchanged", hapAfter, hapPid, after.Listeners[0].Inode, before.Listeners[0].Inode)
	}
	writeConf(t, cfg, batontest.HAProxyConfig(port, 4, nil, nil))
	want("reload", 0, "a reload through the upgraded baton")
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Gen != "4" {
		t.Errorf("after the upgraded baton's reload: X-Gen %q, want 4", r.Gen)
	}

	pid := readPid()
	want("stop", 0, "stop drains and waits")
	if _, gone := batontest.PollUntil(5*time.Second, 10*time.Millisecond, func() bool { return !batontest.Alive(pid) }); pid <= 1 || !gone {
		t.Errorf("baton (pid file: %d) still alive 5 s after stop", pid)
	}
	if _, err := os.Stat(pidfile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file after stop: %v, want it removed", err)
	}
	want("status", 3, "LSB: program is not running")
	want("stop", 0, "LSB: stop on a stopped service succeeds")
	want("reload", 7, "LSB: program is not running")
	want("upgrade", 7, "LSB: program is not running")
	want("try-restart", 0, "LSB: try-restart on a stopped service succeeds, and starts nothing")
	if res := batontest.RunCLI(bin, "status", "-c", control); res.Code != 3 {
		t.Errorf("try-restart on a stopped service started baton (status exit %d)", res.Code)
	}
	want("bogus", 2, "LSB: invalid argument")

	// A crash of baton: status says so (1: dead, pid file left); the
	// HAProxy it started serves on; start adopts it; stop ends both.
	want("restart", 0, "LSB: restart on a stopped service starts it")
	crashed := status()
	_, hapPid = crashed.Active()
	if err := syscall.Kill(crashed.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Gone, not only dead: a new baton takes a zombie that still has the
	// state file's pid and start time for the baton that wrote it (the
	// init reaps orphans; this machine's takes about a second).
	reaped := func() bool { _, err := os.Stat(fmt.Sprintf("/proc/%d", crashed.Pid)); return err != nil }
	if took, ok := batontest.PollUntil(10*time.Second, 10*time.Millisecond, reaped); !ok {
		t.Fatalf("baton %d not reaped 10 s after SIGKILL", crashed.Pid)
	} else {
		t.Logf("the killed baton %d was reaped after %s", crashed.Pid, took.Round(time.Millisecond))
	}
	want("status", 1, "LSB: program is dead and the pid file exists")
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Err != nil || r.Status != 200 {
		t.Errorf("GET while baton is dead: %d %v (its HAProxy should serve on)", r.Status, r.Err)
	}
	want("start", 0, "a new baton adopts the running HAProxy")
	adopted := status()
	if _, p := adopted.Active(); p != hapPid || readPid() != adopted.Pid {
		t.Errorf("after start: serving HAProxy %d (want the adopted %d), pid file %d (baton %d)", p, hapPid, readPid(), adopted.Pid)
	}
	want("stop", 0, "stop")
	want("status", 3, "LSB: program is not running")
	if batontest.Alive(hapPid) {
		t.Errorf("HAProxy %d alive after stop", hapPid)
	}
	log := exampleReadFile(logfile)
	t.Logf("LOGFILE has %d lines of baton's log", strings.Count(log, "\n"))
	if !strings.Contains(log, "baton started") || !strings.Contains(log, "reload failed") {
		t.Errorf("LOGFILE %s lacks baton's log (\"baton started\", \"reload failed\"): %q", logfile, log)
	}
}

// exampleJSON decodes s into v.
func exampleJSON(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func exampleReadFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// exampleContainer checks examples/container: baton.yaml's keys are
// `baton run` options, the Dockerfile and haproxy.cfg agree with it, and the
// entrypoint (`baton run --config baton.yaml` as PID 1) serves and drains.
func exampleContainer(t *testing.T, bin string) {
	y, keys := exampleContainerYAML(t)
	known := exampleRunFlags(t, bin)
	for k := range keys {
		if !known[k] {
			t.Errorf("examples/container/baton.yaml: key %q is no `baton run` option (baton would ignore it without a word)", k)
		}
	}
	haCfg := exampleReadFile(examplePath("container/haproxy.cfg"))
	docker := exampleReadFile(examplePath("container/Dockerfile"))
	if len(y.Listen) != 1 || len(y.Command) < 3 {
		t.Fatalf("baton.yaml: listen %v, command %v", y.Listen, y.Command)
	}
	if binds := exampleBinds(haCfg); !slices.Equal(binds, []string{exampleListenAddr(t, y.Listen[0])}) {
		t.Errorf("container/haproxy.cfg binds %v, baton.yaml listens on %v: every bind must be a --listen", binds, y.Listen)
	}
	_, port, _ := strings.Cut(exampleListenAddr(t, y.Listen[0]), ":")
	_, mport, _ := strings.Cut(y.Metrics, ":")
	for _, want := range []string{
		"COPY examples/container/baton.yaml /etc/baton/baton.yaml",
		"COPY examples/container/haproxy.cfg " + y.Command[2],
		`ENTRYPOINT ["/usr/local/bin/baton", "run", "--config", "/etc/baton/baton.yaml"]`,
		"mkdir -p " + filepath.Dir(y.Control),
		"EXPOSE " + port + " " + mport,
	} {
		if !strings.Contains(docker, want) {
			t.Errorf("Dockerfile lacks %q (baton.yaml: %+v)", want, y)
		}
	}
	// The non-root target: the user baton (uid 10001, as
	// examples/kubernetes says) owns the control directory, and the
	// binary's file capability lets it bind ports below 1024.
	_, nonroot, _ := strings.Cut(docker, "FROM base AS nonroot")
	for _, want := range []string{
		"setcap cap_net_bind_service=+ep /usr/local/bin/baton",
		"useradd --system --uid 10001 --gid 10001",
		"chown baton:baton " + filepath.Dir(y.Control),
		"USER 10001:10001",
		"EXPOSE " + port + " " + mport,
	} {
		if !strings.Contains(nonroot, want) {
			t.Errorf("Dockerfile: the nonroot stage lacks %q", want)
		}
	}
	if !strings.Contains(docker, "install -y --no-install-recommends haproxy") || y.Command[0] != "/usr/sbin/haproxy" {
		t.Errorf("baton.yaml runs %s; the Dockerfile installs Debian's haproxy (/usr/sbin/haproxy)", y.Command[0])
	}
	if len(y.Watch) != 1 || y.Watch[0] != filepath.Dir(y.Command[2]) {
		t.Errorf("baton.yaml watches %v, the config is %s", y.Watch, y.Command[2])
	}

	// The entrypoint, as PID 1, with what binds or lives outside the test's
	// scratch space moved there: flags on the command line win over the file.
	haproxy := batontest.RequireBinary(t, "haproxy")
	batontest.RequireBinary(t, "unshare")
	dir := batontest.ShortTempDir(t)
	tport := batontest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", tport)
	metrics := fmt.Sprintf("127.0.0.1:%d", batontest.FreePort(t))
	cfgDir := filepath.Join(dir, "haproxy")
	if err := os.Mkdir(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(cfgDir, "haproxy.cfg")
	writeConf(t, cfg, batontest.HAProxyConfig(tport, 1, nil, nil))
	control := filepath.Join(dir, "c.sock")
	nb := batontest.StartBatonPID1Args(t, []string{"run", "--config", examplePath("container/baton.yaml"),
		"--control", control, "--listen", "web=tcp://" + addr, "--metrics", metrics, "--watch", cfgDir,
		"--", haproxy, "-f", cfg}, control, batontest.StartOptions{})
	pid1Split(t, nb, true)
	raw, err := nb.RawStatus()
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Listeners []struct{ Name, Addr string } `json:"listeners"`
		Watch     *struct{ Paths []string }     `json:"watch"`
		Command   []string                      `json:"command"`
	}
	if err := exampleJSON(string(raw), &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("container entrypoint under test: listeners %+v, watch %+v, command %v", st.Listeners, st.Watch, st.Command)
	if len(st.Listeners) != 1 || st.Listeners[0].Name != "web" || st.Listeners[0].Addr != addr {
		t.Errorf("listeners %+v: want only web at %s (the command line's --listen replaces the file's)", st.Listeners, addr)
	}
	if st.Watch == nil || !slices.Equal(st.Watch.Paths, []string{cfgDir}) {
		t.Errorf("watch %+v, want [%s]", st.Watch, cfgDir)
	}
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Err != nil || r.Status != 200 {
		t.Errorf("GET: %d %v", r.Status, r.Err)
	}
	m := backoffMetrics(t, metrics)
	if _, ok := m["baton_child_crashes_total"]; !ok {
		t.Errorf("/metrics on %s lacks baton_child_crashes_total", metrics)
	}
	first, _, _ := strings.Cut(nb.Log(), "\n")
	if !strings.HasPrefix(first, "{") {
		t.Errorf("log-format json from baton.yaml: first log line %q", first)
	}
	// docker stop: SIGTERM to PID 1.
	if err := nb.SignalInit(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := nb.ExitCode(15 * time.Second)
	t.Logf("SIGTERM to the container's PID 1: exit %d (%v)", code, err)
	if code != 0 || err != nil {
		t.Errorf("exit %d (%v), want 0", code, err)
	}
	if left := pid1Left(nb); len(left) > 0 {
		t.Errorf("processes left in the namespace: %v", left)
	}
}

// exampleK8sManifest decodes the Kubernetes manifest strictly into the
// API's own types (sigs.k8s.io/yaml's UnmarshalStrict: a misspelt or
// misplaced field, or one given twice, is an error; no schema is
// downloaded): a ConfigMap, then a Deployment.
func exampleK8sManifest(t *testing.T) (*corev1.ConfigMap, *appsv1.Deployment) {
	t.Helper()
	data, err := os.ReadFile(examplePath("kubernetes/baton-haproxy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm *corev1.ConfigMap
	var dep *appsv1.Deployment
	docs := regexp.MustCompile(`(?m)^---[ \t]*$`).Split(string(data), -1)
	for i, doc := range docs {
		var tm metav1.TypeMeta
		if err := k8syaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("document %d: %v", i+1, err)
		}
		var obj any
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ConfigMap":
			cm = &corev1.ConfigMap{}
			obj = cm
		case "apps/v1 Deployment":
			dep = &appsv1.Deployment{}
			obj = dep
		default:
			t.Fatalf("document %d is a %s %s, want a v1 ConfigMap and an apps/v1 Deployment", i+1, tm.APIVersion, tm.Kind)
		}
		if err := k8syaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("document %d (%s) does not decode strictly into the Kubernetes API type: %v", i+1, tm.Kind, err)
		}
	}
	if len(docs) != 2 || cm == nil || dep == nil {
		t.Fatalf("%d documents, want a ConfigMap and a Deployment", len(docs))
	}
	return cm, dep
}

// exampleKubernetes checks the manifest (a ConfigMap and a Deployment): it
// decodes strictly into the API types; the ConfigMap's HAProxy config
// passes haproxy -c; the Deployment agrees with the image's baton.yaml
// (ports, config mount and watch, control socket, grace period), pins its
// image, and runs without root, privilege escalation or capabilities
// (NET_BIND_SERVICE only for a port below 1024), on a read-only root with
// an emptyDir for baton's control directory that an init container makes
// baton's and 0755 first.
func exampleKubernetes(t *testing.T) {
	cm, deployment := exampleK8sManifest(t)
	dep := deployment.Spec.Template.Spec
	y, _ := exampleContainerYAML(t)
	haCfg, ok := cm.Data[filepath.Base(y.Command[2])]
	if !ok {
		t.Fatalf("the ConfigMap has no %s (baton.yaml runs haproxy -f %s): keys %v", filepath.Base(y.Command[2]), y.Command[2], cm.Data)
	}
	if binds := exampleBinds(haCfg); !slices.Equal(binds, []string{exampleListenAddr(t, y.Listen[0])}) {
		t.Errorf("the ConfigMap's haproxy.cfg binds %v, the image's baton.yaml listens on %v", binds, y.Listen)
	}
	if haproxy, err := exec.LookPath("haproxy"); err == nil {
		path := filepath.Join(t.TempDir(), "haproxy.cfg")
		writeConf(t, path, haCfg)
		out, err := exampleRun(t, haproxy, "-c", "-f", path)
		t.Logf("haproxy -c on the ConfigMap's haproxy.cfg: %v: %s", err, strings.TrimSpace(out))
		if err != nil {
			t.Errorf("the ConfigMap's haproxy.cfg is refused by haproxy -c")
		}
	}
	if len(dep.Containers) != 1 {
		t.Fatalf("want one container: %+v", dep.Containers)
	}
	c := dep.Containers[0]
	ports := map[string]int32{}
	low := false
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
		low = low || p.ContainerPort < 1024
	}
	_, lport, _ := strings.Cut(exampleListenAddr(t, y.Listen[0]), ":")
	_, mport, _ := strings.Cut(y.Metrics, ":")
	if fmt.Sprint(ports["http"]) != lport || fmt.Sprint(ports["metrics"]) != mport {
		t.Errorf("containerPorts %v; baton.yaml listens on %s, metrics on %s", ports, lport, mport)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range dep.Volumes {
		volumes[v.Name] = v
	}
	mountAt := func(c corev1.Container, path string) (corev1.Volume, bool) {
		for _, m := range c.VolumeMounts {
			if m.MountPath == path {
				v, ok := volumes[m.Name]
				return v, ok
			}
		}
		return corev1.Volume{}, false
	}
	cfgDir := filepath.Dir(y.Command[2])
	if v, ok := mountAt(c, cfgDir); !ok || v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || !slices.Contains(y.Watch, cfgDir) {
		t.Errorf("the ConfigMap %q is not mounted where baton.yaml runs and watches the config (%s, watch %v)", cm.Name, y.Command[2], y.Watch)
	}
	if probe := c.LivenessProbe; probe == nil || probe.Exec == nil || !slices.Contains(probe.Exec.Command, y.Control) {
		t.Errorf("livenessProbe %+v does not ask baton's control socket %s", probe, y.Control)
	}
	drain, err1 := time.ParseDuration(y.DrainTimeout)
	grace, err2 := time.ParseDuration(y.KillGrace)
	var pause time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Exec != nil {
		if pre := c.Lifecycle.PreStop.Exec.Command; len(pre) == 2 && strings.HasSuffix(pre[0], "sleep") {
			s, _ := strconv.Atoi(pre[1])
			pause = time.Duration(s) * time.Second
		}
	}
	var total time.Duration
	if dep.TerminationGracePeriodSeconds != nil {
		total = time.Duration(*dep.TerminationGracePeriodSeconds) * time.Second
	}
	t.Logf("terminationGracePeriodSeconds %s vs preStop %s + drain-timeout %s + kill-grace %s", total, pause, drain, grace)
	if err1 != nil || err2 != nil || total <= pause+drain+grace {
		t.Errorf("terminationGracePeriodSeconds %s must exceed preStop %s + drain-timeout %s + kill-grace %s", total, pause, drain, grace)
	}

	// Images: pinned, pulled by a stated policy.
	for _, ic := range append(slices.Clone(dep.InitContainers), dep.Containers...) {
		name, tag, _ := strings.Cut(ic.Image[strings.LastIndex(ic.Image, "/")+1:], ":")
		t.Logf("container %s: image %s, imagePullPolicy %s", ic.Name, ic.Image, ic.ImagePullPolicy)
		if tag == "" || tag == "latest" || name == "" {
			t.Errorf("container %s: image %q: pin a tag (not latest)", ic.Name, ic.Image)
		}
		if ic.ImagePullPolicy == "" {
			t.Errorf("container %s: no imagePullPolicy", ic.Name)
		}
	}
	// Security: the pod runs as the image's non-root user; baton's container
	// escalates nothing, holds no capability it does not need, and writes
	// only to the emptyDir at its control directory.
	psc := dep.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != 10001 {
		t.Fatalf("pod securityContext %+v: want runAsNonRoot and runAsUser 10001 (the image's user)", psc)
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Capabilities == nil ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Fatalf("container %s securityContext %+v: want allowPrivilegeEscalation false, readOnlyRootFilesystem, capabilities drop [ALL]", c.Name, sc)
	}
	wantAdd := []corev1.Capability(nil)
	if low {
		wantAdd = []corev1.Capability{"NET_BIND_SERVICE"}
	}
	if !slices.Equal(sc.Capabilities.Add, wantAdd) {
		t.Errorf("container %s adds capabilities %v, want %v (a port below 1024: %v)", c.Name, sc.Capabilities.Add, wantAdd, low)
	}
	controlDir := filepath.Dir(y.Control)
	v, ok := mountAt(c, controlDir)
	if !ok || v.EmptyDir == nil {
		t.Fatalf("container %s: no emptyDir at the control directory %s (the root filesystem is read-only)", c.Name, controlDir)
	}
	fixed := false
	for _, ic := range dep.InitContainers {
		iv, ok := mountAt(ic, controlDir)
		script := strings.Join(append(slices.Clone(ic.Command), ic.Args...), " ")
		if ok && iv.Name == v.Name && strings.Contains(script, "chmod 0755 "+controlDir) &&
			strings.Contains(script, fmt.Sprintf("chown %d", *psc.RunAsUser)) {
			fixed = true
			t.Logf("init container %s: %q, securityContext %+v", ic.Name, script, ic.SecurityContext)
			if isc := ic.SecurityContext; isc == nil || isc.Capabilities == nil ||
				!slices.Equal(isc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
				!slices.Equal(isc.Capabilities.Add, []corev1.Capability{"CHOWN"}) ||
				isc.AllowPrivilegeEscalation == nil || *isc.AllowPrivilegeEscalation {
				t.Errorf("init container %s: securityContext %+v: want capabilities drop [ALL] add [CHOWN] only, no privilege escalation", ic.Name, isc)
			}
		}
	}
	if !fixed {
		t.Errorf("no init container makes the emptyDir %s 0755 and uid %d's before baton starts (baton refuses kubelet's 0777)", controlDir, *psc.RunAsUser)
	}
}
