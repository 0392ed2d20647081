package integration

import (
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// TestNginxKill9GenerationUnderLoad guards the crash path with nginx: when
// every process of the serving generation dies by SIGKILL (a master killed
// alone leaves its workers serving, and a worker killed alone is respawned
// by its master, so this is the case only baton can mend), baton starts a
// replacement at once, and connections wait in the accept queue it keeps
// instead of being refused.
func TestNginxKill9GenerationUnderLoad(t *testing.T) {
	const workers = 16
	p := startNginxAcc(t, func(port int) string { return nginxConf(t, port, 1, nil, nil) }, nil, batontest.StartOptions{})
	st := waitNginxSettled(t, p)
	gen1, leader := st.Active()
	victims := st.Gen(gen1).Pids
	lw := accWatchListen(p.port, st.Listeners[0].Inode)
	lr := startLoad(t, p.addr, load.NewConn, workers, 30*time.Second, 0)
	accWait(time.Second)

	killed := time.Now()
	if err := batontest.SignalPids(victims, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var replacedAfter time.Duration
	batontest.PollUntil(15*time.Second, 5*time.Millisecond, func() bool {
		if st, err := p.b.Status(); err == nil {
			if g, pid := st.Active(); g > gen1 && pid != leader {
				replacedAfter = time.Since(killed)
			}
		}
		return replacedAfter > 0
	})
	if replacedAfter == 0 {
		t.Fatalf("no replacement generation 15 s after kill -9 of generation %d (%v):\n%s", gen1, victims, p.b.LogTail(30))
	}
	accWait(time.Second)
	r := lr.stop(t)
	samples, bad := lw.end()
	st = p.status(t)
	t.Logf("kill -9 of nginx generation %d (pids %v): replacement active %s after the kill; load: %s; LISTEN samples %d, bad %d; counters %v",
		gen1, victims, replacedAfter.Round(time.Millisecond), r.Summary(), samples, len(bad), st.Counters)
	compatFigure(t, "replacement after %s; %d of %d requests failed, %d refused", replacedAfter.Round(time.Millisecond), r.Failed, r.Total, r.Counts[load.Refused])
	if n := r.Counts[load.Refused]; n > 0 {
		t.Errorf("%d connections refused: the listening socket must outlive the generation", n)
	}
	if r.Failed > workers {
		t.Errorf("%d failed requests, want at most the %d in flight when the generation died", r.Failed, workers)
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d samples did not show exactly baton's one LISTEN socket, first: %s", len(bad), samples, bad[0])
	}
	if st.Counters["crashes"] < 1 {
		t.Errorf("counters.crashes = %d, want at least 1", st.Counters["crashes"])
	}
	if g := p.get(t); g != "1" {
		t.Errorf("the replacement answers %q, want the last good config's version 1", g)
	}
}

// TestNginxDrainDeadline: an nginx generation that still holds a request at
// its drain deadline is hard stopped (SIGTERM), and is gone by the deadline
// plus the kill grace.
func TestNginxDrainDeadline(t *testing.T) {
	const drain, grace = 2 * time.Second, 2 * time.Second
	be := batontest.StartSlowBackend(t, 30*time.Second)
	slowLoc := [2]string{"location / {", "location /slow { proxy_pass http://127.0.0.1:" + strconv.Itoa(be.Port) + "; proxy_read_timeout 60s; }\n        location / {"}
	conf := func(port, v int) string { return nginxConf(t, port, v, nil, nil, slowLoc) }
	p := startNginxAcc(t, func(port int) string { return conf(port, 1) },
		[]string{"--drain-timeout", drain.String(), "--kill-grace", grace.String()}, batontest.StartOptions{})
	gen1, _ := waitNginxSettled(t, p).Active()

	slow := make(chan batontest.HTTPResult, 1)
	go func() { slow <- batontest.HTTPGet(p.addr, "/slow", 40*time.Second) }()
	if err := be.WaitSlow(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	writeConf(t, p.cfg, conf(p.port, 2))
	p.reload(t)
	acked := time.Now()
	g1 := p.status(t).Gen(gen1)
	if g1 == nil || g1.State != "draining" {
		t.Fatalf("generation %d after the reload: %+v, want draining", gen1, g1)
	}
	pids := g1.Pids
	_, gone := batontest.PollUntil(drain+grace+10*time.Second, 10*time.Millisecond, func() bool { return batontest.AllGone(pids) })
	goneAt := time.Since(acked)
	if !gone {
		t.Fatalf("generation %d (pids %v) still alive %s after the reload (drain %s + grace %s)", gen1, pids, goneAt.Round(time.Millisecond), drain, grace)
	}
	var st batontest.Status
	batontest.Eventually(t, 5*time.Second, func() error {
		if st = p.status(t); st.Gen(gen1) != nil {
			return fmt.Errorf("status still lists generation %d", gen1)
		}
		return nil
	})
	t.Logf("nginx generation %d gone %s after the reload (drain %s, grace %s); counters %v", gen1, goneAt.Round(time.Millisecond), drain, grace, st.Counters)
	compatFigure(t, "held request cut, generation gone %s after the ack (deadline %s + grace %s)", goneAt.Round(100*time.Millisecond), drain, grace)
	if limit := drain + grace + 5*time.Second; goneAt > limit || goneAt < drain-500*time.Millisecond {
		t.Errorf("generation %d gone %s after the reload, want between %s and %s", gen1, goneAt.Round(time.Millisecond), drain, limit)
	}
	if st.Counters["hard_stops"] != 1 {
		t.Errorf("counters.hard_stops = %d, want 1", st.Counters["hard_stops"])
	}
	if p.get(t) != "2" {
		t.Errorf("generation 2 not serving after the old one was stopped")
	}
	select {
	case r := <-slow:
		t.Logf("the request held by the old generation ended with status %d err %v", r.Status, r.Err)
	case <-time.After(10 * time.Second):
		t.Errorf("the request held by the old generation did not end 10 s after it was gone")
	}
}

// TestNginxKeepAliveMinTimeout: nginx 1.27.4+ keeps an idle keep-alive
// connection open through a graceful stop for keepalive_min_timeout, so a
// client's next request within that time is answered (by the old
// generation) instead of lost: a keep-alive storm loses nothing.
func TestNginxKeepAliveMinTimeout(t *testing.T) {
	bin := batontest.RequireBinary(t, "nginx")
	if v := batontest.ProxyVersion(bin); !batontest.VersionAtLeast(v, 1, 27, 4) {
		t.Skipf("nginx %v has no keepalive_min_timeout (1.27.4+)", v)
	}
	target := nginxTarget(t, nil, []string{"keepalive_min_timeout 10s;"})
	o := matrixStorm(stormOpts{target: target, mode: load.KeepAlive, interval: 100 * time.Millisecond, rate: 1500, maxTime: time.Minute})
	r := runStorm(t, o)
	r.report(t, "nginx keep-alive, keepalive_min_timeout 10s")
	r.check(t, o, true)
}
