package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// startGateLua registers, in each HAProxy thread (lua-load-per-thread), a
// task that spins until the file GATE exists: a worker whose event loop is
// held, so that its generation stays starting (the readiness probe is not
// answered) with every thread created. Tasks do not run under `haproxy -c`.
const startGateLua = `core.register_task(function()
  local deadline = os.time() + 60
  while os.time() < deadline do
    local g = io.open(%q, "r")
    if g then g:close() return end
  end
end)
`

// TestHAProxyStartSched: with --start-nice 10 --start-cpus 0, a reload's
// generation runs, while it starts, with every thread of every process at
// nice 10 on CPU 0, and once it is active at baton's own nice and CPUs;
// the first generation and the serving one are never changed, and no
// request fails under load.
func TestHAProxyStartSched(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	dir := batontest.ShortTempDir(t)
	gate := filepath.Join(dir, "go")
	lua := filepath.Join(dir, "gate.lua")
	if err := os.WriteFile(lua, fmt.Appendf(nil, startGateLua, gate), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil { // the first generation is not held
		t.Fatal(err)
	}
	port := batontest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "haproxy.cfg")
	write := func(v int) {
		text := batontest.HAProxyAcceptanceConfig(batontest.HAProxyOpts{Port: port, Version: v})
		text = strings.Replace(text, "global\n", "global\n    nbthread 2\n    lua-load-per-thread "+lua+"\n", 1)
		if err := batontest.WriteFileAtomic(cfg, []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	write(1)
	b := batontest.StartBaton(t, []string{"-l", "tcp://" + addr, "--start-nice", "10", "--start-cpus", "0", "--", haproxy, "-f", cfg}, batontest.StartOptions{})
	own := threadSched(t, b.Pid(), b.Pid())
	if strings.HasSuffix(own, " 0") {
		t.Skipf("baton runs on CPU 0 only (%q): --start-cpus 0 would change nothing", own)
	}
	const start = "10 0"
	st, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	gen1, _ := st.Active()
	old := genProcs(st, gen1)
	checkThreads(t, "first generation", old, own)

	// New connections: an idle keep-alive connection the draining HAProxy
	// closes is a client's race, whatever baton does.
	lr := startLoad(t, addr, load.NewConn, 4, 30*time.Second, 400)
	if err := os.Remove(gate); err != nil {
		t.Fatal(err)
	}
	write(2)
	type outcome struct {
		res batontest.CLIResult
		at  time.Time
	}
	reloaded := make(chan outcome, 1)
	go func() {
		r := b.CLI("reload", "--json")
		reloaded <- outcome{r, time.Now()}
	}()
	// The reload's generation, held by its Lua tasks: a master and a
	// worker with both threads.
	var starting []int
	batontest.Eventually(t, 20*time.Second, func() error {
		st, err := b.Status()
		if err != nil {
			return err
		}
		for _, g := range st.Generations {
			if g.State == "starting" {
				starting = genProcs(st, g.Gen)
			}
		}
		n := 0
		for _, pid := range starting {
			n += len(taskIDs(pid))
		}
		if len(starting) < 2 || n < 3 {
			return fmt.Errorf("starting generation: processes %v with %d threads, want a master and a worker with 2 threads", starting, n)
		}
		return nil
	})
	checkThreads(t, "starting generation", starting, start)
	checkThreads(t, "serving generation", old, own)
	checkThreads(t, "baton", []int{b.Pid()}, own)
	// Requests keep being served while the held generation spins on CPU 0.
	accWait(500 * time.Millisecond)
	released := time.Now()
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var o outcome
	select {
	case o = <-reloaded:
	case <-time.After(30 * time.Second):
		t.Fatal("reload did not return 30 s after the gate opened")
	}
	if o.res.Code != 0 {
		t.Fatalf("baton reload: exit %d: %s", o.res.Code, o.res.Stderr)
	}
	t.Logf("reload acknowledged %v after the gate opened", o.at.Sub(released).Round(time.Millisecond))
	checkThreads(t, "active generation", starting, own)
	res := lr.stop(t)
	t.Logf("load: %s", res.Summary())
	if res.Failed != 0 {
		t.Errorf("%d of %d requests failed: %v", res.Failed, res.Total, res.Failures(5))
	}
	for _, line := range strings.Split(b.Log(), "\n") {
		if strings.Contains(line, "start scheduling") {
			t.Logf("baton: %s", line)
		}
	}
}

// genProcs lists generation gen's processes as status shows them.
func genProcs(st batontest.Status, gen int) []int {
	var pids []int
	for _, g := range st.Generations {
		if g.Gen == gen {
			for _, p := range g.Processes {
				pids = append(pids, p.Pid)
			}
		}
	}
	slices.Sort(pids)
	return pids
}

// checkThreads asserts that every thread of pids has want ("NICE CPUS").
func checkThreads(t *testing.T, what string, pids []int, want string) {
	t.Helper()
	n := 0
	for _, pid := range pids {
		for _, tid := range taskIDs(pid) {
			got := threadSched(t, pid, tid)
			if got == "" {
				continue // gone meanwhile
			}
			n++
			if got != want {
				t.Errorf("%s: pid %d thread %d has nice and CPUs %q, want %q", what, pid, tid, got, want)
			}
		}
	}
	t.Logf("%s: %d threads of %v at %q", what, n, pids, want)
	if n == 0 {
		t.Errorf("%s: no threads found for %v", what, pids)
	}
}

// taskIDs lists pid's threads.
func taskIDs(pid int) []int {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out
}

// threadSched is "NICE CPUS" of one thread: field 19 of its stat and its
// Cpus_allowed_list ("" once it is gone).
func threadSched(t *testing.T, pid, tid int) string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/task/%d", pid, tid)
	stat, err1 := os.ReadFile(dir + "/stat")
	status, err2 := os.ReadFile(dir + "/status")
	if err1 != nil || err2 != nil {
		return ""
	}
	f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	if len(f) < 17 {
		t.Fatalf("%s/stat: %q", dir, stat)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return f[19-3] + " " + strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s/status: no Cpus_allowed_list", dir)
	return ""
}
