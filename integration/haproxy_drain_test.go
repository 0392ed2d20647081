package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestHAProxyDrainDoesNotSpin guards that the process that serves
// traffic is a forked child: an old generation that still drains a
// request while connections wait in the shared accept queue must not wake up
// for them. A foreground -db HAProxy keeps the closed listener in its epoll
// set and burns both cores (about 600 ticks in 3 s); a forked worker idles.
func TestHAProxyDrainDoesNotSpin(t *testing.T) {
	be := batontest.StartSlowBackend(t, 30*time.Second)
	p := startAccProxy(t, batontest.HAProxyOpts{BackendPort: be.Port}, []string{"--drain-timeout", "60s"}, batontest.StartOptions{})
	gen1, _ := p.status(t).Active()

	// gen1 holds one request in flight until the test releases it.
	slow := make(chan batontest.HTTPResult, 1)
	go func() { slow <- batontest.HTTPGet(p.addr, "/slow", 45*time.Second) }()
	if err := be.WaitSlow(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.write(t, 2)
	gen2, _ := p.reload(t)
	st := p.status(t)
	g1, g2 := st.Gen(gen1), st.Gen(gen2)
	if g1 == nil || g1.State != "draining" {
		t.Fatalf("generation %d after the reload: %+v, want draining", gen1, g1)
	}
	if g2 == nil || g2.State != "active" || len(g2.Pids) == 0 {
		t.Fatalf("generation %d after the reload: %+v, want active with processes", gen2, g2)
	}
	if len(g1.Pids) == 0 {
		t.Fatalf("draining generation %d has no processes", gen1)
	}

	// Nobody accepts while gen2 is stopped: connections queue.
	if err := batontest.SignalPids(g2.Pids, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := batontest.SignalPids(g2.Pids, syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(resume)
	if _, ok := batontest.PollUntil(5*time.Second, time.Millisecond, func() bool { return batontest.Stopped(g2.Pids) }); !ok {
		t.Fatalf("generation %d (pids %v) not stopped 5 s after SIGSTOP", gen2, g2.Pids)
	}
	const queued = 5
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range queued {
		c, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial while gen2 is stopped: %v", err)
		}
		conns = append(conns, c)
		if err := batontest.WriteHTTPRequest(c, "/"); err != nil {
			t.Fatal(err)
		}
	}
	var q uint32
	batontest.Eventually(t, 5*time.Second, func() error {
		var n int
		var err error
		q, n, err = batontest.AcceptQueue(p.port)
		switch {
		case err != nil:
			return err
		case n != 1:
			return fmt.Errorf("%d LISTEN sockets on port %d, want 1", n, p.port)
		case q < queued:
			return fmt.Errorf("accept queue %d, want at least %d", q, queued)
		}
		return nil
	})

	before := batontest.SumCPUTicks(g1.Pids)
	start := time.Now()
	accWait(3 * time.Second)
	ticks := batontest.SumCPUTicks(g1.Pids) - before
	window := time.Since(start)
	qAfter, _, _ := batontest.AcceptQueue(p.port)
	t.Logf("draining generation %d (pids %v) used %d CPU ticks in %s with %d connections queued (queue %d after the window); a spinning -db process uses about 600",
		gen1, g1.Pids, ticks, window.Round(time.Millisecond), q, qAfter)
	if ticks > 30 {
		t.Errorf("draining generation used %d CPU ticks in %s while connections waited in the accept queue: it spins", ticks, window.Round(time.Millisecond))
	}
	if qAfter < queued {
		t.Errorf("accept queue %d after the window, want %d: someone accepted while gen2 was stopped", qAfter, queued)
	}
	for _, pid := range g1.Pids {
		if !batontest.Alive(pid) {
			t.Errorf("draining generation's pid %d exited during the window, want it still draining", pid)
		}
	}

	resume()
	be.Release()
	failures := 0
	for i, c := range conns {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		r := batontest.ReadHTTP(c)
		if r.Err != nil || r.Status != 200 || r.Gen != "2" {
			failures++
			t.Errorf("queued connection %d: status %d gen %q err %v, want 200 from generation 2's config", i, r.Status, r.Gen, r.Err)
		}
	}
	t.Logf("queued connections answered by the new generation: %d of %d, %d failures", queued-failures, queued, failures)
	select {
	case r := <-slow:
		t.Logf("in-flight /slow request on the draining generation: status %d gen %q err %v", r.Status, r.Gen, r.Err)
		if r.Err != nil || r.Status != 200 || r.Gen != "1" {
			t.Errorf("in-flight request across the reload: status %d gen %q err %v, want 200 from generation 1", r.Status, r.Gen, r.Err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("in-flight /slow request not answered 15 s after release")
	}
	took, ok := batontest.PollUntil(10*time.Second, 10*time.Millisecond, func() bool {
		for _, pid := range g1.Pids {
			if batontest.Alive(pid) {
				return false
			}
		}
		return true
	})
	t.Logf("drained generation gone %s after its last request was released", took.Round(time.Millisecond))
	if !ok {
		t.Errorf("generation %d still alive 10 s after its last request finished", gen1)
	}
}

// drainStatus is the part of `baton status --json` the deadline test reads.
type drainStatus struct {
	Generations []struct {
		Gen            int        `json:"generation"`
		State          string     `json:"state"`
		DrainedAt      *time.Time `json:"drain_started_at"`
		Deadline       *time.Time `json:"deadline"`
		DeadlineAction string     `json:"deadline_action"`
	} `json:"generations"`
}

// TestHAProxyDrainDeadlineAndKill guards docs/design.md's invariant 3: a draining generation
// that does not finish is hard stopped at its drain deadline (SIGTERM) and
// SIGKILLed after the kill grace, and status shows the deadline meanwhile.
func TestHAProxyDrainDeadlineAndKill(t *testing.T) {
	t.Run("stopped-generation-is-killed", func(t *testing.T) { drainDeadline(t, true) })
	t.Run("hard-stop-ends-haproxy", func(t *testing.T) { drainDeadline(t, false) })
}

func drainDeadline(t *testing.T, sigstop bool) {
	const drain, grace = 2 * time.Second, 2 * time.Second
	be := batontest.StartSlowBackend(t, 30*time.Second)
	p := startAccProxy(t, batontest.HAProxyOpts{BackendPort: be.Port},
		[]string{"--drain-timeout", drain.String(), "--kill-grace", grace.String()}, batontest.StartOptions{})
	gen1, _ := p.status(t).Active()

	// gen1 holds a request that never finishes (released only at cleanup).
	slow := make(chan batontest.HTTPResult, 1)
	go func() { slow <- batontest.HTTPGet(p.addr, "/slow", 40*time.Second) }()
	if err := be.WaitSlow(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p.write(t, 2)
	asked := time.Now()
	gen2, _ := p.reload(t)
	acked := time.Now()
	g1 := p.status(t).Gen(gen1)
	if g1 == nil || g1.State != "draining" || len(g1.Pids) == 0 {
		t.Fatalf("generation %d after the reload: %+v, want draining with processes", gen1, g1)
	}
	pids := g1.Pids
	if sigstop {
		// A stopped process cannot act on SIGTERM: only SIGKILL ends it.
		if err := batontest.SignalPids(pids, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		if _, ok := batontest.PollUntil(5*time.Second, time.Millisecond, func() bool { return batontest.Stopped(pids) }); !ok {
			t.Fatalf("generation %d (pids %v) not stopped 5 s after SIGSTOP", gen1, pids)
		}
	}

	res := p.b.CLI("status", "--json")
	if res.Code != 0 {
		t.Fatalf("baton status --json: exit %d: %s", res.Code, res.Stderr)
	}
	var ds drainStatus
	if err := json.Unmarshal([]byte(res.Stdout), &ds); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range ds.Generations {
		if g.Gen != gen1 {
			continue
		}
		found = true
		if g.State != "draining" || g.DeadlineAction != "hard stop" || g.Deadline == nil || g.DrainedAt == nil {
			t.Fatalf("status --json shows generation %d as %+v, want draining with a hard stop deadline", gen1, g)
		}
		if d := g.Deadline.Sub(*g.DrainedAt); d != drain {
			t.Errorf("deadline is %s after the drain started, want %s", d, drain)
		}
		t.Logf("status --json right after the reload: generation %d draining, %s until the hard stop", gen1, time.Until(*g.Deadline).Round(time.Millisecond))
		// The drain started while `baton reload` ran.
		if g.Deadline.Before(asked.Add(drain)) || g.Deadline.After(acked.Add(drain)) {
			t.Errorf("deadline %s, want %s after a moment within the reload (%s .. %s)",
				g.Deadline.Format(time.RFC3339Nano), drain, asked.Format(time.RFC3339Nano), acked.Format(time.RFC3339Nano))
		}
	}
	if !found {
		t.Fatalf("status --json has no generation %d: %s", gen1, res.Stdout)
	}
	human := p.b.CLI("status")
	if human.Code != 0 || !strings.Contains(human.Stdout, "draining") || !strings.Contains(human.Stdout, "hard stop in") {
		t.Errorf("baton status (exit %d) does not show the draining generation and its deadline:\n%s%s", human.Code, human.Stdout, human.Stderr)
	}

	var hardStopAt time.Duration
	_, gone := batontest.PollUntil(drain+grace+10*time.Second, 10*time.Millisecond, func() bool {
		if hardStopAt == 0 {
			if st, err := p.b.Status(); err == nil && st.Counters["hard_stops"] >= 1 {
				hardStopAt = time.Since(acked)
			}
		}
		return batontest.AllGone(pids)
	})
	goneAt := time.Since(acked)
	if !gone {
		t.Fatalf("generation %d (pids %v) still alive %s after the reload (drain %s + grace %s)", gen1, pids, goneAt.Round(time.Millisecond), drain, grace)
	}
	if limit := drain + grace + 5*time.Second; goneAt > limit {
		t.Errorf("generation %d gone %s after the reload, want within %s", gen1, goneAt.Round(time.Millisecond), limit)
	}

	// The counters and the log, once baton has seen the exit.
	var st batontest.Status
	batontest.Eventually(t, 5*time.Second, func() error {
		st = p.status(t)
		if st.Gen(gen1) != nil {
			return fmt.Errorf("status still lists generation %d", gen1)
		}
		return nil
	})
	log := p.b.Log()
	sel := fmt.Sprintf(`"gen": %d,`, gen1)
	drainLines := batontest.LogLines(log, "signal generation", sel, `"kind": "drain"`)
	stopLines := batontest.LogLines(log, "signal generation", sel, `"kind": "stop"`)
	killLines := batontest.LogLines(log, "signal generation", sel, `"kind": "kill"`)
	figures := func(lines []string) string {
		if len(lines) == 0 || len(drainLines) == 0 {
			return "-"
		}
		a, err1 := batontest.LogTime(drainLines[0])
		b, err2 := batontest.LogTime(lines[0])
		if err1 != nil || err2 != nil {
			return "?"
		}
		return b.Sub(a).String()
	}
	t.Logf("SIGSTOP=%t: reload ack → hard_stops counter seen %s, → processes gone %s; from baton's log, drain signal → stop signal %s, → kill signal %s; counters %v",
		sigstop, hardStopAt.Round(time.Millisecond), goneAt.Round(time.Millisecond), figures(stopLines), figures(killLines), st.Counters)
	compatFigure(t, "SIGSTOP=%t: hard stop after %s, generation gone %s after the ack (deadline %s + grace %s)", sigstop, hardStopAt.Round(100*time.Millisecond), goneAt.Round(100*time.Millisecond), drain, grace)
	if len(stopLines) != 1 {
		t.Errorf("baton's log has %d hard-stop signal lines for generation %d, want 1:\n%s", len(stopLines), gen1, strings.Join(stopLines, "\n"))
	}
	if st.Counters["hard_stops"] != 1 {
		t.Errorf("counters.hard_stops = %d, want 1", st.Counters["hard_stops"])
	}
	if sigstop {
		if st.Counters["kills"] < 1 {
			t.Errorf("counters.kills = %d, want at least 1", st.Counters["kills"])
		}
		if len(killLines) == 0 {
			t.Errorf("baton's log has no kill signal line for generation %d", gen1)
		} else if len(stopLines) > 0 && strings.Index(log, stopLines[0]) > strings.Index(log, killLines[0]) {
			t.Errorf("baton's log has the kill before the hard stop:\n%s\n%s", killLines[0], stopLines[0])
		}
	} else {
		if st.Counters["kills"] != 0 {
			t.Errorf("counters.kills = %d, want 0: HAProxy ends on SIGTERM by itself", st.Counters["kills"])
		}
		if len(killLines) != 0 {
			t.Errorf("baton's log has kill lines for generation %d, want none:\n%s", gen1, strings.Join(killLines, "\n"))
		}
	}
	// Levels for alerting: the drain of a reload is routine (INFO); the
	// escalations at the deadlines are incidents (WARN), one line each.
	for _, l := range drainLines {
		if !strings.Contains(l, "\tINFO\t") || !strings.Contains(l, `"signal": "SIGUSR1"`) {
			t.Errorf("drain line not at INFO with SIGUSR1: %s", l)
		}
	}
	wantLevel(t, log, "WARN", 1, "signal generation: drain deadline passed, hard stop", sel, `"signal": "SIGTERM"`)
	if sigstop {
		wantLevel(t, log, "WARN", 1, "signal generation: still running after the hard stop, kill", sel, `"signal": "SIGKILL"`)
	}
	noStackTraces(t, log)
	if _, pid := st.Active(); pid == 0 || p.get(t) != "2" {
		t.Errorf("generation %d not serving after the old one was stopped", gen2)
	}
	select {
	case r := <-slow:
		t.Logf("the request held by the old generation ended with status %d err %v", r.Status, r.Err)
	case <-time.After(10 * time.Second):
		t.Errorf("the request held by the old generation did not end 10 s after it was gone")
	}
}
