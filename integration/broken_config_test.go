package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// TestBrokenConfigReload guards docs/design.md's invariant 2 (never worse)
// with HAProxy and nginx: a reload with a config the proxy rejects fails
// with the proxy's own error text (its keyword or directive, file:line) and
// exit status 1, leaves the serving generation untouched and loses no
// request; the fixed config then reloads.
func TestBrokenConfigReload(t *testing.T) {
	eachProxy(t, brokenConfigReload)
}

func brokenConfigReload(t *testing.T, f proxyFixture) {
	p := f.start(t, nil, batontest.StartOptions{})
	before := p.status(t)
	gen1, pid1 := before.Active()
	lr := startLoad(t, p.addr, load.NewConn, 16, 30*time.Second, 1000)
	accWait(time.Second)

	text := f.write(t, p, 2, true)
	where := fmt.Sprintf("%s:%d", p.cfg, lineOf(t, text, f.bogusWord))
	res := p.b.CLI("reload")
	t.Logf("broken reload: exit %d after %s, stderr:\n%s", res.Code, res.Took.Round(time.Millisecond), res.Stderr)
	if res.Code != 1 {
		t.Errorf("baton reload with a broken config: exit %d, want 1", res.Code)
	}
	// No separate check by default: the generation's own start parsed the
	// config, failed, and changed nothing.
	if !strings.Contains(res.Stderr, "exited before it was ready") {
		t.Errorf("stderr of the failed reload does not say the new generation exited before it was ready")
	}
	// The proxy's own words: its rejection line naming the word and file:line.
	if lines := batontest.LogLines(res.Stderr, f.rejection(where)...); len(lines) != 1 {
		t.Errorf("stderr of the failed reload has %d %s lines naming %q and %s, want 1", len(lines), f.alert, f.bogusWord, where)
	}
	// In baton's log: the proxy's rejection at ERROR, and one ERROR line
	// for the failed reload.
	log := p.b.Log()
	if lines := levelLines(log, "ERROR", "proxy output", f.alert, f.bogusWord); len(lines) != 1 {
		t.Errorf("%d ERROR lines with %s %s naming %s, want 1", len(lines), f.says, f.alert, f.bogusWord)
	}
	wantLevel(t, log, "ERROR", 1, "reload failed")
	noStackTraces(t, log)
	after := p.status(t)
	gen, pid := after.Active()
	if gen != gen1 || pid != pid1 {
		t.Errorf("after the failed reload generation %d pid %d is active, want the untouched generation %d pid %d", gen, pid, gen1, pid1)
	}
	if len(after.Generations) != 1 {
		t.Errorf("after the failed reload status lists %d generations, want 1: %+v", len(after.Generations), after.Generations)
	}
	if !batontest.Alive(pid1) {
		t.Errorf("the serving master %d is gone", pid1)
	}
	if after.LastReload == nil || !strings.Contains(after.LastReload.Error, f.bogusWord) {
		t.Errorf("status last_reload = %+v, want the failed reload with %s error", after.LastReload, f.says)
	}
	if n := after.Counters["reloads_failed"]; n != 1 {
		t.Errorf("counters.reloads_failed = %d, want 1", n)
	}
	if f.roles {
		// The processes are labelled: the master baton started, its workers.
		roles := map[string]int{}
		for _, pr := range after.Generations[0].Processes {
			roles[pr.Role]++
			if pr.Role == "master" && pr.Pid != pid1 {
				t.Errorf("process %d labelled master, want the leader %d", pr.Pid, pid1)
			}
		}
		if roles["master"] != 1 || roles["worker"] < 1 || len(roles) != 2 {
			t.Errorf("%s roles %v, want one master and its workers", f.name, roles)
		}
	}
	if g := p.get(t); g != "1" {
		t.Errorf("after the failed reload answers come from config version %q, want 1", g)
	}

	f.write(t, p, 3, false)
	gen3, pid3 := p.reload(t)
	ack := time.Now()
	if gen3 <= gen1 || pid3 == pid1 {
		t.Errorf("fixed reload: generation %d pid %d, want a new one", gen3, pid3)
	}
	accWait(time.Second)
	r := lr.stop(t)
	t.Logf("load through the failed and the fixed reload: %s", r.Summary())
	compatFigure(t, "refused with exit %d in %s, %s %s shown, generation %d kept serving; %d of %d requests failed", res.Code, res.Took.Round(time.Millisecond), f.says, f.alert, gen1, r.Failed, r.Total)
	if r.Failed > 0 {
		t.Errorf("%d failed requests, want 0: %v", r.Failed, r.Failures(5))
	}
	if r.Counts[load.OK] == 0 {
		t.Errorf("no request succeeded")
	}
	if stale := load.Stale(r.Samples, []load.Ack{{At: ack, Version: 3}}, parseGen); len(stale) > 0 {
		t.Errorf("%d answers from the old config on connections made after the fixed reload, first %v", len(stale), stale[0])
	}
	if g := p.get(t); g != "3" {
		t.Errorf("after the fixed reload answers come from config version %q, want 3", g)
	}
	if left := oldGenerationsLeft(t, p.b, 10*time.Second); len(left) > 0 {
		t.Errorf("processes of the replaced generation still alive: %v", left)
	}
}
