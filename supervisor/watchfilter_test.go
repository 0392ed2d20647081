package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
)

// configMapVolume lays dir out like a kubelet ConfigMap volume holding
// haproxy.cfg (..TS/haproxy.cfg, ..data -> ..TS, haproxy.cfg ->
// ..data/haproxy.cfg) and returns the real file.
func configMapVolume(t *testing.T, dir, text string) string {
	t.Helper()
	ts := "..2026_12_05_00_00_00.000000001"
	real := filepath.Join(dir, ts, "haproxy.cfg")
	if err := os.Mkdir(filepath.Dir(real), 0o755); err != nil {
		t.Fatal(err)
	}
	watchWrite(t, real, text)
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/haproxy.cfg", filepath.Join(dir, "haproxy.cfg")); err != nil {
		t.Fatal(err)
	}
	return real
}

// Events count only where they can change the watched content: a watched
// file's own name, the ..data swap beside it and the real file behind its
// links; below a watched directory, everything but editors' noise.
func TestWatchFilter(t *testing.T) {
	dir := t.TempDir()
	cm := filepath.Join(dir, "cm")
	if err := os.Mkdir(cm, 0o755); err != nil {
		t.Fatal(err)
	}
	real := configMapVolume(t, cm, "v1\n")
	plain := filepath.Join(dir, "etc")
	if err := os.MkdirAll(filepath.Join(plain, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	watchWrite(t, filepath.Join(plain, "haproxy.cfg"), "v1\n")
	cases := []struct {
		what  string
		paths []string
		name  string
		want  bool
	}{
		{"the watched file", []string{filepath.Join(plain, "haproxy.cfg")}, filepath.Join(plain, "haproxy.cfg"), true},
		{"a log file beside it", []string{filepath.Join(plain, "haproxy.cfg")}, filepath.Join(plain, "access.log"), false},
		{"an editor's swap file beside it", []string{filepath.Join(plain, "haproxy.cfg")}, filepath.Join(plain, ".haproxy.cfg.swp"), false},
		{"a file in a subdirectory beside it", []string{filepath.Join(plain, "haproxy.cfg")}, filepath.Join(plain, "conf.d", "x.cfg"), false},
		{"the ConfigMap's visible link", []string{filepath.Join(cm, "haproxy.cfg")}, filepath.Join(cm, "haproxy.cfg"), true},
		{"the ..data swap", []string{filepath.Join(cm, "haproxy.cfg")}, filepath.Join(cm, "..data"), true},
		{"kubelet's ..data_tmp", []string{filepath.Join(cm, "haproxy.cfg")}, filepath.Join(cm, "..data_tmp"), false},
		{"the real file behind the links", []string{filepath.Join(cm, "haproxy.cfg")}, real, true},
		{"another key of the ConfigMap", []string{filepath.Join(cm, "haproxy.cfg")}, filepath.Join(cm, "other.cfg"), false},
		{"a file in the watched directory", []string{plain}, filepath.Join(plain, "haproxy.cfg"), true},
		{"a new file in its subdirectory", []string{plain}, filepath.Join(plain, "conf.d", "new.cfg"), true},
		{"the watched directory itself", []string{plain}, plain, true},
		{"a swap file in it", []string{plain}, filepath.Join(plain, ".haproxy.cfg.swp"), false},
		{"a backup file in it", []string{plain}, filepath.Join(plain, "haproxy.cfg~"), false},
		{"a temporary file in it", []string{plain}, filepath.Join(plain, "conf.d", "x.cfg.tmp"), false},
		{"vim's probe in it", []string{plain}, filepath.Join(plain, "4913"), false},
		{"a file in a hidden directory in it", []string{plain}, filepath.Join(plain, ".git", "index"), false},
		{"another directory beside it", []string{plain}, filepath.Join(dir, "var", "x.log"), false},
		{"the ..data swap in a watched volume", []string{cm}, filepath.Join(cm, "..data"), true},
		{"the real file in a watched volume", []string{cm}, real, true},
	}
	for _, c := range cases {
		if got := newWatchFilter(c.paths).counts(c.name); got != c.want {
			t.Errorf("%s: watching %v, an event on %s counts %v, want %v", c.what, c.paths, c.name, got, c.want)
		}
	}
}

// A log file written every millisecond beside the watched file (bounded:
// 1,500 lines, 3 s) is not the watch's business: its events are not
// counted and start no check, so a change of the watched file is checked
// once, after the usual quiet period, and reloads once.
func TestWatcherRunIgnoresBusyNeighbour(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	watchWrite(t, cfg, "v1\n")
	w, f := newTestWatcher(t, cfg)
	w.quiet, w.within = 100*time.Millisecond, 2*time.Second
	runTestWatcher(t, w)

	logf, err := os.OpenFile(filepath.Join(dir, "access.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	lines, changedAt, reloadedAt := 0, time.Time{}, time.Duration(0)
	for lines < 1500 && time.Since(start) < 3*time.Second {
		<-tick.C
		if _, err := fmt.Fprintf(logf, "line %d\n", lines); err != nil {
			t.Fatal(err)
		}
		lines++
		if lines == 300 {
			watchWrite(t, cfg, "v2\n")
			changedAt = time.Now()
		}
		if !changedAt.IsZero() && reloadedAt == 0 && f.count() > 0 {
			reloadedAt = time.Since(changedAt)
		}
	}
	waitFor(t, shortWait, "the reload", func() bool { return f.count() > 0 })
	if reloadedAt == 0 {
		reloadedAt = time.Since(changedAt)
	}
	st := w.Status()
	t.Logf("%d log lines in %s beside the watched file; change to reload %.1f ms (quiet period %s); events counted %d, unchanged checks %d, reloads %d",
		lines, time.Since(start).Round(time.Millisecond), float64(reloadedAt.Microseconds())/1000, w.quiet, st.Events, st.Unchanged, st.Reloads)
	if st.Reloads != 1 || f.count() != 1 || st.Unchanged != 0 {
		t.Errorf("reloads %d (calls %d), unchanged checks %d: want one reload and no other check", st.Reloads, f.count(), st.Unchanged)
	}
	if st.Events > 10 {
		t.Errorf("%d events counted for one rename-over write of the watched file: the log file's were counted", st.Events)
	}
}

// A watched file that goes missing (a ConfigMap key removed) does not
// reload, and says so once at WARN however many checks find it missing;
// back with the applied content it does not reload either, back with new
// content it does.
func TestWatcherMissingFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	watchWrite(t, cfg, "v1\n")
	w, f := newTestWatcher(t, cfg)
	log, logs := testLogger(t)
	w.log = log.With(zap.String("component", "watch"))
	ctx := context.Background()
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		w.check(ctx)
	}
	st := w.Status()
	warned := logs.FilterMessage("watched file missing: no reload until it is back").Len()
	if f.count() != 0 || st.Reloads != 0 || st.Waiting == "" || warned != 1 {
		t.Errorf("file removed, 3 checks: %d reloads, waiting %q, %d WARN lines; want none, a reason, one", f.count(), st.Waiting, warned)
	}
	watchWrite(t, cfg, "v1\n")
	w.check(ctx)
	if st := w.Status(); f.count() != 0 || st.Waiting != "" || st.Unchanged != 1 {
		t.Errorf("back with the applied content: %d reloads, waiting %q, unchanged %d; want none, none, 1", f.count(), st.Waiting, st.Unchanged)
	}
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	w.check(ctx)
	watchWrite(t, cfg, "v2\n")
	w.check(ctx)
	if f.count() != 1 {
		t.Errorf("back with new content: %d reloads, want 1", f.count())
	}
	if n := logs.FilterMessage("watched file missing: no reload until it is back").Len(); n != 2 {
		t.Errorf("%d WARN lines for two absences, want 2", n)
	}
}

// In a watched directory, the proxy's own config file missing (the
// ConfigMap key removed from a volume watched as a whole) holds reloads
// back like a missing watched file; another file's removal is a change.
func TestWatcherRequiredFileInDirectory(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "haproxy.cfg")
	extra := filepath.Join(dir, "extra.cfg")
	watchWrite(t, cfg, "v1\n")
	watchWrite(t, extra, "x\n")
	w, f := newTestWatcher(t, dir)
	w.require([]string{cfg, "/elsewhere/haproxy.cfg"})
	if len(w.required) != 1 {
		t.Fatalf("required %v, want only %s (inside the watched directory)", w.required, cfg)
	}
	ctx := context.Background()
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	w.check(ctx)
	if st := w.Status(); f.count() != 0 || st.Waiting == "" {
		t.Errorf("the proxy's config removed from the watched directory: %d reloads, waiting %q; want none and a reason", f.count(), st.Waiting)
	}
	watchWrite(t, cfg, "v1\n")
	if err := os.Remove(extra); err != nil {
		t.Fatal(err)
	}
	w.check(ctx)
	if f.count() != 1 {
		t.Errorf("another file removed from the watched directory: %d reloads, want 1", f.count())
	}
}
