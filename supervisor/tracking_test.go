package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// trackingCase is one way baton tracks a generation's processes.
type trackingCase struct {
	name     string
	noCgroup bool
}

// trackingCases are the cgroup v2 mechanism (skipped where this host gives
// the test no writable cgroup v2) and the fallback, forced.
func trackingCases(t *testing.T) []trackingCase {
	t.Helper()
	return []trackingCase{{"cgroup", false}, {"fallback", true}}
}

// requireMechanism skips the cgroup case where baton cannot create a cgroup
// here (then it uses the fallback, tested by its own case).
func requireMechanism(t *testing.T, tc trackingCase) {
	t.Helper()
	if !tc.noCgroup {
		if err := cgroupUsable(); err != nil {
			t.Skipf("no writable cgroup v2 here: %v", err)
		}
	}
}

// shortDrain is a drain deadline that makes a test reach the hard stop
// quickly, and then the kill after grace.
func shortDrain(grace time.Duration) *lifecycle.Config {
	life := testLife()
	life.DrainTimeout = 200 * time.Millisecond
	life.KillGrace = grace
	return &life
}

// daemonPid waits for gen's daemon (FAKE_MODE daemonize) to serve and
// returns its pid; cleanup kills it if it is still there (a test failing
// on an untracked daemon must not leave it running).
func (h *harness) daemonPid(gen int) int {
	h.t.Helper()
	var pid int
	suffix := fmt.Sprintf(" gen %d: serving", gen)
	waitFor(h.t, shortWait, "the daemon of generation "+strconv.Itoa(gen)+" serving", func() bool {
		for _, l := range h.proxyOutput() {
			if rest, ok := strings.CutPrefix(l, "fake daemon "); ok && strings.HasSuffix(rest, suffix) {
				pid, _ = strconv.Atoi(strings.TrimSuffix(rest, suffix))
				return pid > 0
			}
		}
		return false
	})
	if proc.ParentPid(pid) != os.Getpid() {
		h.t.Fatalf("daemon %d: parent %d, want this test (the subreaper)", pid, proc.ParentPid(pid))
	}
	h.t.Cleanup(func() { reapTestChildren(h.t, pid) })
	return pid
}

// checkReleasedAtAck is what a reload's acknowledgement promises about an
// old generation's process d that was killed at its deadline: it holds no
// listener any more (invariant 4). It may still be running its exit (the
// kernel closes a killed process's files before it becomes a zombie, and
// on a loaded machine the rest of the exit can take a while), so its
// death is waited for, not required at the acknowledgement.
func checkReleasedAtAck(t *testing.T, d int, inode uint64, what string) {
	t.Helper()
	if !dead(d) && holds(d, inode) {
		t.Errorf("reload acknowledged while %s %d holds the listener (state %q)", what, d, procState(d))
	}
	waitFor(t, shortWait, fmt.Sprintf("%s %d to exit", what, d), func() bool { return dead(d) })
}

// dead reports whether pid exited (gone, or a zombie not reaped yet).
func dead(pid int) bool {
	st := procState(pid)
	return st == "" || st == "Z"
}

// Invariants 3 and 4 for a process that leaves its generation's process
// group and session (setsid) and is re-parented to baton: the old
// generation's daemon keeps the listener and ignores the drain and the hard
// stop, so the reload is acknowledged only after the kill at the drain
// deadline reached it, and no answer after the acknowledgement comes from
// it.
func TestSetsidDaemonServesNothingAfterReload(t *testing.T) {
	for _, tc := range trackingCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			requireMechanism(t, tc)
			h := newHarness(t, harnessOpts{life: shortDrain(200 * time.Millisecond), modes: []string{"daemonize,ignoreterm"}, noCgroup: tc.noCgroup})
			h.start()
			d := h.daemonPid(1)
			inCgroup := strings.HasSuffix(cgroupOf(d), "/gen-1")
			if inCgroup == tc.noCgroup {
				t.Errorf("daemon %d in cgroup %q: with %s, want it in generation 1's cgroup: %v", d, cgroupOf(d), tc.name, !tc.noCgroup)
			}
			if !holds(d, h.inode()) {
				t.Fatalf("daemon %d does not hold the listener", d)
			}
			res, err := h.reload()
			if err != nil || res.Generation != 2 {
				t.Fatalf("reload: %+v, %v; want generation 2", res, err)
			}
			checkReleasedAtAck(t, d, h.inode(), "generation 1's daemon")
			byGen := map[string]int{}
			for range 20 {
				byGen[get(t, h.addr()).gen]++
			}
			if byGen["2"] != 20 {
				t.Errorf("answers after the reload by generation: %v, want all 20 from generation 2", byGen)
			}
			kills := 0
			for _, e := range h.logs.FilterMessageSnippet("signal generation").All() {
				if e.ContextMap()["gen"] == int64(1) && e.ContextMap()["kind"] == lifecycle.Kill.String() {
					kills++
				}
			}
			if kills != 1 {
				t.Errorf("generation 1 killed %d times, want once (its daemon ignores the drain and the hard stop)", kills)
			}
		})
	}
}

// `stop` returns only once every tracked process is gone, a daemon that
// left the process group and session included; the hard stop at the drain
// deadline reaches it although the drain signal (to the leader) does not.
func TestStopWaitsForSetsidDaemon(t *testing.T) {
	for _, tc := range trackingCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			requireMechanism(t, tc)
			h := newHarness(t, harnessOpts{life: shortDrain(2 * time.Second), modes: []string{"daemonize"}, noCgroup: tc.noCgroup})
			h.start()
			d := h.daemonPid(1)
			cg := cgroupOf(d)
			if err := h.stop(false); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if !dead(d) {
				t.Errorf("stop returned while generation 1's daemon %d lives (state %q)", d, procState(d))
			}
			if err := h.waitRun(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			h.waitOutput(fmt.Sprintf("fake daemon %d: exiting on terminated", d))
			if !tc.noCgroup {
				dir, err := cgroupPath(cg)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("generation 1's cgroup %s left after Run returned (%v)", dir, err)
				}
				if _, err := os.Stat(filepath.Dir(dir)); !os.IsNotExist(err) {
					t.Errorf("baton's cgroup %s left after Run returned (%v)", filepath.Dir(dir), err)
				}
			}
		})
	}
}

// cgroupOf is pid's cgroup v2 path ("0::PATH" in /proc/PID/cgroup).
func cgroupOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	return ""
}

// An upgraded baton keeps tracking the generations it adopted (the cgroup
// subtree, or the marker, travels in the handover): the old generation's
// daemon still delays the next reload's acknowledgement until it is killed,
// new generations join the adopted cgroup subtree, and a stop removes it.
func TestUpgradeKeepsTrackingSetsidDaemon(t *testing.T) {
	for _, tc := range trackingCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			requireMechanism(t, tc)
			h := newHarness(t, harnessOpts{life: shortDrain(200 * time.Millisecond), modes: []string{"daemonize,ignoreterm"}, noCgroup: tc.noCgroup})
			up := &testUpgrader{h: h, next: make(chan *harness, 1)}
			h.sup.upgrader = up
			h.start()
			d := h.daemonPid(1)
			cg := cgroupOf(d)
			ctx, cancel := context.WithTimeout(context.Background(), longWait)
			defer cancel()
			if _, err := h.sup.Upgrade(ctx); err != nil {
				t.Fatalf("upgrade: %v", err)
			}
			if err := h.waitRun(); err != nil || !h.sup.HandedOver() {
				t.Fatalf("old supervisor: Run %v, handed over %v", err, h.sup.HandedOver())
			}
			nh := <-up.next
			if res, err := nh.reload(); err != nil || res.Generation != 2 {
				t.Fatalf("reload after the upgrade: %+v, %v; want generation 2", res, err)
			}
			checkReleasedAtAck(t, d, nh.inode(), "the adopted generation's daemon")
			byGen := map[string]int{}
			for range 20 {
				byGen[get(t, nh.addr()).gen]++
			}
			if byGen["2"] != 20 {
				t.Errorf("answers after the reload by generation: %v, want all 20 from generation 2", byGen)
			}
			if want := filepath.Join(filepath.Dir(cg), "gen-2"); !tc.noCgroup && cgroupOf(nh.drv.pid(2)) != want {
				t.Errorf("generation 2 in cgroup %q, want %q (the adopted subtree)", cgroupOf(nh.drv.pid(2)), want)
			}
			if err := nh.stop(false); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if err := nh.waitRun(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if !tc.noCgroup {
				dir, err := cgroupPath(filepath.Dir(cg))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("the adopted cgroup subtree %s is left after Run returned (%v)", dir, err)
				}
			}
		})
	}
}

// testUpgrader plays the new baton of an upgrade inside the test: it
// receives the handover, adopts it into a next supervisor over the same
// reaper, runs it and says ready.
type testUpgrader struct {
	h    *harness
	next chan *harness
}

func (u *testUpgrader) Upgrade(f *os.File) error {
	c, err := net.FileConn(f)
	if err != nil {
		return err
	}
	defer c.Close()
	hv, fds, err := ReceiveHandover(c.(*net.UnixConn), shortWait)
	if err != nil {
		return err
	}
	defer closeFds(fds)
	ls, err := AdoptListeners(hv, fds)
	if err != nil {
		return err
	}
	cfg := u.h.cfg
	cfg.Listeners = ls
	sup, err := New(cfg, u.h.deps)
	if err == nil {
		err = sup.Adopt(hv, fds)
	}
	if err != nil {
		return errors.Join(err, ls.CloseAll())
	}
	nh := &harness{t: u.h.t, dir: u.h.dir, drv: u.h.drv, ls: ls, sup: sup, reaper: u.h.reaper,
		log: u.h.log, logs: u.h.logs, cfg: cfg, deps: u.h.deps}
	nh.run()
	u.next <- nh
	return AckHandover(c.(*net.UnixConn), os.Getpid())
}

// A daemon whose environment lost the generation marker cannot be told
// apart in the fallback: it is reported at WARN and killed at stop, before
// stop returns. In a cgroup it is the generation's like any other process
// (the hard stop reaches it).
func TestStopKillsUnattributableOrphan(t *testing.T) {
	for _, tc := range trackingCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			requireMechanism(t, tc)
			h := newHarness(t, harnessOpts{life: shortDrain(2 * time.Second), modes: []string{"daemonize,nomarker"}, noCgroup: tc.noCgroup})
			h.start()
			d := h.daemonPid(1)
			if err := h.stop(false); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if !dead(d) {
				t.Errorf("stop returned while the daemon %d lives (state %q)", d, procState(d))
			}
			killed := 0
			for _, e := range h.logs.FilterMessage("killing processes of no generation").All() {
				if fmt.Sprint(e.ContextMap()["pids"]) == fmt.Sprintf("[%d]", d) {
					killed++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.noCgroup]; killed != want {
				t.Errorf("daemon %d killed as a process of no generation %d times, want %d", d, killed, want)
			}
			if !tc.noCgroup {
				h.waitOutput(fmt.Sprintf("fake daemon %d: exiting on terminated", d))
			}
		})
	}
}
