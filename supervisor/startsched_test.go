package supervisor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// TestStartSchedNotForReplacement: a crash replacement starts with baton's
// values (nothing serves that it could slow down).
func TestStartSchedNotForReplacement(t *testing.T) {
	ss, _, ownVals := testStartSched(t)
	h := newHarness(t, harnessOpts{modes: []string{"crash=100"}, startSched: ss})
	h.start()
	var pid2 int
	if !pollUntil(longWait, func() bool {
		pid2 = h.drv.pid(2)
		for _, g := range h.status().Generations {
			if g.Gen == 2 && g.Replacement && g.State == lifecycle.Active.String() {
				return pid2 != 0
			}
		}
		return false
	}) {
		t.Fatal("no active replacement")
	}
	for tid, v := range threadScheds(t, pid2) {
		if v != ownVals {
			t.Errorf("replacement (pid %d) thread %d: %q, want baton's %q", pid2, tid, v, ownVals)
		}
	}
	if n := h.logs.FilterMessage("start scheduling reset").Len(); n != 0 {
		t.Errorf("%d resets logged, want none", n)
	}
}

// TestStartSchedReload: the first generation starts with baton's values; a
// reload's generation starts (through the exec shim) at the start values
// and, once active, every thread of it has baton's back; the serving
// generation and baton are never niced or pinned.
func TestStartSchedReload(t *testing.T) {
	t.Run("cgroup", func(t *testing.T) { testStartSchedReload(t, false) })
	t.Run("fallback", func(t *testing.T) { testStartSchedReload(t, true) })
}

func testStartSchedReload(t *testing.T, noCgroup bool) {
	ss, startVals, ownVals := testStartSched(t)
	h := newHarness(t, harnessOpts{modes: []string{"", "readygate"}, startSched: ss, noCgroup: noCgroup})
	h.start()
	pid1 := h.drv.pid(1)
	checkAll := func(what string, pid int, want string) {
		t.Helper()
		got := threadScheds(t, pid)
		if len(got) == 0 {
			t.Fatalf("%s (pid %d): no threads", what, pid)
		}
		for tid, v := range got {
			if v != want {
				t.Errorf("%s (pid %d) thread %d: %q, want %q", what, pid, tid, v, want)
			}
		}
	}
	checkAll("first generation", pid1, ownVals)
	out := h.reloadAsync()
	var pid2 int
	if !pollUntil(longWait, func() bool { pid2 = h.drv.pid(2); return pid2 != 0 }) {
		t.Fatal("generation 2 not started")
	}
	// The fake's Go runtime starts threads of its own: wait for a few.
	pollUntil(shortWait, func() bool { return len(proc.Threads(pid2)) >= 3 })
	checkAll("starting generation", pid2, startVals)
	checkAll("serving generation", pid1, ownVals)
	checkAll("baton", os.Getpid(), ownVals)
	if err := os.WriteFile(filepath.Join(h.drv.dir(2), "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	o := <-out
	if o.err != nil {
		t.Fatalf("reload: %v", o.err)
	}
	checkAll("active generation", pid2, ownVals)
	if n := h.logs.FilterMessage("start scheduling reset").Len(); n != 1 {
		t.Errorf("%d reset logs, want 1", n)
	}
	for _, e := range h.logs.FilterMessage("start scheduling reset").All() {
		t.Logf("reset: %v", e.ContextMap())
	}
}

// schedOf reads a thread's (or a process's main thread's) nice level from
// field 19 of its stat and its CPUs from Cpus_allowed_list.
func schedOf(t *testing.T, dir string) (int, string) {
	t.Helper()
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command (field 2, in parentheses): field 3 is the state.
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	nice, err := strconv.Atoi(f[19-3])
	if err != nil {
		t.Fatalf("%s/stat: %v", dir, err)
	}
	status, err := os.ReadFile(filepath.Join(dir, "status"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return nice, strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s/status: no Cpus_allowed_list", dir)
	return 0, ""
}

// threadScheds lists "nice cpus" of every thread of pid.
func threadScheds(t *testing.T, pid int) map[int]string {
	t.Helper()
	out := map[int]string{}
	for _, tid := range proc.Threads(pid) {
		dir := "/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(tid)
		if _, err := os.Stat(dir); err != nil {
			continue // gone meanwhile
		}
		nice, cpus := schedOf(t, dir)
		out[tid] = strconv.Itoa(nice) + " " + cpus
	}
	return out
}

// testStartSched is --start-nice 10 and, with two CPUs or more, --start-cpus
// set to baton's last CPU; it skips when the test cannot undo a nice.
func testStartSched(t *testing.T) (*proc.StartSched, string, string) {
	t.Helper()
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ownNice := 20 - prio // getpriority(2) returns 20-nice
	if ownNice >= 10 {
		t.Skipf("the test runs at nice %d", ownNice)
	}
	var own unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &own); err != nil {
		t.Fatal(err)
	}
	cpus := ""
	if own.Count() > 1 {
		for cpu := range len(unix.CPUSet{}) * 64 {
			if own.IsSet(cpu) {
				cpus = strconv.Itoa(cpu)
			}
		}
	}
	ss, err := proc.NewStartSched(10, cpus, nil)
	if err != nil {
		t.Skipf("--start-nice 10 refused here: %v", err)
	}
	ownCPUs := proc.FormatCPUList(own)
	start := "10 " + ownCPUs
	if cpus != "" {
		start = "10 " + cpus
	}
	return ss, start, strconv.Itoa(ownNice) + " " + ownCPUs
}
