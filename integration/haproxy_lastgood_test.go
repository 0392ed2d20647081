package integration

import (
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestHAProxyCrashReplacementKeepsLastGoodConfig guards that a crash
// of the active generation starts a replacement at once with the last good
// config (docs/design.md, "A reload, step by step" and "Config copies"): a config file edited on disk but not reloaded (here: broken) must
// not take the service down when the serving HAProxy crashes. baton runs
// each generation from a copy of the -f files made before its check, and a
// replacement from the last copy that passed.
func TestHAProxyCrashReplacementKeepsLastGoodConfig(t *testing.T) {
	p := startAccProxy(t, batontest.HAProxyOpts{}, nil, batontest.StartOptions{})
	st := p.status(t)
	gen1, _ := st.Active()
	workers := st.Gen(gen1).Others()
	if len(workers) != 1 {
		t.Fatalf("generation %d: processes %v, want one worker", gen1, st.Gen(gen1).Pids)
	}
	p.write(t, 2, "bogus_keyword on") // edited, not reloaded
	if err := batontest.SignalPids(workers, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took, ok := batontest.PollUntil(5*time.Second, 20*time.Millisecond, func() bool {
		st, err := p.b.Status()
		g, _ := st.Active()
		return err == nil && g > gen1
	})
	r := batontest.HTTPGet(p.addr, "/", 3*time.Second)
	st = p.status(t)
	t.Logf("after kill -9 of the worker with a broken config on disk: replacement active %t after %s; GET: status %d err %v; counters %v; last reload %+v",
		ok, took.Round(time.Millisecond), r.Status, r.Err, st.Counters, st.LastReload)
	if !ok || r.Status != 200 {
		t.Errorf("no generation serves 5 s after the crash: the replacement must use the last good config, not the broken file on disk")
	}
}
