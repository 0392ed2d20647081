package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/proxyctl"
)

// TestExitCodeMapping guards docs/design.md's exit statuses: 2 usage error, 3 no
// supervisor answering, an ExitCoder's own code, 1 anything else; wrapping
// keeps the mapping.
func TestExitCodeMapping(t *testing.T) {
	if exitOK != 0 || exitFailed != 1 || exitUsage != 2 || exitNoBaton != 3 {
		t.Fatalf("exit constants %d %d %d %d, docs/design.md says 0 1 2 3", exitOK, exitFailed, exitUsage, exitNoBaton)
	}
	cases := []struct {
		name string
		err  error
		want int
	}{
		{"usage", usagef("run: no proxy command"), exitUsage},
		{"wrapped-usage", fmt.Errorf("run: %w", usagef("bad")), exitUsage},
		{"usage-wrapping-cause", usageError{errors.New("--config x: yaml")}, exitUsage},
		{"no-baton", fmt.Errorf("%w on /run/baton/baton.sock", errNoBaton), exitNoBaton},
		{"wrapped-no-baton", fmt.Errorf("reload failed: %w", fmt.Errorf("%w on x", errNoBaton)), exitNoBaton},
		{"exit-coder", cli.Exit("custom", 4), 4},
		{"plain", errors.New("reload failed: generation 3: config check failed"), exitFailed},
		{"wrapped-plain", fmt.Errorf("first generation failed: %w", errors.New("exit status 1")), exitFailed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := exitCode(c.err); got != c.want {
				t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
			}
		})
	}
}

// TestRunExitStatuses drives run() (main without os.Exit) on input that
// fails before anything is bound or started.
func TestRunExitStatuses(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badYAML, []byte("listen: [tcp://127.0.0.1:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	niceYAML := filepath.Join(dir, "nice.yaml")
	if err := os.WriteFile(niceYAML, []byte("listen: [tcp://127.0.0.1:0]\nstart-nice: 10\nstart-cpus: 0-\ncommand: [/bin/true]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "none.sock")
	cases := []struct {
		args       []string
		code       int
		out, errIn string
	}{
		{args: []string{"version"}, code: 0, out: "baton version " + version + "\n"},
		{args: []string{"--version"}, code: 0, out: "baton version " + version + "\n"},
		{args: []string{"-v"}, code: 0, out: "baton version " + version + "\n"},
		{args: []string{"version", "extra"}, code: exitUsage, errIn: `version: unexpected argument "extra"`},
		{args: []string{"completion"}, code: exitUsage, errIn: "completion: want one shell: bash, zsh or fish"},
		{args: []string{"completion", "tcsh"}, code: exitUsage, errIn: `completion: unknown shell "tcsh"`},
		{args: []string{"completion", "bash"}, code: 0, out: "complete -o bashdefault -o default -F _baton baton\n"},
		{args: []string{"completion", "zsh"}, code: 0, out: "#compdef baton\n"},
		{args: []string{"completion", "fish"}, code: 0, out: "complete -c baton -n '__fish_seen_subcommand_from reload' -f -l timeout"},
		{args: []string{}, code: exitUsage, errIn: "USAGE:"},
		{args: []string{"--help"}, code: 0, out: "USAGE:"},
		{args: []string{"run", "-c", sock, "--drain-timeout", "5", "--", "/bin/true"}, code: exitUsage,
			errIn: `invalid value "5" for flag -drain-timeout: missing unit in duration (use 5s, 2m, 1h30m)`},
		{args: []string{"reload", "-c", sock, "--timeout", "soon"}, code: exitUsage, errIn: `invalid value "soon" for flag -timeout: not a duration`},
		{args: []string{"reload", "-c", sock, "--json", "--timeout", "2s"}, code: exitNoBaton, out: `"code": "no_baton"`, errIn: "no baton answering"},
		{args: []string{"upgrade", "-c", sock, "--json", "extra"}, code: exitUsage, out: `"ok": false`, errIn: `unexpected argument "extra"`},
		{args: []string{"frobnicate"}, code: exitUsage, errIn: `unknown command "frobnicate"`},
		{args: []string{"status", "-c", sock}, code: exitNoBaton, errIn: "no baton answering on " + sock},
		{args: []string{"status", "-c", sock, "--reloads", "33"}, code: exitUsage, errIn: "status: --reloads 33: want 0-32"},
		{args: []string{"status", "-c", sock, "--reloads", "-1"}, code: exitUsage, errIn: "--reloads -1"},
		{args: []string{"reload", "-c", sock, "--timeout", "2s"}, code: exitNoBaton, errIn: "no baton answering"},
		{args: []string{"reload", "extra"}, code: exitUsage, errIn: `unexpected argument "extra"`},
		{args: []string{"run", "--bogus"}, code: exitUsage, errIn: "bogus"},
		{args: []string{"run", "-c", sock, "--", "/bin/true"}, code: exitUsage, errIn: "generic driver needs --listen"},
		{args: []string{"run", "-c", sock, "-l", "tcp://127.0.0.1:0"}, code: exitUsage, errIn: "no proxy command"},
		{args: []string{"run", "-c", sock, "-l", "tcp://localhost:80", "--", "/bin/true"}, code: exitUsage, errIn: "want an IP address"},
		{args: []string{"run", "-c", sock, "-l", "tcp://127.0.0.1:0", "--max-generations", "0", "--", "/bin/true"}, code: exitUsage, errIn: "--max-generations"},
		{args: []string{"run", "-c", sock, "-l", "tcp://127.0.0.1:0", "--rlimit", "nofile=x", "--", "/bin/true"}, code: exitUsage, errIn: "nofile"},
		{args: []string{"run", "--config", badYAML}, code: exitUsage, errIn: badYAML},
		{args: []string{"run", "-c", sock, "-l", "tcp://127.0.0.1:0", "--start-nice", "20", "--", "/bin/true"}, code: exitUsage, errIn: "--start-nice: nice level 20: want one from 1 to 19"},
		{args: []string{"run", "-c", sock, "-l", "tcp://127.0.0.1:0", "--start-cpus", "1-0", "--", "/bin/true"}, code: exitUsage, errIn: `--start-cpus: CPU list "1-0"`},
		{args: []string{"run", "-c", sock, "-l", "tcp://127.0.0.1:0", "--start-cpus", "1023", "--", "/bin/true"}, code: exitUsage, errIn: "not among the CPUs baton may run on"},
		{args: []string{"run", "-c", sock, "--config", niceYAML}, code: exitUsage, errIn: `--start-cpus: CPU list "0-"`},
		{args: []string{"run", "-c", sock, "-l", "tcp://127.0.0.1:1", "-l", "tcp://127.0.0.1:1", "--", "/bin/true"}, code: exitUsage, errIn: "listener 127.0.0.1:1 given twice"},
		{args: []string{"run", "-c", sock, "-l", "a=tcp://127.0.0.1:1", "-l", "a=tcp://127.0.0.1:2", "--", "/bin/true"}, code: exitUsage, errIn: `listener name "a" given twice`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(append([]string{"baton"}, c.args...), &out, &errb)
			t.Logf("exit %d; stdout %q; stderr %q", code, strings.TrimSpace(out.String()), strings.TrimSpace(errb.String()))
			if code != c.code {
				t.Errorf("exit %d, want %d", code, c.code)
			}
			if !strings.Contains(out.String(), c.out) || !strings.Contains(errb.String(), c.errIn) {
				t.Errorf("want %q in stdout and %q in stderr", c.out, c.errIn)
			}
			if _, err := os.Stat(sock); !os.IsNotExist(err) {
				t.Errorf("control socket %s created: %v", sock, err)
			}
		})
	}
}

// TestParseSignal: names with or without SIG, any case, and numbers 1-64;
// "" is the driver's default (0); anything else is refused.
func TestParseSignal(t *testing.T) {
	good := map[string]unix.Signal{
		"":        0,
		"TERM":    unix.SIGTERM,
		"SIGTERM": unix.SIGTERM,
		"sigterm": unix.SIGTERM,
		"term":    unix.SIGTERM,
		"15":      unix.SIGTERM,
		"QUIT":    unix.SIGQUIT,
		"WINCH":   unix.SIGWINCH,
		"9":       unix.SIGKILL,
		"64":      unix.Signal(64),
	}
	for in, want := range good {
		got, err := parseSignal(in)
		if err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"bogus", "SIGBOGUS", "0", "-1", "65", "1000", "TERM ", "SIG"} {
		if got, err := parseSignal(in); err == nil {
			t.Errorf("parseSignal(%q) = %v, want an error", in, got)
		} else if !strings.Contains(err.Error(), fmt.Sprintf("%q", in)) {
			t.Errorf("parseSignal(%q): error %q does not name the input", in, err)
		}
	}
}

// genericOptionsFor parses `baton run ARGS...` with the real flags (and
// --config loading) and returns what genericOptions makes of them.
func genericOptionsFor(t *testing.T, args ...string) (proxyctl.GenericOptions, error) {
	t.Helper()
	cmd := runCommand()
	var opt proxyctl.GenericOptions
	var gerr error
	ran := false
	cmd.Action = func(c *cli.Context) error {
		ran = true
		opt, gerr = genericOptions(c)
		return nil
	}
	var out bytes.Buffer
	app := &cli.App{Name: "baton", Commands: []*cli.Command{cmd}, Writer: &out, ErrWriter: &out, ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run(append([]string{"baton", "run"}, args...)); err != nil {
		t.Fatalf("baton run %q: %v\n%s", args, err, out.String())
	}
	if !ran {
		t.Fatalf("baton run %q: action did not run", args)
	}
	return opt, gerr
}

// TestGenericOptionsRefusedForOtherDrivers: the generic driver's flags are
// refused with HAProxy or nginx (named or guessed from the command, given on
// the command line or in a --config file), and read with the generic one.
func TestGenericOptionsRefusedForOtherDrivers(t *testing.T) {
	dir := t.TempDir()
	yamlCmd := filepath.Join(dir, "cmd.yaml")
	if err := os.WriteFile(yamlCmd, []byte("command: [/usr/sbin/haproxy, -f, x]\ndrain-signal: USR1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	refused := []struct {
		args []string
		want string
	}{
		{[]string{"--proxy", "haproxy", "--drain-signal", "TERM", "--", "/opt/server"}, "--drain-signal applies to the generic driver only (this is haproxy)"},
		{[]string{"--stop-signal", "INT", "--", "/usr/sbin/haproxy", "-f", "x"}, "--stop-signal applies to the generic driver only (this is haproxy)"},
		{[]string{"--ready-after", "1s", "--", "/usr/sbin/nginx"}, "--ready-after applies to the generic driver only (this is nginx)"},
		{[]string{"--ready-probe", "true", "--", "/opt/nginx-1.22/sbin/nginx"}, "--ready-probe applies to the generic driver only (this is nginx)"},
		{[]string{"--check-command", "true", "--proxy", "nginx", "--", "/opt/server"}, "--check-command applies to the generic driver only (this is nginx)"},
		{[]string{"--config", yamlCmd}, "--drain-signal applies to the generic driver only (this is haproxy)"},
		{[]string{"--proxy", "generic", "--drain-signal", "BOGUS", "--", "/opt/server"}, `--drain-signal: unknown signal "BOGUS"`},
	}
	for _, c := range refused {
		_, err := genericOptionsFor(t, c.args...)
		t.Logf("baton run %s → %v", strings.Join(c.args, " "), err)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("baton run %q: error %v, want %q", c.args, err, c.want)
		}
	}

	opt, err := genericOptionsFor(t, "--proxy", "generic", "--drain-signal", "QUIT", "--stop-signal", "9",
		"--ready-probe", "test -e /tmp/ready", "--check-command", "server -check", "--ready-after", "2s", "--", "/opt/server")
	if err != nil {
		t.Fatal(err)
	}
	if opt.DrainSignal != unix.SIGQUIT || opt.StopSignal != unix.SIGKILL || opt.ReadyAfter != 2*time.Second ||
		!slices.Equal(opt.ReadyProbe, []string{"/bin/sh", "-c", "test -e /tmp/ready"}) || !slices.Equal(opt.Check, []string{"/bin/sh", "-c", "server -check"}) {
		t.Errorf("generic options %+v", opt)
	}
	// Guessed generic from the command's name; defaults left to the driver.
	opt, err = genericOptionsFor(t, "--drain-signal", "WINCH", "--", "/opt/activated", "-config", "x")
	if err != nil || opt.DrainSignal != unix.SIGWINCH || opt.StopSignal != 0 || opt.ReadyProbe != nil || opt.Check != nil || opt.ReadyAfter != 0 {
		t.Errorf("guessed generic: %+v, %v", opt, err)
	}
	// No generic flag at all: fine for any driver.
	if _, err := genericOptionsFor(t, "--", "/usr/sbin/haproxy", "-f", "x"); err != nil {
		t.Errorf("haproxy without generic flags: %v", err)
	}
}

// TestRunsAsInit: only PID 1 running `baton run`, and not the supervisor
// child the init started (BATON_INIT_CHILD set), splits into init and
// supervisor. A test binary is not PID 1.
func TestRunsAsInit(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("the test runs as PID 1")
	}
	for _, args := range [][]string{{"baton", "run"}, {"baton", "run", "--", "haproxy"}, {"baton", "status"}, {"baton"}} {
		if runsAsInit(args) {
			t.Errorf("runsAsInit(%q) = true in a process that is not PID 1", args)
		}
	}
}

// TestReadHandovers: the init follows "handover PID" lines from the
// supervisor's pipe, even when a line arrives in pieces; other lines are
// skipped.
func TestReadHandovers(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	fd := int(r.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	pid, pending := readHandovers(fd, 7, nil)
	if pid != 7 || len(pending) != 0 {
		t.Fatalf("empty pipe: pid %d pending %q, want 7 and nothing", pid, pending)
	}
	steps := []struct {
		write string
		pid   int
		rest  string
	}{
		{"handover 42\nhand", 42, "hand"},
		{"over 43\n", 43, ""},
		{"noise\nhandover x\nhandover 44\nhandover 45", 44, "handover 45"},
		{"\n", 45, ""},
	}
	for _, s := range steps {
		if _, err := w.WriteString(s.write); err != nil {
			t.Fatal(err)
		}
		pid, pending = readHandovers(fd, pid, pending)
		if pid != s.pid || string(pending) != s.rest {
			t.Errorf("after %q: pid %d pending %q, want %d and %q", s.write, pid, pending, s.pid, s.rest)
		}
	}
}

// TestPrintStatus renders a status with every optional part (a draining
// generation with its deadline, a starting one, a replacement waiting out
// its backoff, a failed last reload, the config watch, unlimited limits)
// and checks the lines people read.
func TestPrintStatus(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	restart := now.Add(2 * time.Second)
	lastEvent := now.Add(-3 * time.Second)
	const digestA, digestB = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111", "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222"
	failed := api.ReloadRecord{Gen: 7, At: now.Add(-1500 * time.Millisecond), Trigger: api.TriggerAPI, Requests: 1, Outcome: api.OutcomeFailed, DurationMs: 35.5, ConfigDigest: digestB,
		Error: "generation 7: exited before it was ready (exit status 1): [NOTICE]   (13693) : haproxy version is 2.6.12\n[ALERT]    (13693) : config : parsing [/etc/haproxy/haproxy.cfg:15] : unknown keyword 'bogus'\n[ALERT]    (13693) : config : Fatal errors found in configuration."}
	st := api.Status{
		Pid: 4242, Proxy: "haproxy", Command: []string{"/usr/sbin/haproxy", "-f", "/etc/haproxy/haproxy.cfg"},
		StartedAt: now.Add(-90 * time.Minute), Rlimits: []string{"nofile=1048576:1048576"},
		Listeners: []api.ListenerStatus{{Name: "web", Spec: "web=tcp://0.0.0.0:80", Addr: "0.0.0.0:80", Inode: 123456, Queue: 3, Backlog: 4096}},
		Generations: []api.GenStatus{
			{Gen: 6, State: "draining", Pid: 100, StartedAt: at(-time.Hour), ReadyAt: at(-time.Hour), DrainedAt: at(-time.Minute),
				Deadline: at(4 * time.Minute), DeadlineAction: "hard stop", Connections: 12, OpenFds: 40,
				Processes: []api.ProcStatus{{Pid: 100, Role: "master", Nofile: api.Limit{Soft: 1048576, Hard: 1048576}}, {Pid: 101, Role: "worker", Nofile: api.Limit{Soft: api.Unlimited, Hard: api.Unlimited}}}},
			{Gen: 7, State: "starting", Pid: 0, Deadline: at(30 * time.Second), DeadlineAction: "kill (not ready)"},
		},
		LastReload: &failed,
		Reloads: []api.ReloadRecord{
			{Gen: 1, At: now.Add(-90 * time.Minute), Trigger: api.TriggerStart, Requests: 1, Outcome: api.OutcomeOK, DurationMs: 61.2, ConfigDigest: digestA},
			{Gen: 4, At: now.Add(-time.Hour), Trigger: api.TriggerWatch, Requests: 1, Outcome: api.OutcomeFailed, DurationMs: 40, ConfigDigest: digestB, Error: "generation 4: exited before it was ready (exit status 1): [NOTICE] x\n[ALERT] old alert"},
			{Gen: 6, At: now.Add(-time.Hour), Trigger: "api+sighup", Requests: 2, Outcome: api.OutcomeOK, DurationMs: 80.5, ConfigDigest: digestA},
			failed,
		},
		Config:             &api.ConfigStatus{Files: []string{"/etc/haproxy/haproxy.cfg"}, Gen: 6, AppliedDigest: digestA, OnDiskDigest: digestB, OnDiskDiffers: true},
		Counters:           api.Counters{ReloadsOK: 5, ReloadsFailed: 1, Crashes: 3, HardStops: 2, Kills: 1},
		ConsecutiveCrashes: 3, RestartAt: &restart,
		Watch: &api.WatchStatus{Paths: []string{"/etc/haproxy"}, Events: 17, Unchanged: 9, Reloads: 4, Failed: 1,
			LastEventAt: &lastEvent, LastError: failed.Error, Waiting: "a watched file is missing"},
	}
	var b bytes.Buffer
	if err := printStatus(&b, st, now); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	t.Logf("printStatus:\n%s", out)
	for _, want := range []string{
		"baton pid 4242, running, up for 1h30m0s, proxy haproxy: /usr/sbin/haproxy -f /etc/haproxy/haproxy.cfg",
		"reloads ok 5, failed 1 (the first start not counted); crashes 3; hard stops 2; kills 1; child limits nofile=1048576:1048576",
		"config: generation 6 runs aaaaaaaaaaaa of /etc/haproxy/haproxy.cfg; on disk: bbbbbbbbbbbb, DIFFERS: not applied",
		"RELOADS (last 4 of 4 kept, oldest first)",
		"1h30m0s  1    start",
		"api+sighup  ok",
		"[ALERT] old alert\n",
		"2s       7    api         FAILED  35.5 ms   bbbbbbbbbbbb  [ALERT] (13693) : config : parsing [/etc/haproxy/haproxy.cfg:15] : unknown keyword 'bogus' (in full below)",
		"\nreload to generation 7 failed 2s ago (api):\n  generation 7: exited before it was ready (exit status 1): [NOTICE]   (13693) : haproxy version is 2.6.12\n  [ALERT]    (13693) : config : parsing",
		"replacement after 3 crashes in a row starts in 2s",
		"0.0.0.0:80", "123456", "3/4096",
		"hard stop in 4m0s (2026-05-01T12:04:00Z)",
		"100 master 1048576/1048576, 101 worker unlimited/unlimited",
		"kill (not ready) in 30s",
		"watch /etc/haproxy: events 17, unchanged 9, reloads 4, failed 1; waiting: a watched file is missing; last error: [ALERT] (13693) : config : parsing [/etc/haproxy/haproxy.cfg:15] : unknown keyword 'bogus'\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// The multi-line error is printed in full once.
	if n := strings.Count(out, "Fatal errors found"); n != 1 {
		t.Errorf("the multi-line error appears %d times, want once", n)
	}
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "7 ") && !strings.Contains(l, "starting") {
			t.Errorf("line %d: generation 7 without its state: %q", i, l)
		}
	}

	// The smallest status (nothing optional) renders too.
	b.Reset()
	if err := printStatus(&b, api.Status{Stopping: true}, now); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "stopping") || strings.Contains(out, "replacement after") || strings.Contains(out, "watch ") || strings.Contains(out, "RELOADS") || strings.Contains(out, "config:") {
		t.Errorf("empty status:\n%s", out)
	}
}
