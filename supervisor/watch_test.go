package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/batontest"
)

// watchDigest is digestFiles(paths) for a test that expects every path.
func watchDigest(t *testing.T, paths ...string) string {
	t.Helper()
	d, missing, err := digestFiles(paths, nil)
	if err != nil || missing != "" || d == "" {
		t.Fatalf("digestFiles(%v) = %q, missing %q, %v", paths, d, missing, err)
	}
	return d
}

func watchWrite(t *testing.T, path, text string) {
	t.Helper()
	if err := batontest.WriteFileAtomic(path, []byte(text)); err != nil {
		t.Fatal(err)
	}
}

func TestDigestFiles(t *testing.T) {
	t.Run("file content, not metadata", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
		watchWrite(t, cfg, "v1\n")
		d1 := watchDigest(t, cfg)
		// In place, same bytes, new mtime: same digest.
		if err := os.WriteFile(cfg, []byte("v1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Hour)
		if err := os.Chtimes(cfg, later, later); err != nil {
			t.Fatal(err)
		}
		if d := watchDigest(t, cfg); d != d1 {
			t.Errorf("same bytes rewritten and touched: digest %s, was %s", d, d1)
		}
		watchWrite(t, cfg, "v2\n")
		if d := watchDigest(t, cfg); d == d1 {
			t.Errorf("new content, same digest %s", d)
		}
		watchWrite(t, cfg, "v1\n")
		if d := watchDigest(t, cfg); d != d1 {
			t.Errorf("content back to v1: digest %s, want the first one %s", d, d1)
		}
	})

	t.Run("through a symlink", func(t *testing.T) {
		dir := t.TempDir()
		a, b, link := filepath.Join(dir, "a.cfg"), filepath.Join(dir, "b.cfg"), filepath.Join(dir, "haproxy.cfg")
		watchWrite(t, a, "v1\n")
		watchWrite(t, b, "v1\n")
		if err := os.Symlink("a.cfg", link); err != nil {
			t.Fatal(err)
		}
		d1 := watchDigest(t, link)
		// Repointed to another file with the same bytes: unchanged.
		tmp := filepath.Join(dir, "link.tmp")
		if err := os.Symlink("b.cfg", tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, link); err != nil {
			t.Fatal(err)
		}
		if d := watchDigest(t, link); d != d1 {
			t.Errorf("link repointed to identical content: digest %s, was %s", d, d1)
		}
		watchWrite(t, b, "v2\n")
		if d := watchDigest(t, link); d == d1 {
			t.Errorf("the link's target changed, the digest did not")
		}
	})

	t.Run("ConfigMap volume", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "cm")
		files := func(v int) map[string][]byte {
			return map[string][]byte{"haproxy.cfg": fmt.Appendf(nil, "v%d\n", v), "maps.map": []byte("a b\n")}
		}
		cm, err := batontest.NewConfigMapDir(dir, files(1))
		if err != nil {
			t.Fatal(err)
		}
		visible, err := visibleFiles(dir, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "maps.map")}
		if !slices.Equal(visible, want) {
			t.Errorf("visibleFiles = %v, want %v (..data and the timestamped directory are reached through the links only)", visible, want)
		}
		d1 := watchDigest(t, dir)
		if d := watchDigest(t, filepath.Join(dir, "haproxy.cfg"), filepath.Join(dir, "maps.map")); d != d1 {
			t.Errorf("the directory's digest %s differs from its visible files' %s", d1, d)
		}
		old := cm.DataDir()
		if err := cm.Update(files(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(old); !os.IsNotExist(err) {
			t.Fatalf("the old timestamped directory %s is still there: %v", old, err)
		}
		if d := watchDigest(t, dir); d != d1 {
			t.Errorf("..data swapped to identical content: digest %s, was %s", d, d1)
		}
		if err := cm.Update(files(2)); err != nil {
			t.Fatal(err)
		}
		if d := watchDigest(t, dir); d == d1 {
			t.Errorf("..data swapped to new content, same digest")
		}
	})

	t.Run("editor and temporary files skipped", func(t *testing.T) {
		dir := t.TempDir()
		watchWrite(t, filepath.Join(dir, "haproxy.cfg"), "v1\n")
		d1 := watchDigest(t, dir)
		for _, name := range []string{".haproxy.cfg.swp", "haproxy.cfg~", "haproxy.cfg.tmp", ".#haproxy.cfg", ".hidden"} {
			watchWrite(t, filepath.Join(dir, name), "junk\n")
		}
		if err := os.Symlink("nowhere", filepath.Join(dir, "dangling.cfg")); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, ".git"), 0o700); err != nil {
			t.Fatal(err)
		}
		watchWrite(t, filepath.Join(dir, ".git", "HEAD"), "ref\n")
		if d := watchDigest(t, dir); d != d1 {
			t.Errorf("swap, backup, temporary and hidden files and a dangling link changed the digest")
		}
		if err := os.Mkdir(filepath.Join(dir, "conf.d"), 0o700); err != nil {
			t.Fatal(err)
		}
		watchWrite(t, filepath.Join(dir, "conf.d", "x.cfg"), "x\n")
		d2 := watchDigest(t, dir)
		if d2 == d1 {
			t.Errorf("a new file in a visible subdirectory did not change the digest")
		}
	})

	t.Run("missing", func(t *testing.T) {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "haproxy.cfg")
		watchWrite(t, cfg, "v1\n")
		gone := filepath.Join(dir, "gone.cfg")
		for _, paths := range [][]string{{gone}, {cfg, gone}} {
			d, missing, err := digestFiles(paths, nil)
			if d != "" || missing != gone || err != nil {
				t.Errorf("digestFiles(%v) = %q, missing %q, %v; want missing %s", paths, d, missing, err, gone)
			}
		}
		link := filepath.Join(dir, "link.cfg")
		if err := os.Symlink("gone.cfg", link); err != nil {
			t.Fatal(err)
		}
		if d, missing, err := digestFiles([]string{link}, nil); d != "" || missing != link || err != nil {
			t.Errorf("dangling watched link: %q, missing %q, %v; want missing %s", d, missing, err, link)
		}
	})
}

// fakeWatchReload stands for Supervisor.Reload: it counts calls, records
// the digest of the files at each, fails when told to, and on success
// reports the loaded digest back like reloadDone does.
type fakeWatchReload struct {
	mu    sync.Mutex
	w     *watcher
	calls []string // digest of the files at each call
	fail  error
}

func (f *fakeWatchReload) reload(context.Context) (api.ReloadResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.w.digest()
	f.calls = append(f.calls, d)
	if f.fail != nil {
		return api.ReloadResponse{}, f.fail
	}
	f.w.applied(d)
	return api.ReloadResponse{Generation: len(f.calls) + 1}, nil
}

func (f *fakeWatchReload) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

func (f *fakeWatchReload) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeWatchReload) setFail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

func newTestWatcher(t *testing.T, paths ...string) (*watcher, *fakeWatchReload) {
	t.Helper()
	log, _ := testLogger(t)
	f := &fakeWatchReload{}
	w, err := newWatcher(paths, f.reload, log)
	if err != nil {
		t.Fatal(err)
	}
	f.w = w
	return w, f
}

// docs/design.md's invariant 7: a check that finds the applied (or last attempted) digest
// does not reload; a new digest reloads once; a refused one is counted,
// explained, and not retried until the content changes again.
func TestWatcherCheck(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "haproxy.cfg")
	watchWrite(t, cfg, "v1\n")
	w, f := newTestWatcher(t, cfg)
	ctx := context.Background()
	d1 := watchDigest(t, cfg)
	if st := w.Status(); st.Applied != d1 || st.Attempted != d1 {
		t.Fatalf("new watcher: applied %s, attempted %s; want the digest at start %s", st.Applied, st.Attempted, d1)
	}
	step := func(what string, calls int, check func(api.WatchStatus) error) {
		t.Helper()
		w.check(ctx)
		st := w.Status()
		if got := f.count(); got != calls {
			t.Errorf("%s: %d reload calls, want %d (status %+v)", what, got, calls, st)
		}
		if err := check(st); err != nil {
			t.Errorf("%s: %v (status %+v)", what, err, st)
		}
	}
	expect := func(unchanged, reloads, failed int) func(api.WatchStatus) error {
		return func(st api.WatchStatus) error {
			if st.Unchanged != unchanged || st.Reloads != reloads || st.Failed != failed {
				return fmt.Errorf("unchanged %d, reloads %d, failed %d; want %d, %d, %d", st.Unchanged, st.Reloads, st.Failed, unchanged, reloads, failed)
			}
			return nil
		}
	}

	step("nothing changed", 0, expect(1, 0, 0))
	watchWrite(t, cfg, "v2\n")
	d2 := watchDigest(t, cfg)
	step("new content", 1, func(st api.WatchStatus) error {
		if err := expect(1, 1, 0)(st); err != nil {
			return err
		}
		if st.Applied != d2 || st.Attempted != d2 || st.LastError != "" {
			return errors.New("want v2 applied and attempted, no error")
		}
		return nil
	})
	step("checked again", 1, expect(2, 1, 0))

	refused := errors.New("config check failed: unknown keyword 'bogus_keyword'")
	f.setFail(refused)
	watchWrite(t, cfg, "v3 broken\n")
	d3 := watchDigest(t, cfg)
	step("refused content", 2, func(st api.WatchStatus) error {
		if err := expect(2, 2, 1)(st); err != nil {
			return err
		}
		if st.Applied != d2 || st.Attempted != d3 || st.LastError != refused.Error() {
			return errors.New("want v2 still applied, v3 attempted, and the reload's error")
		}
		return nil
	})
	f.setFail(nil)
	step("the same refused content: not retried", 2, expect(3, 2, 1))
	watchWrite(t, cfg, "v2\n")
	step("back to the applied content", 2, expect(4, 2, 1))
	watchWrite(t, cfg, "v4\n")
	step("fixed", 3, func(st api.WatchStatus) error {
		if err := expect(4, 3, 1)(st); err != nil {
			return err
		}
		if st.LastError != "" || st.Applied != watchDigest(t, cfg) {
			return errors.New("want v4 applied and the error cleared")
		}
		return nil
	})

	// An explicit `baton reload` loaded v5 (reloadDone reports it): the
	// watch event that follows has nothing to do.
	watchWrite(t, cfg, "v5\n")
	w.applied(watchDigest(t, cfg))
	step("applied by an explicit reload", 3, expect(5, 3, 1))

	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	step("file missing", 3, func(st api.WatchStatus) error {
		if err := expect(5, 3, 1)(st); err != nil {
			return err
		}
		if !strings.Contains(st.Waiting, "missing") {
			return fmt.Errorf("waiting %q, want why nothing happens", st.Waiting)
		}
		return nil
	})
	watchWrite(t, cfg, "v6\n")
	step("back with new content", 4, func(st api.WatchStatus) error {
		if err := expect(5, 4, 1)(st); err != nil {
			return err
		}
		if st.Waiting != "" {
			return fmt.Errorf("still waiting: %q", st.Waiting)
		}
		return nil
	})
}

// runTestWatcher runs w until the test ends and waits until it watches.
func runTestWatcher(t *testing.T, w *watcher) {
	t.Helper()
	log, logs := testLogger(t)
	w.log = log.With(zap.String("component", "watch"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	waitFor(t, shortWait, "the watch set up", func() bool { return logs.FilterMessage("watching").Len() > 0 })
}

func watchPause(d time.Duration) {
	timer := time.NewTimer(d)
	<-timer.C
}

// README: 1,000 events in a second give a handful of checks and one
// reload. A burst of 200 rename-over writes, each a new version, within
// about 100 ms (shorter than the quiet period) ends in exactly one check,
// which reloads once, for the last version.
func TestWatcherRunDebouncesBurst(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	watchWrite(t, cfg, "v0\n")
	w, f := newTestWatcher(t, cfg)
	w.quiet, w.within = 150*time.Millisecond, 5*time.Second
	runTestWatcher(t, w)

	const writes = 200
	tick := time.NewTicker(500 * time.Microsecond)
	start := time.Now()
	for i := 1; i <= writes; i++ {
		<-tick.C
		watchWrite(t, cfg, fmt.Sprintf("v%d\n", i))
	}
	tick.Stop()
	took := time.Since(start)
	last := watchDigest(t, cfg)
	waitFor(t, shortWait, "a reload", func() bool { return f.count() > 0 })
	watchPause(3 * w.quiet) // room for a second check, if there were one
	st := w.Status()
	t.Logf("%d writes in %s: events %d, unchanged checks %d, reloads %d", writes, took.Round(time.Millisecond), st.Events, st.Unchanged, st.Reloads)
	if f.count() != 1 || st.Reloads != 1 || st.Unchanged != 0 {
		t.Errorf("%d reload calls, status reloads %d, unchanged %d: want exactly one check, which reloads", f.count(), st.Reloads, st.Unchanged)
	}
	if seen := f.seen(); len(seen) > 0 && seen[0] != last {
		t.Errorf("the reload saw digest %s, want the last version's %s", seen[0], last)
	}
	if st.Events < writes {
		t.Errorf("%d events for %d writes", st.Events, writes)
	}
}

// A stream of events that never pauses is still checked, at most `within`
// after the first event of each burst.
func TestWatcherRunChecksWithinBound(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	watchWrite(t, cfg, "v1\n")
	w, f := newTestWatcher(t, cfg)
	w.quiet, w.within = 300*time.Millisecond, 100*time.Millisecond
	runTestWatcher(t, w)

	tick := time.NewTicker(5 * time.Millisecond)
	start := time.Now()
	writes := 0
	for time.Since(start) < time.Second {
		<-tick.C
		watchWrite(t, cfg, "v1\n")
		writes++
	}
	tick.Stop()
	during := w.Status().Unchanged
	watchPause(2 * w.quiet)
	st := w.Status()
	t.Logf("%d same-content writes in %s: events %d, unchanged checks %d during the stream, %d in all; reloads %d",
		writes, time.Since(start).Round(time.Millisecond), st.Events, during, st.Unchanged, st.Reloads)
	if during < 3 {
		t.Errorf("%d checks during a 1 s stream with within=%s: want at least 3", during, w.within)
	}
	if f.count() != 0 || st.Reloads != 0 {
		t.Errorf("%d reloads for unchanged content", f.count())
	}
}

// A watched directory is watched below its top level, and through the links
// in it: an edit in a subdirectory, and an in-place edit of the real file
// behind a ConfigMap's ..data link, both reload.
func TestWatcherSeesSubdirectoriesAndLinkTargets(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "..2026_11_23_00_00_00.000000001", "haproxy.cfg")
	for _, d := range []string{filepath.Join(dir, "conf.d"), filepath.Dir(real)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	watchWrite(t, filepath.Join(dir, "conf.d", "x.cfg"), "x0\n")
	watchWrite(t, real, "h0\n")
	if err := os.Symlink("..2026_11_23_00_00_00.000000001", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/haproxy.cfg", filepath.Join(dir, "haproxy.cfg")); err != nil {
		t.Fatal(err)
	}
	w, f := newTestWatcher(t, dir)
	w.quiet, w.within = 50*time.Millisecond, time.Second
	runTestWatcher(t, w)
	for i, edit := range []struct{ path, text string }{
		{filepath.Join(dir, "conf.d", "x.cfg"), "x1\n"},
		{real, "h1\n"}, // in place, behind the link
	} {
		if err := os.WriteFile(edit.path, []byte(edit.text), 0o644); err != nil {
			t.Fatal(err)
		}
		waitFor(t, shortWait, fmt.Sprintf("reload %d after editing %s", i+1, edit.path), func() bool { return f.count() == i+1 })
	}
}
