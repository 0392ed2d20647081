package proc

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCPUList(t *testing.T) {
	good := map[string]string{
		"0": "0", "1": "1", "0-1,3": "0-1,3", "3,0-1": "0-1,3", " 2 , 4-6 ": "2,4-6", "5-5": "5", "0,1,2": "0-2",
		"1023": "1023",
	}
	for in, want := range good {
		set, err := ParseCPUList(in)
		if err != nil {
			t.Errorf("ParseCPUList(%q): %v", in, err)
			continue
		}
		if got := FormatCPUList(set); got != want {
			t.Errorf("ParseCPUList(%q) = %s, want %s", in, got, want)
		}
	}
	bad := map[string]string{
		"": "empty", " ": "empty", "a": "CPU number", "1-": "CPU number", "-1": "CPU number", "3-1": "above the last",
		"1,1": "given twice", "0-2,2": "given twice", "1024": "highest CPU", "+1": "CPU number", "1,,2": "CPU number", "0x1": "CPU number",
	}
	for in, want := range bad {
		if _, err := ParseCPUList(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseCPUList(%q) = %v, want an error saying %q", in, err, want)
		}
	}
}

func TestNewStartSchedRefusesBadInput(t *testing.T) {
	own, err := ownSched()
	if err != nil {
		t.Fatal(err)
	}
	outside := -1
	for cpu := range maxCPUs {
		if !own.cpus.IsSet(cpu) {
			outside = cpu
			break
		}
	}
	cases := []struct {
		nice int
		cpus string
		want string
	}{
		{-1, "", "from 1 to 19"},
		{20, "", "from 1 to 19"},
		{0, "x", `CPU list "x"`},
		{0, strconv.Itoa(outside), "not among the CPUs baton may run on"},
	}
	if own.nice >= 1 {
		cases = append(cases, struct {
			nice int
			cpus string
			want string
		}{own.nice, "", "runs at nice"})
	}
	for _, c := range cases {
		if _, err := NewStartSched(c.nice, c.cpus, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewStartSched(%d, %q) = %v, want an error saying %q", c.nice, c.cpus, err, c.want)
		}
	}
	if ss, err := NewStartSched(0, "", nil); err != nil || ss != nil {
		t.Errorf("NewStartSched(0, \"\") = %v, %v; want nil, nil (off)", ss, err)
	}
}

// TestReniceNeedsCapOrRlimit: without CAP_SYS_NICE, a nice that the nice
// rlimit would not let baton undo is refused, naming the ways out.
func TestReniceNeedsCapOrRlimit(t *testing.T) {
	if err := reniceLimitErr(0, false, 0); err == nil || !strings.Contains(err.Error(), "CAP_SYS_NICE") || !strings.Contains(err.Error(), "ulimit -e 20") {
		t.Errorf("no capability, nice limit 0: %v", err)
	}
	if err := reniceLimitErr(0, false, 20); err != nil {
		t.Errorf("nice limit 20 lets baton go back to nice 0: %v", err)
	}
	if err := reniceLimitErr(5, false, 15); err != nil {
		t.Errorf("nice limit 15 lets baton go back to nice 5: %v", err)
	}
	if err := reniceLimitErr(5, false, 14); err == nil {
		t.Error("nice limit 14 cannot go back to nice 5, accepted")
	}
	if err := reniceLimitErr(0, true, 0); err != nil {
		t.Errorf("CAP_SYS_NICE: %v", err)
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
	for _, tid := range Threads(pid) {
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
func testStartSched(t *testing.T) (*StartSched, string, string) {
	t.Helper()
	own, err := ownSched()
	if err != nil {
		t.Fatal(err)
	}
	if own.nice >= 10 {
		t.Skipf("the test runs at nice %d", own.nice)
	}
	cpus := ""
	if own.cpus.Count() > 1 {
		for cpu := range maxCPUs {
			if own.cpus.IsSet(cpu) {
				cpus = strconv.Itoa(cpu)
			}
		}
	}
	ss, err := NewStartSched(10, cpus, nil)
	if err != nil {
		t.Skipf("--start-nice 10 refused here: %v", err)
	}
	ownCPUs := FormatCPUList(own.cpus)
	start := "10 " + ownCPUs
	if cpus != "" {
		start = "10 " + cpus
	}
	return ss, start, strconv.Itoa(own.nice) + " " + ownCPUs
}

// TestStartSchedForkNoShim starts a program straight (no exec shim) with
// the start values: the child has them, no thread of this process keeps
// them, and a reset gives the child baton's values back except where it
// changed them itself.
func TestStartSchedForkNoShim(t *testing.T) {
	ss, startVals, ownVals := testStartSched(t)
	r := startReaper(t)
	start := func() (int, <-chan struct{}) {
		done := make(chan struct{})
		pid, err := r.Start(ss.wrap(func() (int, error) {
			pid, _, err := syscall.StartProcess("/bin/sleep", []string{"sleep", "30"}, &syscall.ProcAttr{
				Env: []string{}, Files: []uintptr{0, 1, 2}, Sys: &syscall.SysProcAttr{Setpgid: true},
			})
			return pid, err
		}), func(ExitStatus) { close(done) })
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = unix.Kill(pid, unix.SIGKILL)
			<-done
		})
		return pid, done
	}
	pid, _ := start()
	if got := threadScheds(t, pid); len(got) != 1 || got[pid] != startVals {
		t.Fatalf("child at start: %v, want %q", got, startVals)
	}
	// The forking thread ends just after the child was started.
	var odd map[int]string
	pollUntil(shortWait, func() bool {
		odd = map[int]string{}
		for tid, v := range threadScheds(t, os.Getpid()) {
			if v != ownVals {
				odd[tid] = v
			}
		}
		return len(odd) == 0
	})
	if len(odd) > 0 {
		t.Errorf("threads of the test process (pid %d) not at %q: %v", os.Getpid(), ownVals, odd)
	}
	res := ss.Reset([]int{pid})
	if res.Err != nil || res.Threads != 1 {
		t.Errorf("reset: %+v", res)
	}
	if got := threadScheds(t, pid); got[pid] != ownVals {
		t.Errorf("child after the reset: %q, want %q", got[pid], ownVals)
	}

	// A child that reniced itself keeps its nice level; its CPUs, still the
	// start ones, are reset.
	pid2, _ := start()
	if err := unix.Setpriority(unix.PRIO_PROCESS, pid2, 12); err != nil {
		t.Fatal(err)
	}
	res = ss.Reset([]int{pid2})
	nice, cpus := schedOf(t, "/proc/"+strconv.Itoa(pid2))

	if nice != 12 || strconv.Itoa(ss.own.nice)+" "+cpus != ownVals {
		t.Errorf("reniced child after the reset: nice %d cpus %s (%+v), want nice 12 and baton's CPUs (%s)", nice, cpus, res, ownVals)
	}

	// A reset that cannot set baton's values reports why.
	broken := *ss
	broken.Nice, broken.own.cpus = 0, unix.CPUSet{} // an empty mask: EINVAL
	if err := unix.SchedSetaffinity(pid2, &ss.CPUs); err != nil {
		t.Fatal(err)
	}
	if res := broken.Reset([]int{pid2}); res.Err == nil || res.Threads != 0 {
		t.Errorf("reset to an empty CPU set: %+v, want an error", res)
	} else {
		t.Logf("failed reset: %v", res.Err)
	}
}
