package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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

// shortDrain is a drain deadline and kill grace that make a test reach the
// hard stop and the kill quickly.
func shortDrain() *lifecycle.Config {
	life := testLife()
	life.DrainTimeout = 300 * time.Millisecond
	life.KillGrace = 300 * time.Millisecond
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
	if parentOf(pid) != os.Getpid() {
		h.t.Fatalf("daemon %d: parent %d, want this test (the subreaper)", pid, parentOf(pid))
	}
	h.t.Cleanup(func() { reapTestChildren(h.t, pid) })
	return pid
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
			h := newHarness(t, harnessOpts{life: shortDrain(), modes: []string{"daemonize,ignoreterm"}, noCgroup: tc.noCgroup})
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
			if err != nil || res.Gen != 2 {
				t.Fatalf("reload: %+v, %v; want generation 2", res, err)
			}
			if !dead(d) {
				t.Errorf("reload acknowledged while generation 1's daemon %d lives (state %q)", d, procState(d))
			}
			byGen := map[string]int{}
			for range 20 {
				byGen[get(t, h.addr()).gen]++
			}
			if byGen["2"] != 20 {
				t.Errorf("answers after the reload by generation: %v, want all 20 from generation 2", byGen)
			}
			kills := 0
			for _, e := range h.logs.FilterMessage("signal generation").All() {
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
			h := newHarness(t, harnessOpts{life: shortDrain(), modes: []string{"daemonize"}, noCgroup: tc.noCgroup})
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
