package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// TestNginxBrokenConfigReload guards docs/design.md's invariant 2 (never worse) with nginx: a
// reload with a config nginx rejects fails with nginx's own error text
// (directive, file:line) and exit status 1, leaves the serving generation
// untouched and loses no request; the fixed config then reloads.
func TestNginxBrokenConfigReload(t *testing.T) {
	p := startNginxAcc(t, func(port int) string { return nginxConf(t, port, 1, nil, nil) }, nil, batontest.StartOptions{})
	before := p.status(t)
	gen1, pid1 := before.Active()
	lr := startLoad(t, p.addr, load.NewConn, 16, 30*time.Second, 1000)
	accWait(time.Second)

	text := nginxConf(t, p.port, 2, nil, []string{"bogus_directive on;"})
	writeConf(t, p.cfg, text)
	where := fmt.Sprintf("%s:%d", p.cfg, lineOf(t, text, "bogus_directive"))
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
	// nginx's own words: [emerg] unknown directive "bogus_directive" in FILE:LINE.
	if lines := batontest.LogLines(res.Stderr, "[emerg]", `unknown directive "bogus_directive" in `+where); len(lines) != 1 {
		t.Errorf("stderr of the failed reload has %d [emerg] lines naming \"bogus_directive\" and %s, want 1", len(lines), where)
	}
	// In baton's log: nginx's [emerg] at ERROR.
	if lines := levelLines(p.b.Log(), "ERROR", "proxy output", "[emerg]", "bogus_directive"); len(lines) != 1 {
		t.Errorf("%d ERROR lines with nginx's [emerg] naming bogus_directive, want 1", len(lines))
	}
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
	if after.LastReload == nil || !strings.Contains(after.LastReload.Error, "bogus_directive") {
		t.Errorf("status last_reload = %+v, want the failed reload with nginx's error", after.LastReload)
	}
	if n := after.Counters["reloads_failed"]; n != 1 {
		t.Errorf("counters.reloads_failed = %d, want 1", n)
	}
	// The processes are labelled: the master baton started, its workers.
	roles := map[string]int{}
	for _, pr := range after.Generations[0].Processes {
		roles[pr.Role]++
		if pr.Role == "master" && pr.Pid != pid1 {
			t.Errorf("process %d labelled master, want the leader %d", pr.Pid, pid1)
		}
	}
	if roles["master"] != 1 || roles["worker"] < 1 || len(roles) != 2 {
		t.Errorf("nginx roles %v, want one master and its workers", roles)
	}
	if g := p.get(t); g != "1" {
		t.Errorf("after the failed reload answers come from config version %q, want 1", g)
	}

	writeConf(t, p.cfg, nginxConf(t, p.port, 3, nil, nil))
	gen3, pid3 := p.reload(t)
	ack := time.Now()
	if gen3 <= gen1 || pid3 == pid1 {
		t.Errorf("fixed reload: generation %d pid %d, want a new one", gen3, pid3)
	}
	accWait(time.Second)
	r := lr.stop(t)
	t.Logf("load through the failed and the fixed reload: %s", r.Summary())
	compatFigure(t, "refused with exit %d in %s, nginx's [emerg] shown, generation %d kept serving; %d of %d requests failed", res.Code, res.Took.Round(time.Millisecond), gen1, r.Failed, r.Total)
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
