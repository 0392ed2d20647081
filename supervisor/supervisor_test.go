package supervisor

// Real-process tests of the supervisor with the fake proxy of
// fake_proxy_test.go: they check the executor around the lifecycle machine
// (fork, signals, reaping, /proc) against kernel facts, not how a real proxy
// behaves (integration/ does that).

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

func TestFirstGenerationServes(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.start()
	st := h.status()
	g := h.active(st)
	pid := h.drv.pid(1)
	if g.Gen != 1 || g.Pid != pid || pid == 0 {
		t.Fatalf("active generation %d pid %d, want generation 1 pid %d", g.Gen, g.Pid, pid)
	}
	if len(g.Processes) != 1 || g.Processes[0].Pid != pid {
		t.Fatalf("processes %+v, want the leader %d alone", g.Processes, pid)
	}
	// NOFILE as baton set it, read back from /proc by Status and by the test.
	if got := g.Processes[0].Nofile; got != (api.Limit{Soft: testNofile.Soft, Hard: testNofile.Max}) {
		t.Errorf("status nofile %+v, want %d:%d", got, testNofile.Soft, testNofile.Max)
	}
	soft, hard, err := batontest.Nofile(pid)
	if err != nil || soft != "4000" || hard != "4000" {
		t.Errorf("/proc/%d/limits nofile %s:%s (%v), want 4000:4000", pid, soft, hard, err)
	}
	// The one listening socket baton created is in the fake's fd table.
	if !holds(pid, h.inode()) {
		fds, _ := fdInodes(pid)
		t.Errorf("pid %d does not hold listener inode %d; its sockets: %v", pid, h.inode(), fds)
	}
	if len(st.Listeners) != 1 || st.Listeners[0].Inode != h.inode() || st.Listeners[0].Addr != h.addr() {
		t.Errorf("status listeners %+v, want inode %d at %s", st.Listeners, h.inode(), h.addr())
	}
	if got := get(t, h.addr()); got.gen != "1" || got.pid != strconv.Itoa(pid) {
		t.Errorf("served by generation %s pid %s, want 1 and %d", got.gen, got.pid, pid)
	}
	// The child's runtime did not make the shared description blocking.
	if nb, err := fdpass.Nonblocking(h.ls.Sockets()[0].Fd()); err != nil || !nb {
		t.Errorf("listener O_NONBLOCK = %v (%v), want set", nb, err)
	}
}

// docs/design.md's invariant 4: Reload returns only once the old generation no longer holds
// the listener; the old one is drained, exits and is forgotten.
func TestReloadSwitchesAndDrainsOld(t *testing.T) {
	// Generation 1 lingers after closing its listeners, so that "no longer
	// holds" and "exited" can be told apart when Reload returns.
	h := newHarness(t, harnessOpts{modes: []string{"linger=500"}})
	h.start()
	p1 := h.drv.pid(1)
	res, err := h.reload()
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	held, alive := holds(p1, h.inode()), !gone(p1)
	if held {
		t.Fatalf("Reload returned while generation 1 (pid %d) still holds the listener", p1)
	}
	if !alive {
		t.Logf("generation 1 exited before Reload returned; the release check was not isolated from the exit")
	}
	if p2 := h.drv.pid(2); res.Generation != 2 || res.Pid != p2 || p2 == p1 {
		t.Fatalf("reload result %+v, want generation 2 pid %d", res, p2)
	}
	if !holds(res.Pid, h.inode()) {
		t.Errorf("generation 2 (pid %d) does not hold the listener", res.Pid)
	}
	st := h.status()
	if g := h.active(st); g.Gen != 2 {
		t.Errorf("active generation %d, want 2", g.Gen)
	}
	if s := genState(st, 1); alive && s != lifecycle.Draining.String() {
		t.Errorf("generation 1 is %q, want draining", s)
	}
	if got := get(t, h.addr()); got.gen != "2" {
		t.Errorf("served by generation %s after the reload, want 2", got.gen)
	}
	h.waitOutput("fake gen 1: draining (SIGUSR1)")
	waitFor(t, longWait, "generation 1 reaped", func() bool { return gone(p1) })
	waitFor(t, shortWait, "generation 1 forgotten", func() bool { return genState(h.status(), 1) == "" })
	if _, err := os.Stat(h.drv.dir(1)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("generation 1's directory %s still exists (%v)", h.drv.dir(1), err)
	}
	// The first generation's start counts as a reload.
	if c := h.status().Counters; c.ReloadsOK != 1 || c.HardStops != 0 || c.Kills != 0 {
		t.Errorf("counters %+v, want 1 reload (the first start does not count), no hard stop, no kill", c)
	}
}

// docs/design.md's invariant 5: concurrent requests during a reload are coalesced into the
// next one; every caller gets an answer.
func TestReloadCoalesces(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.start()
	h.setCheck("slow=300") // the first reload's check keeps it busy
	const n = 10
	start := make(chan struct{})
	results := make(chan reloadOutcome, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			res, err := h.reload()
			results <- reloadOutcome{res, err}
		}()
	}
	close(start)
	wg.Wait() // bounded: each Reload has a deadline
	close(results)
	byGen := map[int]int{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("reload: %v", r.err)
		}
		byGen[r.res.Generation]++
	}
	total := 0
	for gen, k := range byGen {
		total += k
		if gen != 2 && gen != 3 {
			t.Errorf("%d reloads answered by generation %d, want 2 or 3", k, gen)
		}
	}
	if total != n || len(byGen) > 2 {
		t.Errorf("answers by generation %v, want %d answers from at most 2 generations", byGen, n)
	}
	if prepared := h.drv.preparedGens(); len(prepared) > 3 {
		t.Errorf("generations started %v, want at most 2 after the first", prepared)
	}
	if c := h.status().Counters; c.ReloadsOK != len(byGen) {
		t.Errorf("counters %+v, want %d successful reloads (ours; the first start does not count)", c, len(byGen))
	}
}

// docs/design.md's invariant 2: a failed config check leaves the serving generation alone
// and reports the checker's own words.
func TestReloadCheckFailedKeepsServing(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.start()
	p1 := h.drv.pid(1)
	h.setCheck("proxy.cfg:12: unknown keyword 'bnid' in 'frontend web'")
	_, err := h.reload()
	if !errors.Is(err, lifecycle.ErrCheckFailed) {
		t.Fatalf("reload error %v, want ErrCheckFailed", err)
	}
	if !strings.Contains(err.Error(), "unknown keyword 'bnid'") {
		t.Errorf("error %q lacks the checker's stderr", err)
	}
	var ce *childError
	if !errors.As(err, &ce) || ce.Status.Code != 1 {
		t.Errorf("error %v: want a *childError with exit status 1", err)
	}
	st := h.status()
	if g := h.active(st); g.Gen != 1 || g.Pid != p1 {
		t.Errorf("active generation %d pid %d, want 1 pid %d untouched", g.Gen, g.Pid, p1)
	}
	if len(st.Generations) != 1 || st.LastReload == nil || st.LastReload.Error == "" || st.Counters.ReloadsFailed != 1 {
		t.Errorf("status %+v, want generation 1 alone and the failed reload reported", st)
	}
	if prepared := h.drv.preparedGens(); len(prepared) != 1 {
		t.Errorf("generations started %v, want none after the failed check", prepared)
	}
	h.wantLogs(zapcore.ErrorLevel, "reload failed", 1, map[string]any{"gen": int64(2)})
	if got := get(t, h.addr()); got.gen != "1" {
		t.Errorf("served by generation %s, want 1", got.gen)
	}
	h.setCheck("ok")
	if res, err := h.reload(); err != nil || res.Generation != 3 {
		t.Errorf("reload after fixing the config: %+v, %v; want generation 3", res, err)
	}
}

func TestReloadCheckTimeout(t *testing.T) {
	h := newHarness(t, harnessOpts{checkTimeout: 2 * time.Second})
	h.start()
	p1 := h.drv.pid(1)
	h.setCheck("slow=20000")
	began := time.Now()
	_, err := h.reload()
	if !errors.Is(err, lifecycle.ErrCheckFailed) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reload error %v, want a check failure for its deadline", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("reload took %s, want about the check timeout", took)
	}
	// The check was killed and reaped before the reply: only generation 1
	// is left among our children.
	if kids := proc.Children(os.Getpid()); len(kids) != 1 || kids[0] != p1 {
		t.Errorf("children %v, want only generation 1 (%d)", kids, p1)
	}
}

// docs/design.md's invariant 2 for a generation that fails at start or never gets ready.
func TestReloadStartFailures(t *testing.T) {
	t.Run("exit before ready", func(t *testing.T) {
		h := newHarness(t, harnessOpts{modes: []string{"", "fail"}})
		h.start()
		p1 := h.drv.pid(1)
		_, err := h.reload()
		if !errors.Is(err, lifecycle.ErrExitedBeforeReady) {
			t.Fatalf("reload error %v, want ErrExitedBeforeReady", err)
		}
		for _, want := range []string{"frontend 'web' has no usable bind", "exit status 3"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		// Exited is reported once the whole group is gone and reaped.
		if p2 := h.drv.pid(2); p2 == 0 || !gone(p2) {
			t.Errorf("generation 2 (pid %d) not gone when Reload returned (state %q)", p2, procState(p2))
		}
		h.checkUntouched(p1)
	})
	t.Run("not ready in time", func(t *testing.T) {
		life := testLife()
		life.ReadyTimeout = 2 * time.Second
		h := newHarness(t, harnessOpts{life: &life, modes: []string{"", "hang"}})
		h.start()
		p1 := h.drv.pid(1)
		began := time.Now()
		_, err := h.reload()
		if !errors.Is(err, lifecycle.ErrNotReady) {
			t.Fatalf("reload error %v, want ErrNotReady", err)
		}
		if took := time.Since(began); took < life.ReadyTimeout {
			t.Errorf("reload failed after %s, before the ready timeout %s", took, life.ReadyTimeout)
		}
		if !strings.Contains(err.Error(), "last check") {
			t.Errorf("error %q lacks the last readiness probe error", err)
		}
		p2 := h.drv.pid(2)
		waitFor(t, shortWait, "the unready generation killed and reaped", func() bool { return p2 != 0 && gone(p2) })
		waitFor(t, shortWait, "generation 2 forgotten", func() bool { return genState(h.status(), 2) == "" })
		if c := h.status().Counters; c.Kills != 1 || c.ReloadsFailed != 1 {
			t.Errorf("counters %+v, want 1 kill and 1 failed reload", c)
		}
		h.checkUntouched(p1)
	})
}

// checkUntouched checks that generation 1 (pid p1) still serves alone.
func (h *harness) checkUntouched(p1 int) {
	h.t.Helper()
	st := h.status()
	if g := h.active(st); g.Gen != 1 || g.Pid != p1 {
		h.t.Errorf("active generation %d pid %d, want 1 pid %d untouched", g.Gen, g.Pid, p1)
	}
	if !holds(p1, h.inode()) {
		h.t.Errorf("generation 1 (pid %d) lost the listener", p1)
	}
	if got := get(h.t, h.addr()); got.gen != "1" {
		h.t.Errorf("served by generation %s, want 1", got.gen)
	}
}

// docs/design.md's invariant 3: a generation that does not finish draining is hard stopped
// at its deadline, then killed after the grace period.
func TestDrainDeadline(t *testing.T) {
	t.Run("hard stop", func(t *testing.T) {
		life := testLife()
		life.DrainTimeout = 300 * time.Millisecond
		h := newHarness(t, harnessOpts{life: &life, modes: []string{"nodrain"}})
		h.start()
		p1 := h.drv.pid(1)
		began := time.Now()
		if _, err := h.reload(); err != nil {
			t.Fatalf("reload: %v", err)
		}
		if took := time.Since(began); took < life.DrainTimeout {
			t.Errorf("reload acknowledged after %s, before the drain deadline", took)
		}
		if holds(p1, h.inode()) {
			t.Errorf("generation 1 still holds the listener after the acknowledgement")
		}
		h.waitOutput("fake gen 1: ignoring SIGUSR1")
		h.waitOutput("fake gen 1: hard stop (SIGTERM)")
		waitFor(t, shortWait, "generation 1 reaped", func() bool { return gone(p1) })
		if c := h.status().Counters; c.HardStops != 1 || c.Kills != 0 {
			t.Errorf("counters %+v, want 1 hard stop, no kill", c)
		}
		h.wantLogs(zapcore.WarnLevel, "old generation still holds the listeners after its drain signal", 1, map[string]any{"gen": int64(1), "pid": int64(p1), "signal": "SIGUSR1"})
		h.wantLogs(zapcore.WarnLevel, "signal generation: drain deadline passed, hard stop", 1, map[string]any{"gen": int64(1), "pid": int64(p1), "signal": "SIGTERM"})
	})
	t.Run("kill after grace", func(t *testing.T) {
		life := testLife()
		life.DrainTimeout = 300 * time.Millisecond
		life.KillGrace = 300 * time.Millisecond
		h := newHarness(t, harnessOpts{life: &life, modes: []string{"nodrain,ignoreterm"}})
		h.start()
		p1 := h.drv.pid(1)
		began := time.Now()
		if _, err := h.reload(); err != nil {
			t.Fatalf("reload: %v", err)
		}
		if took := time.Since(began); took < life.DrainTimeout+life.KillGrace {
			t.Errorf("reload acknowledged after %s, before drain deadline plus kill grace", took)
		}
		h.waitOutput("fake gen 1: ignoring SIGTERM")
		waitFor(t, shortWait, "generation 1 killed and reaped", func() bool { return gone(p1) })
		if c := h.status().Counters; c.HardStops != 1 || c.Kills != 1 {
			t.Errorf("counters %+v, want 1 hard stop and 1 kill", c)
		}
		if o := strings.Join(h.proxyOutput(), "\n"); strings.Contains(o, "fake gen 1: hard stop") {
			t.Errorf("generation 1 obeyed SIGTERM; the kill path was not exercised:\n%s", o)
		}
		h.wantLogs(zapcore.WarnLevel, "signal generation: still running after the hard stop, kill", 1, map[string]any{"gen": int64(1), "pid": int64(p1), "signal": "SIGKILL"})
		// Reaped is not yet seen by the loop, which logs the exit.
		waitFor(t, shortWait, "generation 1's exit logged", func() bool {
			return h.logs.FilterMessage("generation exited").FilterField(zap.Int("gen", 1)).Len() > 0
		})
		h.wantLogs(zapcore.InfoLevel, "generation exited", 1, map[string]any{"gen": int64(1), "pid": int64(p1), "signal": "SIGKILL"})
	})
}

// docs/design.md's invariant 3: the generation cap hard-stops the oldest draining one.
func TestGenerationCapHardStopsOldest(t *testing.T) {
	life := testLife()
	life.MaxGenerations = 1
	h := newHarness(t, harnessOpts{life: &life, modes: []string{"nodrain"}})
	h.start()
	p1 := h.drv.pid(1)
	if _, err := h.reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	h.waitOutput("fake gen 1: hard stop (SIGTERM)")
	waitFor(t, shortWait, "generation 1 reaped", func() bool { return gone(p1) })
	if c := h.status().Counters; c.HardStops != 1 {
		t.Errorf("counters %+v, want 1 hard stop", c)
	}
}

// A crash of the active generation starts a replacement at once, without
// a reload request and without a config check.
func TestCrashStartsReplacement(t *testing.T) {
	h := newHarness(t, harnessOpts{modes: []string{"crash=200"}})
	h.start()
	p1 := h.drv.pid(1)
	h.setCheck("the replacement must not run the check") // it would fail
	var g api.GenStatus
	waitFor(t, longWait, "a replacement active", func() bool {
		st := h.status()
		for _, x := range st.Generations {
			if x.State == lifecycle.Active.String() && x.Gen != 1 {
				g = x
				return true
			}
		}
		return false
	})
	if g.Gen != 2 || !g.Replacement || g.Pid == p1 || g.Pid != h.drv.pid(2) {
		t.Errorf("replacement %+v, want generation 2, marked replacement, pid %d", g, h.drv.pid(2))
	}
	h.waitOutput("fake gen 1: crashing")
	if !gone(p1) {
		t.Errorf("crashed generation 1 (pid %d) not reaped", p1)
	}
	if c := h.status().Counters; c.Crashes != 1 || c.ReloadsOK != 0 {
		t.Errorf("counters %+v, want 1 crash and no reload (the first start does not count)", c)
	}
	if got := get(t, h.addr()); got.gen != "2" {
		t.Errorf("served by generation %s, want 2", got.gen)
	}
	h.wantLogs(zapcore.WarnLevel, "active generation exited unexpectedly: a replacement starts from the last good config", 1, map[string]any{"gen": int64(1), "pid": int64(p1)})
	h.wantLogs(zapcore.WarnLevel, "replacement generation started after a crash", 1, map[string]any{"gen": int64(2), "pid": int64(g.Pid), "replaces": int64(1), "replaces_pid": int64(p1)})
}

// Crashes in a row back off: the loop arms a timer for the restart.
func TestCrashLoopBacksOff(t *testing.T) {
	h := newHarness(t, harnessOpts{modes: []string{"crash=100", "crash=100"}})
	h.start()
	var g api.GenStatus
	waitFor(t, longWait, "generation 3 active", func() bool {
		for _, x := range h.status().Generations {
			if x.Gen == 3 && x.State == lifecycle.Active.String() {
				g = x
				return true
			}
		}
		return false
	})
	st := h.status()
	if !g.Replacement || st.Counters.Crashes != 2 || st.ConsecutiveCrashes != 2 {
		t.Errorf("generation 3 %+v, counters %+v, %d crashes in a row; want a replacement after 2 crashes",
			g, st.Counters, st.ConsecutiveCrashes)
	}
	if n := len(h.drv.preparedGens()); n != 3 {
		t.Errorf("%d generations started, want 3", n)
	}
}

// A generation whose leader died but whose worker lives on is still the
// active one (not a crash), and the drain signal reaches the worker through
// the process group.
func TestOrphanedWorkerKeepsServingAndDrains(t *testing.T) {
	h := newHarness(t, harnessOpts{modes: []string{"grandchild,gcdrain,crash=100"}})
	h.start()
	p1 := h.drv.pid(1)
	gc := h.grandchild(1, p1)
	waitFor(t, longWait, "leader of generation 1 exited and reaped", func() bool { return gone(p1) })
	st := h.status()
	if g := h.active(st); g.Gen != 1 || len(g.Processes) != 1 || g.Processes[0].Pid != gc {
		t.Errorf("active %+v, want generation 1 with its worker %d alone", g, gc)
	}
	if st.Counters.Crashes != 0 {
		t.Errorf("counters %+v: a live worker is no crash", st.Counters)
	}
	if _, err := h.reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	h.waitOutput("fake grandchild " + strconv.Itoa(gc) + ": exiting on user defined signal 1")
	waitFor(t, shortWait, "the worker reaped", func() bool { return gone(gc) })
	waitFor(t, shortWait, "generation 1 forgotten", func() bool { return genState(h.status(), 1) == "" })
}

// A worker orphaned by its generation's leader keeps the generation alive
// and the reload unacknowledged (invariants 3 and 4) until it exits too; it
// is then reaped by baton, the subreaper. The leader dies while its
// generation is active, before any release is watched (see the report on
// leaders that exit during the release watch).
func TestGrandchildKeepsGenerationAlive(t *testing.T) {
	h := newHarness(t, harnessOpts{modes: []string{"grandchild,crash=100"}})
	h.start()
	p1 := h.drv.pid(1)
	gc := h.grandchild(1, p1)
	waitFor(t, longWait, "leader of generation 1 exited and reaped", func() bool { return gone(p1) })
	if !proc.GroupAlive(p1) {
		t.Fatalf("process group %d empty: the grandchild %d died with its leader", p1, gc)
	}
	out := h.reloadAsync()
	waitFor(t, longWait, "generation 2 active", func() bool { return h.active(h.status()).Gen == 2 })
	// The grandchild ignores the drain signal and keeps the listener.
	assertNoReply(t, out, 300*time.Millisecond, "generation 1's orphan %d still holds the listener", gc)
	st := h.status()
	if s := genState(st, 1); s != lifecycle.Draining.String() {
		t.Errorf("generation 1 is %q, want draining", s)
	}
	for _, g := range st.Generations {
		if g.Gen == 1 && (len(g.Processes) != 1 || g.Processes[0].Pid != gc) {
			t.Errorf("generation 1 processes %+v, want the orphan %d alone", g.Processes, gc)
		}
	}
	if st.Counters.Crashes != 0 {
		t.Errorf("counters %+v: a generation with a live worker did not crash", st.Counters)
	}
	h.releaseGrandchild(gc, out)
}

// grandchild returns the pid of gen's second process (the fake's holder).
func (h *harness) grandchild(gen, leader int) int {
	h.t.Helper()
	var gc int
	waitFor(h.t, shortWait, "the grandchild listed in generation 1", func() bool {
		for _, g := range h.status().Generations {
			for _, p := range g.Processes {
				if g.Gen == gen && p.Pid != leader {
					gc = p.Pid
				}
			}
		}
		return gc != 0
	})
	if !holds(gc, h.inode()) {
		h.t.Fatalf("grandchild %d does not hold the listener", gc)
	}
	return gc
}

// releaseGrandchild makes the orphan gc exit and checks that the reload out
// completes, generation 1 is forgotten and gc is reaped, not a zombie.
func (h *harness) releaseGrandchild(gc int, out <-chan reloadOutcome) {
	h.t.Helper()
	if err := unix.Kill(gc, unix.SIGUSR2); err != nil {
		h.t.Fatal(err)
	}
	select {
	case o := <-out:
		if o.err != nil || o.res.Generation != 2 {
			h.t.Fatalf("reload: %+v, %v; want generation 2", o.res, o.err)
		}
	case <-time.After(longWait):
		h.t.Fatal("reload not acknowledged after the orphan exited")
	}
	waitFor(h.t, shortWait, "generation 1 forgotten", func() bool { return genState(h.status(), 1) == "" })
	waitFor(h.t, shortWait, "the orphan reaped", func() bool { return gone(gc) })
	// The reaper records an orphan right after wait4 removed it from /proc.
	var st proc.ExitStatus
	waitFor(h.t, shortWait, "the orphan's exit routed to the orphan callback", func() bool {
		var ok bool
		st, ok = h.reaper.orphan(gc)
		return ok
	})
	if st.Code != 0 {
		h.t.Errorf("orphan %d exited with %+v, want status 0", gc, st)
	}
}

// assertNoReply fails when a reload outcome arrives within d.
func assertNoReply(t *testing.T, out <-chan reloadOutcome, d time.Duration, why string, args ...any) {
	t.Helper()
	select {
	case o := <-out:
		t.Fatalf("reload acknowledged (%+v, %v) although "+why, append([]any{o.res, o.err}, args...)...)
	case <-time.After(d):
	}
}

func TestStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(h *harness) error
		want string // what generation 1 was told
	}{
		{"graceful", func(h *harness) error { return h.stop(false) }, "fake gen 1: draining (SIGUSR1)"},
		{"fast", func(h *harness) error { return h.stop(true) }, "fake gen 1: hard stop (SIGTERM)"},
		{"context cancelled", func(h *harness) error { h.cancelRun(); return nil }, "fake gen 1: hard stop (SIGTERM)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{})
			h.start()
			p1 := h.drv.pid(1)
			addr := h.addr()
			if err := tc.stop(h); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if err := h.waitRun(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			// Run returns once every generation exited and was reaped.
			if !gone(p1) {
				t.Errorf("generation 1 (pid %d) still there after Run returned", p1)
			}
			h.waitOutput(tc.want)
			// baton closed its copy of the listener: new connections are
			// refused instead of queued for nobody.
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after the stop", addr)
			}
			if _, err := h.reload(); !errors.Is(err, ErrNotRunning) {
				t.Errorf("reload after stop: %v, want ErrNotRunning", err)
			}
		})
	}
}

func (h *harness) stop(fast bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), longWait)
	defer cancel()
	return h.sup.Stop(ctx, fast)
}

// The first generation failing ends Run with its error.
func TestFirstGenerationFailsRun(t *testing.T) {
	h := newHarness(t, harnessOpts{modes: []string{"fail"}})
	h.run()
	err := h.waitRun()
	if !errors.Is(err, lifecycle.ErrExitedBeforeReady) || !strings.Contains(err.Error(), "no usable bind") {
		t.Fatalf("Run: %v, want the first generation's failure with its output", err)
	}
	select {
	case <-h.sup.FirstReady():
		t.Error("FirstReady closed although the first generation failed")
	default:
	}
}
