package integration

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestWatchEventStorm guards README's debounce: 1,000 rename-over writes
// of the watched file within about a second (all but the last three with
// the bytes already served, the last three each a new version) give a
// handful of checks and at most a few reloads, and the last version ends
// up served.
func TestWatchEventStorm(t *testing.T) {
	batontest.RequireBinary(t, "haproxy")
	port := batontest.FreePort(t)
	cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
	config := func(v int) []byte { return []byte(batontest.HAProxyConfig(port, v, nil, nil)) }
	if err := batontest.WriteFileAtomic(cfg, config(1)); err != nil {
		t.Fatal(err)
	}
	p := startWatchProxy(t, port, cfg, cfg)
	before := p.status(t).Watch

	const writes, distinct = 1000, 3
	last := 1 + distinct
	tick := time.NewTicker(time.Millisecond)
	start := time.Now()
	for i := range writes {
		<-tick.C
		v := 1
		if k := i - (writes - distinct); k >= 0 {
			v = 2 + k
		}
		if err := batontest.WriteFileAtomic(cfg, config(v)); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	took := time.Since(start)
	p.waitServed(t, 15*time.Second, last)
	servedAfter := time.Since(start)
	// Give a late check (one more quiet period) the chance to show itself.
	accWait(time.Second)
	st := p.status(t)
	w := st.Watch
	gen, _ := st.Active()
	t.Logf("%d writes in %s; version %d served %s after the first write; watch: events %d, unchanged checks %d, reloads %d, failed %d; active generation %d",
		writes, took.Round(time.Millisecond), last, servedAfter.Round(time.Millisecond),
		w.Events-before.Events, w.Unchanged-before.Unchanged, w.Reloads-before.Reloads, w.Failed, gen)
	if w.Events-before.Events < writes {
		t.Errorf("only %d events for %d writes: the storm did not reach the watch", w.Events-before.Events, writes)
	}
	if n := w.Reloads - before.Reloads; n < 1 || n > 3 {
		t.Errorf("%d reloads for one storm, want 1 to 3", n)
	}
	if w.Failed != 0 {
		t.Errorf("%d failed watch reloads: %s", w.Failed, w.LastError)
	}
	if got := p.getGen(t); got != fmt.Sprint(last) {
		t.Errorf("X-Gen %q after the storm, want %d", got, last)
	}
}
