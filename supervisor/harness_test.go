package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Bounds of the waits in these tests. Every wait polls to a deadline.
const (
	shortWait = 5 * time.Second  // something that takes milliseconds
	longWait  = 15 * time.Second // a whole reload or stop under -race
)

// testLife is the lifecycle policy of the real-process tests: generous
// readiness (a -race test binary starts in tens of ms, slower under load)
// and drain deadlines that a test overrides when it exercises them.
func testLife() lifecycle.Config {
	c := lifecycle.DefaultConfig()
	c.ReadyTimeout = 10 * time.Second
	c.DrainTimeout = 10 * time.Second
	c.KillGrace = 2 * time.Second
	c.BackoffMin, c.BackoffMax = 100*time.Millisecond, time.Second
	return c
}

// testNofile is the default limit the harness configures. Soft = hard: the
// Go runtime of the fake then leaves it as it is (it raises a soft limit
// below hard-1 at init), so /proc shows exactly what baton set.
var testNofile = proc.Rlimit{Name: "nofile", Resource: unix.RLIMIT_NOFILE, Soft: 4000, Max: 4000}

type harnessOpts struct {
	life         *lifecycle.Config // nil: testLife()
	rlimits      []proc.Rlimit     // nil: testNofile; see noRlimits
	noRlimits    bool              // configure no rlimit at all
	modes        []string          // FAKE_MODE of the first generations started
	specs        []string          // listener specs; default tcp://127.0.0.1:0
	wrapShell    bool
	checkTimeout time.Duration
	stateFile    string // Config.StateFile
	// procfs wraps the real ProcFS (e.g. to block it); metrics is handed
	// to the supervisor.
	procfs  func(ProcFS) ProcFS
	metrics *Metrics
	// control is handed to the supervisor (Config.Control), which keeps
	// its path bound; the test serves it.
	control      *ControlSocket
	adoptForeign bool // Config.AdoptListeners (--adopt-listeners)
	// driver, when set, wraps the fake driver (e.g. adds an OutputChecker).
	driver   func(*fakeDriver) proxyctl.Driver
	noCgroup bool // track generations without cgroup v2 (the fallback)
	// startSched is Config.StartSched (--start-nice, --start-cpus).
	startSched *proc.StartSched
}

// harness is one supervisor over the fake proxy, with its reaper, listeners
// and logs. Everything it starts is stopped and waited for in t.Cleanup.
type harness struct {
	t      *testing.T
	dir    string
	drv    *fakeDriver
	ls     *ListenerSet
	sup    *Supervisor
	reaper *testReaper
	log    *zap.Logger
	logs   *observer.ObservedLogs
	cfg    Config // what sup was made with (a next supervisor reuses it)
	deps   Deps

	cancelRun context.CancelFunc
	runDone   chan struct{}
	runErr    error
}

// newHarness binds the listeners and creates the supervisor; run starts it.
func newHarness(t *testing.T, o harnessOpts) *harness {
	t.Helper()
	h := &harness{t: t, dir: shortDir(t)}
	h.reaper = startReaper(t)
	log, logs := testLogger(t)
	h.log, h.logs = log, logs
	specs := o.specs
	if len(specs) == 0 {
		specs = []string{"tcp://127.0.0.1:0"}
	}
	h.ls = bindSpecs(t, specs...)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	h.drv = newFakeDriver(exe, filepath.Join(h.dir, "check"))
	h.drv.wrapShell = o.wrapShell
	h.drv.queueModes(o.modes...)
	life := testLife()
	if o.life != nil {
		life = *o.life
	}
	rl := o.rlimits
	if rl == nil && !o.noRlimits {
		rl = []proc.Rlimit{testNofile}
	}
	realFS, err := proc.NewFS()
	if err != nil {
		t.Fatal(err)
	}
	var pfs ProcFS = realFS
	if o.procfs != nil {
		pfs = o.procfs(pfs)
	}
	var drv proxyctl.Driver = h.drv
	if o.driver != nil {
		drv = o.driver(h.drv)
	}
	h.cfg = Config{
		Command: []string{exe, roleServe}, Driver: drv, Listeners: h.ls, Rlimits: rl,
		Lifecycle: life, CheckTimeout: o.checkTimeout, RunDir: filepath.Join(h.dir, "r"),
		Env: childTestEnv(), StateFile: o.stateFile, Control: o.control, AdoptListeners: o.adoptForeign, NoCgroup: o.noCgroup,
		StartSched: o.startSched,
	}
	h.deps = Deps{Log: log, Starter: ExecStarter(&proc.ExecStarter{Reaper: h.reaper.Reaper}), ProcFS: pfs, Metrics: o.metrics}
	h.sup, err = New(h.cfg, h.deps)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// childTestEnv is the base environment of every child: the fake dispatch,
// and no one-second sleep of the race runtime at each child's exit.
func childTestEnv() []string {
	return []string{"PATH=/usr/bin:/bin", fakeEnv + "=1", "GORACE=atexit_sleep_ms=0"}
}

// start runs the supervisor and waits for its first generation to serve.
func (h *harness) start() {
	h.t.Helper()
	h.run()
	h.waitFirstReady()
}

// run starts Run on a goroutine the harness owns; cleanup stops it.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancelRun = cancel
	h.runDone = make(chan struct{})
	go func() {
		defer close(h.runDone)
		h.runErr = h.sup.Run(ctx)
	}()
	h.t.Cleanup(h.shutdown)
}

func (h *harness) waitFirstReady() {
	h.t.Helper()
	select {
	case <-h.sup.FirstReady():
	case <-h.runDone:
		h.t.Fatalf("Run returned before the first generation was ready: %v", h.runErr)
	case <-time.After(longWait):
		h.t.Fatal("first generation not ready in time")
	}
}

// shutdown stops the supervisor fast if the test did not stop it, waits for
// Run, and checks that no child process is left behind.
func (h *harness) shutdown() {
	select {
	case <-h.runDone:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), longWait)
		_ = h.sup.Stop(ctx, true)
		cancel()
	}
	h.cancelRun()
	select {
	case <-h.runDone:
	case <-time.After(longWait):
		h.t.Errorf("Run did not return")
		return
	}
	if !pollUntil(shortWait, func() bool { return len(proc.Children(os.Getpid())) == 0 }) {
		h.t.Errorf("child processes left after Run returned: %v", proc.Children(os.Getpid()))
	}
}

// waitRun waits for Run to return and returns its error.
func (h *harness) waitRun() error {
	h.t.Helper()
	select {
	case <-h.runDone:
		return h.runErr
	case <-time.After(longWait):
		h.t.Fatal("Run did not return")
		return nil
	}
}

func (h *harness) reload() (api.ReloadResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), longWait)
	defer cancel()
	return h.sup.Reload(ctx)
}

// reloadAsync starts a Reload; its outcome arrives on the channel.
func (h *harness) reloadAsync() <-chan reloadOutcome {
	ch := make(chan reloadOutcome, 1)
	go func() {
		res, err := h.reload()
		ch <- reloadOutcome{res, err}
	}()
	return ch
}

type reloadOutcome struct {
	res api.ReloadResponse
	err error
}

func (h *harness) status() api.Status {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), shortWait)
	defer cancel()
	st, err := h.sup.Status(ctx)
	if err != nil {
		h.t.Fatalf("status: %v", err)
	}
	return st
}

// active returns the active generation of st (fails the test without one).
func (h *harness) active(st api.Status) api.GenStatus {
	h.t.Helper()
	var out []api.GenStatus
	for _, g := range st.Generations {
		if g.State == lifecycle.Active.String() {
			out = append(out, g)
		}
	}
	if len(out) != 1 {
		h.t.Fatalf("want exactly one active generation, have %+v", st.Generations)
	}
	return out[0]
}

// genState returns gen's state in st, or "" when it is not listed.
func genState(st api.Status, gen int) string {
	for _, g := range st.Generations {
		if g.Gen == gen {
			return g.State
		}
	}
	return ""
}

// addr is the bound address of the first listener.
func (h *harness) addr() string { return h.ls.Sockets()[0].Addr() }

// inode is the inode of the first listener.
func (h *harness) inode() uint64 { return h.ls.Sockets()[0].Inode() }

// setCheck sets what the next config checks do (see fakeCheck).
func (h *harness) setCheck(content string) {
	h.t.Helper()
	if err := os.WriteFile(h.drv.checkFile, []byte(content), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// proxyOutput returns the lines the generations wrote, as baton logged them.
func (h *harness) proxyOutput() []string {
	var out []string
	for _, e := range h.logs.FilterMessage("proxy output").All() {
		out = append(out, e.ContextMap()["line"].(string))
	}
	return out
}

// waitOutput waits until a generation wrote a line containing s.
func (h *harness) waitOutput(s string) {
	h.t.Helper()
	ok := pollUntil(shortWait, func() bool {
		for _, l := range h.proxyOutput() {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	})
	if !ok {
		h.t.Fatalf("no proxy output line contains %q; output:\n%s", s, strings.Join(h.proxyOutput(), "\n"))
	}
}

// testReaper is a Reaper run by the test, with the orphans it reaped.
type testReaper struct {
	*proc.Reaper
	mu      sync.Mutex
	orphans map[int]proc.ExitStatus
}

func (r *testReaper) orphan(pid int) (proc.ExitStatus, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.orphans[pid]
	return st, ok
}

// startReaper makes the test process a subreaper and runs a Reaper on a
// goroutine the test owns: cleanup cancels it and waits for it.
func startReaper(t *testing.T) *testReaper {
	t.Helper()
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	tr := &testReaper{orphans: map[int]proc.ExitStatus{}}
	r, err := proc.NewReaper(sigchld, func(pid int, st proc.ExitStatus) {
		tr.mu.Lock()
		tr.orphans[pid] = st
		tr.mu.Unlock()
	})
	if err != nil {
		signal.Stop(sigchld)
		t.Fatalf("proc.NewReaper: %v", err)
	}
	tr.Reaper = r
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		signal.Stop(sigchld)
	})
	return tr
}

// testLogger logs to t (shown on failure and with -v) and to an observer
// the test can search. Nothing is written to t once the test has finished.
func testLogger(t *testing.T) (*zap.Logger, *observer.ObservedLogs) {
	w := &tWriter{t: t}
	t.Cleanup(w.close)
	enc := zap.NewDevelopmentEncoderConfig()
	tcore := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), zapcore.DebugLevel)
	ocore, logs := observer.New(zapcore.DebugLevel)
	return zap.New(zapcore.NewTee(tcore, ocore)), logs
}

type tWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *tWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *tWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// shortDir is a temporary directory with a short path (unix socket paths
// are limited to 107 bytes), removed at cleanup.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func bindSpecs(t *testing.T, specs ...string) *ListenerSet {
	t.Helper()
	var sps []fdpass.Spec
	for _, s := range specs {
		sp, err := fdpass.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		sps = append(sps, sp)
	}
	ls, err := BindListeners(sps)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// pollUntil calls cond every 5 ms until it is true (true) or d passed
// (false, after one last call).
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return cond()
		}
		<-time.After(5 * time.Millisecond)
	}
}

// waitFor fails the test unless cond holds within d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !pollUntil(d, cond) {
		t.Fatalf("not after %s: %s", d, what)
	}
}

// fdInodes returns the socket inodes in pid's fd table, by fd number.
func fdInodes(pid int) (map[int]uint64, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[int]uint64{}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		s, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		ino, err1 := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
		fd, err2 := strconv.Atoi(e.Name())
		if err1 == nil && err2 == nil {
			out[fd] = ino
		}
	}
	return out, nil
}

// holds reports whether pid has the socket inode open (false once gone).
func holds(pid int, inode uint64) bool {
	m, err := fdInodes(pid)
	if err != nil {
		return false
	}
	for _, ino := range m {
		if ino == inode {
			return true
		}
	}
	return false
}

// procState is the state letter of /proc/PID/stat ("" when pid is gone).
func procState(pid int) string {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return ""
	}
	return string(st.State)
}

// gone reports whether pid no longer exists, not even as a zombie.
func gone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, os.ErrNotExist)
}

func selfFdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) - 1 // the directory being read
}

// served is one answer of the fake proxy.
type served struct {
	gen, pid, nofile string
}

// get makes one HTTP request to addr on a fresh connection.
func get(t *testing.T, addr string) served {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: shortWait}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", addr, resp.Status)
	}
	return served{resp.Header.Get("X-Baton-Gen"), resp.Header.Get("X-Pid"), resp.Header.Get("X-Nofile")}
}
