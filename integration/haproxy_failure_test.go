package integration

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// TestHAProxyKill9ServingProcessUnderLoad guards the crash path: when the
// serving HAProxy dies by SIGKILL, baton starts a replacement at once with
// no reload asked, and since it keeps the listening socket, connections wait
// in its accept queue instead of being refused.
func TestHAProxyKill9ServingProcessUnderLoad(t *testing.T) {
	t.Run("worker", func(t *testing.T) { kill9UnderLoad(t, false) })
	t.Run("master", func(t *testing.T) { kill9UnderLoad(t, true) })
}

func kill9UnderLoad(t *testing.T, master bool) {
	const workers = 16
	p := startAccProxy(t, batontest.HAProxyOpts{GenPid: true}, nil, batontest.StartOptions{})
	st := p.status(t)
	gen1, leader := st.Active()
	g1 := st.Gen(gen1)
	haWorkers := g1.Others()
	if len(haWorkers) != 1 {
		t.Fatalf("generation %d has processes %v (master %d), want one worker", gen1, g1.Pids, leader)
	}
	worker := haWorkers[0]
	if pp := batontest.ParentPid(worker); pp != leader {
		t.Fatalf("worker %d has parent %d, want the generation's master %d", worker, pp, leader)
	}
	if len(st.Listeners) != 1 {
		t.Fatalf("status lists %d listeners, want 1", len(st.Listeners))
	}
	lw := accWatchListen(p.port, st.Listeners[0].Inode)
	lr := startLoad(t, p.addr, load.NewConn, workers, 30*time.Second, 0)
	accWait(time.Second)

	victim, what := worker, "worker"
	other := leader // the killed generation's other process
	if master {
		victim, what, other = leader, "master", worker
	}
	killed := time.Now()
	if err := batontest.SignalPids([]int{victim}, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var gen2, pid2 int
	var replacedAfter, otherGoneAfter time.Duration
	_, ok := batontest.PollUntil(15*time.Second, 5*time.Millisecond, func() bool {
		if otherGoneAfter == 0 && !batontest.Alive(other) {
			otherGoneAfter = time.Since(killed)
		}
		if replacedAfter == 0 {
			if st, err := p.b.Status(); err == nil {
				if g, pid := st.Active(); g > gen1 && pid != leader {
					gen2, pid2, replacedAfter = g, pid, time.Since(killed)
				}
			}
		}
		return replacedAfter > 0 && otherGoneAfter > 0
	})
	if replacedAfter == 0 {
		t.Fatalf("no replacement generation 15 s after kill -9 of the %s:\n%s", what, p.b.LogTail(30))
	}
	accWait(time.Second)
	r := lr.stop(t)
	samples, bad := lw.end()
	st = p.status(t)

	// Who answered after the kill: the killed generation's worker (an
	// orphan when the master was killed) or the replacement.
	oldGen := fmt.Sprintf("1-%d", worker)
	oldAfter, newAfter := 0, 0
	var lastOld time.Duration
	for _, s := range r.Samples {
		if s.Class != load.OK || !s.Start.After(killed) {
			continue
		}
		if s.Gen == oldGen {
			oldAfter++
			lastOld = max(lastOld, s.Start.Add(s.Latency).Sub(killed))
		} else {
			newAfter++
		}
	}
	t.Logf("kill -9 of the %s (pid %d): replacement generation %d (pid %d) active %s after the kill; the killed generation's %s (pid %d) gone %s after the kill (ok=%t)",
		what, victim, gen2, pid2, replacedAfter.Round(time.Millisecond), map[bool]string{true: "orphaned worker", false: "master"}[master], other, otherGoneAfter.Round(time.Millisecond), ok)
	t.Logf("requests started after the kill: %d answered by the old worker %d (last one done %s after the kill), %d by the replacement",
		oldAfter, worker, lastOld.Round(time.Millisecond), newAfter)
	t.Logf("load: %s", r.Summary())
	compatFigure(t, "kill -9 of the %s: replacement after %s; %d of %d requests failed, %d refused", what, replacedAfter.Round(time.Millisecond), r.Failed, r.Total, r.Counts[load.Refused])
	for _, s := range r.Failures(2 * workers) {
		t.Logf("failure %+.3fs after the kill: %v", s.Start.Sub(killed).Seconds(), s)
	}
	t.Logf("LISTEN samples %d, not exactly baton's one socket: %d; counters %v", samples, len(bad), st.Counters)
	if n := r.Counts[load.Refused]; n > 0 {
		t.Errorf("%d connections refused: the listening socket must outlive the %s", n, what)
	}
	if r.Failed > workers {
		t.Errorf("%d failed requests, want at most the %d in flight when the %s died", r.Failed, workers, what)
	}
	if r.Counts[load.OK] == 0 || newAfter == 0 {
		t.Errorf("%d requests succeeded, %d of them answered by the replacement", r.Counts[load.OK], newAfter)
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d samples did not show exactly baton's one LISTEN socket, first: %s", len(bad), samples, bad[0])
	}
	if otherGoneAfter == 0 {
		t.Errorf("pid %d of the killed generation still alive after the replacement serves", other)
	}
	if st.Counters["crashes"] < 1 {
		t.Errorf("counters.crashes = %d, want at least 1", st.Counters["crashes"])
	}
	if st.Counters["reloads_ok"] != 0 || st.Counters["reloads_failed"] != 0 { // the first start is not a reload
		t.Errorf("counters %v: the replacement must not count as a reload", st.Counters)
	}
	if len(st.Generations) != 1 {
		t.Errorf("status lists %d generations, want only the replacement: %+v", len(st.Generations), st.Generations)
	}
	for _, pid := range batontest.Descendants(p.b.Pid()) {
		if (pid == victim || pid == other) && batontest.Alive(pid) {
			t.Errorf("pid %d of the killed generation is still among baton's descendants", pid)
		}
	}
	if g := p.get(t); g == oldGen || !strings.HasPrefix(g, "1-") {
		t.Errorf("after the replacement answers come from %q, want the replacement's worker", g)
	}
	// The crash and its replacement are incidents: one WARN line each.
	log := p.b.Log()
	wantLevel(t, log, "WARN", 1, "active generation exited unexpectedly", fmt.Sprintf(`"gen": %d,`, gen1), fmt.Sprintf(`"pid": %d,`, leader))
	wantLevel(t, log, "WARN", 1, "replacement generation started after a crash", fmt.Sprintf(`"gen": %d,`, gen2), fmt.Sprintf(`"replaces": %d,`, gen1))
	noStackTraces(t, log)
}

// TestHAProxyCheckAlways: with --check always, baton runs haproxy -c before
// every start, as before one parse per reload: a broken config fails at the
// check, with HAProxy's own [ALERT], and no generation is started for it.
func TestHAProxyCheckAlways(t *testing.T) {
	p := startAccProxy(t, batontest.HAProxyOpts{}, []string{"--check", "always"}, batontest.StartOptions{})
	gen1, pid1 := p.status(t).Active()
	p.write(t, 2, "bogus_keyword on")
	res := p.b.CLI("reload")
	if res.Code != 1 || !strings.Contains(res.Stderr, "config check failed") {
		t.Errorf("reload with a broken config under --check always: exit %d, stderr %q; want exit 1 and the config check failed", res.Code, res.Stderr)
	}
	if alerts := batontest.LogLines(res.Stderr, "[ALERT]", "unknown keyword 'bogus_keyword'"); len(alerts) != 1 {
		t.Errorf("stderr of the failed check has %d [ALERT] lines naming 'bogus_keyword', want 1", len(alerts))
	}
	st := p.status(t)
	if gen, pid := st.Active(); gen != gen1 || pid != pid1 || len(st.Generations) != 1 {
		t.Errorf("after the failed check: active generation %d pid %d of %d, want the untouched %d pid %d alone", gen, pid, len(st.Generations), gen1, pid1)
	}
	p.write(t, 3)
	if gen3, _ := p.reload(t); gen3 <= gen1 {
		t.Errorf("fixed reload: generation %d, want a new one", gen3)
	}
	if g := p.get(t); g != "3" {
		t.Errorf("after the fixed reload answers come from config version %q, want 3", g)
	}
}
