package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// TestWatchConfigMapUpdates guards README's config watch on a Kubernetes
// ConfigMap volume (docs/design.md's invariant 7: a watch event that leaves the digest
// unchanged does not reload). DIR is laid out by kubelet's atomic writer
// (..TIMESTAMP/haproxy.cfg, ..data -> ..TIMESTAMP, haproxy.cfg ->
// ..data/haproxy.cfg) and haproxy reads DIR/haproxy.cfg. Under new
// connection load, 50 kubelet-style updates, each a new version, are
// interleaved with editor-style writes of the same bytes (touch, in-place
// rewrite, rename-over, swap and probe files, a backup file, a re-created
// visible link). Every version must be served, the watch must reload once
// per version and never for an unchanged digest, without a failed or stale
// request and with one LISTEN socket throughout. Then the key is removed:
// no reload until it is back.
func TestWatchConfigMapUpdates(t *testing.T) {
	batontest.RequireBinary(t, "haproxy")
	port := batontest.FreePort(t)
	dir := filepath.Join(batontest.ShortTempDir(t), "cm")
	files := func(v int) map[string][]byte {
		return map[string][]byte{"haproxy.cfg": []byte(batontest.HAProxyConfig(port, v, nil, nil))}
	}
	cm, err := batontest.NewConfigMapDir(dir, files(1))
	if err != nil {
		t.Fatal(err)
	}
	p := startWatchProxy(t, port, filepath.Join(dir, "haproxy.cfg"), dir)
	st := p.status(t)
	if len(st.Listeners) != 1 {
		t.Fatalf("listeners %+v, want one", st.Listeners)
	}
	listen := accWatchListen(port, st.Listeners[0].Inode)
	lr := startLoad(t, p.addr, load.NewConn, 16, 3*time.Minute, 1500)
	accWait(500 * time.Millisecond)

	const updates = 50
	var acks []load.Ack
	var applyTimes []time.Duration
	editorBursts := 0
	start := time.Now()
	for i := 1; i <= updates; i++ {
		v := i + 1
		before := p.status(t).Watch
		at := time.Now()
		if err := cm.Update(files(v)); err != nil {
			t.Fatal(err)
		}
		after := p.waitWatch(t, 15*time.Second, func(s batontest.WatchedStatus) error {
			w := s.Watch
			if w.Failed > 0 {
				return fmt.Errorf("watch reload failed: %s", w.LastError)
			}
			if w.Applied == before.Applied {
				return fmt.Errorf("version %d not applied yet (watch %+v)", v, *w)
			}
			return nil
		})
		acks = append(acks, load.Ack{At: time.Now(), Version: v})
		applyTimes = append(applyTimes, time.Since(at))
		if got := p.getGen(t); got != fmt.Sprint(v) {
			t.Fatalf("update %d: the watch applied it but a new connection got X-Gen %q, want %d", i, got, v)
		}
		if i%3 == 0 {
			editorWrites(t, p, cm, after.Watch)
			editorBursts++
		}
	}
	storm := time.Since(start)
	accWait(500 * time.Millisecond) // load on after the last update
	res := lr.stop(t)
	samples, bad := listen.end()
	final := p.status(t)
	w := final.Watch

	served := map[string]int{}
	for _, s := range res.Samples {
		if s.Class == load.OK {
			served[s.Gen]++
		}
	}
	var missing []int
	for v := 1; v <= updates+1; v++ {
		if served[fmt.Sprint(v)] == 0 {
			missing = append(missing, v)
		}
	}
	stale := load.Stale(res.Samples, acks, parseGen)
	sort.Slice(applyTimes, func(i, j int) bool { return applyTimes[i] < applyTimes[j] })
	gen, _ := final.Active()
	t.Logf("%d ConfigMap updates and %d editor bursts in %s; update to applied: median %s, max %s",
		updates, editorBursts, storm.Round(time.Millisecond), applyTimes[len(applyTimes)/2].Round(time.Millisecond), applyTimes[len(applyTimes)-1].Round(time.Millisecond))
	t.Logf("watch: events %d, unchanged checks %d, reloads %d, failed %d; counters %v; active generation %d",
		w.Events, w.Unchanged, w.Reloads, w.Failed, final.Counters, gen)
	t.Logf("load: %s; versions served %d of %d; stale %d; LISTEN samples %d, bad %d", res.Summary(), len(served), updates+1, len(stale), samples, len(bad))

	if w.Reloads != updates || w.Failed != 0 {
		t.Errorf("the watch asked for %d reloads (%d failed) for %d new versions: want exactly one reload per distinct digest", w.Reloads, w.Failed, updates)
	}
	if final.Counters["reloads_ok"] != updates {
		t.Errorf("reloads_ok %d, want %d", final.Counters["reloads_ok"], updates)
	}
	if w.Unchanged == 0 {
		t.Errorf("no unchanged check: the editor-style writes were not seen (events %d)", w.Events)
	}
	if len(missing) > 0 {
		t.Errorf("versions never served: %v", missing)
	}
	if res.Failed != 0 {
		t.Errorf("%d failed requests, first: %v", res.Failed, res.Failures(5))
	}
	if len(stale) > 0 {
		t.Errorf("%d stale answers (a connection dialed after the watch applied a version answered by an older one), first: %v", len(stale), stale[0])
	}
	if len(bad) > 0 {
		t.Errorf("%d of %d samples without exactly baton's one LISTEN socket, first: %s", len(bad), samples, bad[0])
	}
	// The volume is watched as a whole: the key holding haproxy's -f file
	// removed is a missing file, not an empty configuration to reload.
	removeKeyNoReload(t, p, cm, files(updates+2), updates+2)
}

// editorWrites rewrites the current config with its own bytes in every way
// editors and config tools do, then waits until the watch has checked it
// (its unchanged count grew). prev is the watch as the last update left it.
func editorWrites(t *testing.T, p *watchProxy, cm *batontest.ConfigMapDir, prev *batontest.WatchView) {
	t.Helper()
	// The in-place rewrite below makes the real file empty for an instant,
	// and it lives in the timestamped directory, which the watch does not
	// see: do it only when no check is due, like a person editing a file
	// well after the last update.
	quiet := p.waitWatch(t, 10*time.Second, func(s batontest.WatchedStatus) error {
		if at := s.Watch.LastEventAt; at != nil && time.Since(*at) < 450*time.Millisecond {
			return errors.New("a check may still be due")
		}
		return nil
	}).Watch
	if quiet.Reloads != prev.Reloads {
		t.Fatalf("reloads went from %d to %d without a new version", prev.Reloads, quiet.Reloads)
	}
	link := filepath.Join(cm.Dir, "haproxy.cfg")
	real := filepath.Join(cm.DataDir(), "haproxy.cfg")
	data, err := os.ReadFile(link)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	steps := []struct {
		what string
		do   func() error
	}{
		{"touch through the link", func() error { return os.Chtimes(link, now, now) }},
		{"touch the link itself", func() error {
			ts := []unix.Timespec{unix.NsecToTimespec(now.UnixNano()), unix.NsecToTimespec(now.UnixNano())}
			return unix.UtimesNanoAt(unix.AT_FDCWD, link, ts, unix.AT_SYMLINK_NOFOLLOW)
		}},
		{"truncate and write the real file", func() error { return rewriteInPlace(real, data) }},
		{"write a temp file and rename it over the real file", func() error {
			return batontest.WriteFileAtomic(real, data)
		}},
		{"vim swap file", func() error {
			return os.WriteFile(filepath.Join(cm.Dir, ".haproxy.cfg.swp"), []byte("b0VIM 9.0"), 0o600)
		}},
		{"vim write probe 4913", func() error {
			probe := filepath.Join(cm.Dir, "4913")
			if err := os.WriteFile(probe, nil, 0o644); err != nil {
				return err
			}
			return os.Remove(probe)
		}},
		{"backup file", func() error { return os.WriteFile(filepath.Join(cm.Dir, "haproxy.cfg~"), []byte("old\n"), 0o644) }},
		{"re-create the visible link", func() error {
			tmp := filepath.Join(cm.Dir, ".haproxy.cfg.lnk")
			if err := os.Symlink(filepath.Join("..data", "haproxy.cfg"), tmp); err != nil {
				return err
			}
			return os.Rename(tmp, link)
		}},
		{"remove the swap file", func() error { return os.Remove(filepath.Join(cm.Dir, ".haproxy.cfg.swp")) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("editor write %q: %v", s.what, err)
		}
	}
	checked := p.waitWatch(t, 10*time.Second, func(s batontest.WatchedStatus) error {
		if s.Watch.Unchanged <= quiet.Unchanged {
			return fmt.Errorf("no unchanged check after the editor writes (watch %+v)", *s.Watch)
		}
		return nil
	}).Watch
	if checked.Reloads != prev.Reloads {
		t.Fatalf("editor writes of the same bytes made the watch reload: reloads %d -> %d", prev.Reloads, checked.Reloads)
	}
}

// TestWatchConfigMapFileLink: `--watch DIR/haproxy.cfg` on a ConfigMap
// volume watches a visible link whose target is swapped with ..data; the
// watch must follow it (the file's directory is watched, the digest reads
// through the links). A log file beside it, written every millisecond, must
// not matter: its events are not counted and start no check, so an update
// applies as fast as when idle (both figures logged; asserted: one reload
// per update and no extra check). Removing the key reloads nothing.
func TestWatchConfigMapFileLink(t *testing.T) {
	batontest.RequireBinary(t, "haproxy")
	port := batontest.FreePort(t)
	dir := filepath.Join(batontest.ShortTempDir(t), "cm")
	files := func(v int) map[string][]byte {
		return map[string][]byte{"haproxy.cfg": []byte(batontest.HAProxyConfig(port, v, nil, nil))}
	}
	cm, err := batontest.NewConfigMapDir(dir, files(1))
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	p := startWatchProxy(t, port, cfg, cfg)
	const updates = 5
	v := 1
	phase := func() (times []time.Duration, events, unchanged int) {
		before := p.status(t).Watch
		for range updates {
			v++
			times = append(times, applyUpdate(t, p, cm, files(v), v))
		}
		after := p.status(t).Watch
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		return times, after.Events - before.Events, after.Unchanged - before.Unchanged
	}
	idle, idleEvents, idleUnchanged := phase()
	stopWriter := busyLog(t, filepath.Join(dir, "access.log"))
	busy, busyEvents, busyUnchanged := phase()
	written := stopWriter()
	w := p.status(t).Watch
	t.Logf("update to applied, idle: median %.1f ms, max %.1f ms; with a log line every ms beside the file (%d lines): median %.1f ms, max %.1f ms",
		ms(idle[updates/2]), ms(idle[updates-1]), written, ms(busy[updates/2]), ms(busy[updates-1]))
	t.Logf("events counted idle %d, busy %d; unchanged checks idle %d, busy %d; watch reloads %d, failed %d", idleEvents, busyEvents, idleUnchanged, busyUnchanged, w.Reloads, w.Failed)
	if w.Reloads != 2*updates || w.Failed != 0 {
		t.Errorf("watch reloads %d (failed %d) for %d updates, want one each", w.Reloads, w.Failed, 2*updates)
	}
	if busyUnchanged > idleUnchanged || busyEvents > idleEvents+updates {
		t.Errorf("with the log file written: %d events counted and %d unchanged checks, idle %d and %d: the log file's events were counted", busyEvents, busyUnchanged, idleEvents, idleUnchanged)
	}
	if written < 100 {
		t.Errorf("the log writer wrote %d lines: the busy phase was not busy", written)
	}
	removeKeyNoReload(t, p, cm, files(v+1), v+1)
}

// applyUpdate switches the volume to files, version v, and waits until the
// watch applied it and a new connection gets v; it returns the time from
// the update to the watch's applied digest.
func applyUpdate(t *testing.T, p *watchProxy, cm *batontest.ConfigMapDir, files map[string][]byte, v int) time.Duration {
	t.Helper()
	before := p.status(t).Watch
	at := time.Now()
	if err := cm.Update(files); err != nil {
		t.Fatal(err)
	}
	p.waitWatch(t, 15*time.Second, func(s batontest.WatchedStatus) error {
		if s.Watch.Failed > 0 {
			return fmt.Errorf("watch reload failed: %s", s.Watch.LastError)
		}
		if s.Watch.Applied == before.Applied {
			return fmt.Errorf("version %d not applied yet (watch %+v)", v, *s.Watch)
		}
		return nil
	})
	took := time.Since(at)
	p.waitServed(t, 15*time.Second, v)
	return took
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// busyLog appends a line to path about every millisecond (at most 30,000
// lines, 60 s) from the moment it returns until the returned stop is
// called, which returns the number of lines written.
func busyLog(t *testing.T, path string) (stop func() int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	done, result := make(chan struct{}), make(chan int, 1)
	first := make(chan struct{})
	go func() {
		defer f.Close()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		end := time.Now().Add(60 * time.Second)
		n := 0
		for n < 30000 && time.Now().Before(end) {
			select {
			case <-done:
				result <- n
				return
			case <-tick.C:
			}
			fmt.Fprintf(f, "127.0.0.1 GET / 200 line %d\n", n)
			if n++; n == 1 {
				close(first)
			}
		}
		<-done
		result <- n
	}()
	<-first
	var once sync.Once
	n := 0
	stop = func() int {
		once.Do(func() {
			close(done)
			n = <-result
		})
		return n
	}
	t.Cleanup(func() { stop() })
	return stop
}

// removeKeyNoReload removes haproxy.cfg from the volume the way kubelet does
// (a ..data swap to a directory without it, then its visible link removed):
// the watch must see it missing, say so once at WARN and not reload (the
// active generation stays); the key back with version v applies as usual.
func removeKeyNoReload(t *testing.T, p *watchProxy, cm *batontest.ConfigMapDir, back map[string][]byte, v int) {
	t.Helper()
	before := p.status(t)
	gen, _ := before.Active()
	if err := cm.Update(map[string][]byte{"other.cfg": []byte("# another key\n")}); err != nil {
		t.Fatal(err)
	}
	p.waitWatch(t, 10*time.Second, func(s batontest.WatchedStatus) error {
		if !strings.Contains(s.Watch.Waiting, "haproxy.cfg is missing") {
			return fmt.Errorf("the watch does not report the key missing yet (watch %+v)", *s.Watch)
		}
		return nil
	})
	accWait(time.Second) // room for a reload that should not come
	after := p.status(t)
	agen, _ := after.Active()
	warned := strings.Count(p.b.Log(), "watched file missing: no reload until it is back")
	t.Logf("key removed: active generation %d -> %d, watch reloads %d -> %d, reloads_ok %d -> %d, failed %d -> %d; WARN lines %d; waiting %q",
		gen, agen, before.Watch.Reloads, after.Watch.Reloads, before.Counters["reloads_ok"], after.Counters["reloads_ok"],
		before.Counters["reloads_failed"], after.Counters["reloads_failed"], warned, after.Watch.Waiting)
	if agen != gen || after.Watch.Reloads != before.Watch.Reloads || after.Counters["reloads_ok"] != before.Counters["reloads_ok"] || after.Counters["reloads_failed"] != before.Counters["reloads_failed"] {
		t.Errorf("removing the key reloaded: generation %d -> %d", gen, agen)
	}
	if warned != 1 {
		t.Errorf("%d WARN lines about the missing key, want 1", warned)
	}
	if got := p.getGen(t); got != fmt.Sprint(v-1) {
		t.Errorf("after the key was removed a new connection got X-Gen %q, want %d", got, v-1)
	}
	applyUpdate(t, p, cm, back, v)
}
