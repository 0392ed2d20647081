package supervisor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"

	"github.com/batonproxy/baton/api"
)

// watcher reloads when the watched files change. It watches their parent
// directories (a file replaced by rename, or a Kubernetes ConfigMap whose
// ..data symlink is swapped, is then seen), waits for a quiet moment, and
// compares a digest of every watched file's content with the last applied
// and the last attempted one: nothing new, no reload.
type watcher struct {
	paths  []string
	quiet  time.Duration // a burst of events ends after this much quiet
	within time.Duration // ... or at the latest this long after its start
	reload func(context.Context) (api.ReloadResponse, error)
	log    *zap.Logger

	// required are files the proxy reads (the driver's config files) that
	// lie in a watched directory: one missing is like a missing watched
	// file (a ConfigMap key removed), not a change to reload for.
	required []string
	filter   *watchFilter // owned by run

	mu sync.Mutex
	st api.WatchStatus
	// missingWarned is the missing path last logged at WARN ("" when
	// nothing is missing): once per absence.
	missingWarned string
}

func newWatcher(paths []string, reload func(context.Context) (api.ReloadResponse, error), log *zap.Logger) (*watcher, error) {
	w := &watcher{quiet: 200 * time.Millisecond, within: 2 * time.Second, reload: reload, log: log.With(zap.String("component", "watch"))}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Dir(abs)); err != nil {
			return nil, &SettingError{Setting: "WatchPaths", Err: fmt.Errorf("watched path %s: %w", p, err)}
		}
		w.paths = append(w.paths, abs)
	}
	w.st.Paths = w.paths
	d, _, err := digestFiles(w.paths, nil)
	if err != nil {
		return nil, &SettingError{Setting: "WatchPaths", Err: fmt.Errorf("watched paths: %w", err)}
	}
	w.st.Applied, w.st.Attempted = d, d
	return w, nil
}

// Status returns a copy of the watch's state.
func (w *watcher) Status() api.WatchStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.st
	st.Paths = append([]string(nil), w.st.Paths...)
	return st
}

// require adds the files the proxy reads that lie in a watched directory
// to the files whose absence holds reloads back (a directory watch on a
// ConfigMap volume whose key holding the proxy's config was removed).
// Called before run.
func (w *watcher) require(files []string) {
	for _, f := range files {
		for _, p := range w.paths {
			if strings.HasPrefix(f, p+"/") {
				w.required = append(w.required, f)
				break
			}
		}
	}
}

// digest is the digest of the watched files now ("" if one is missing).
func (w *watcher) digest() string {
	d, _, err := digestFiles(w.paths, w.required)
	if err != nil {
		return ""
	}
	return d
}

// applied records the digest a successful reload loaded (whoever asked for
// it). A failure recorded for other content is history then.
func (w *watcher) applied(d string) {
	if d == "" {
		return
	}
	w.mu.Lock()
	w.st.Applied = d
	if d != w.st.Attempted {
		w.st.LastError = ""
	}
	w.mu.Unlock()
}

// run watches until ctx ends. Its owner waits for it.
func (w *watcher) run(ctx context.Context) error {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer fsw.Close()
	watched := map[string]bool{}
	for _, p := range w.paths {
		if err := fsw.Add(filepath.Dir(p)); err != nil {
			return fmt.Errorf("watch %s: %w", filepath.Dir(p), err)
		}
		watched[filepath.Dir(p)] = true
	}
	w.watchMore(fsw, watched)
	w.log.Info("watching", zap.Strings("paths", w.paths))
	var timer *time.Timer
	var timerC <-chan time.Time
	var burst time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return nil
			}
			if !w.filter.counts(ev.Name) {
				continue // another file in a watched file's directory
			}
			w.noteEvent(ev)
			now := time.Now()
			if timerC == nil {
				burst = now
			}
			wait := min(w.quiet, max(burst.Add(w.within).Sub(now), 0))
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			timerC = timer.C
		case err, ok := <-fsw.Errors:
			if !ok {
				return nil
			}
			w.log.Warn("watch error", zap.Error(err)) // e.g. overflow: the next check reads the files anyway
		case <-timerC:
			timerC = nil
			w.watchMore(fsw, watched) // directories created or links retargeted meanwhile
			w.check(ctx)
		}
	}
}

// watchMore adds inotify watches for every directory the digest reads from:
// a watched directory and its visible subdirectories, and the directories
// symlinks lead to (an edit of a ConfigMap's file behind ..data, or of a
// file a watched link points to), and rebuilds the event filter from the
// same reading. Watches on removed directories go away by themselves.
func (w *watcher) watchMore(fsw *fsnotify.Watcher, watched map[string]bool) {
	w.filter = newWatchFilter(w.paths)
	var want []string
	for _, p := range w.paths {
		files := []string{p}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			want = append(want, p)
			files, _ = visibleFiles(p, 0)
			want = append(want, visibleDirs(p, 0)...)
		}
		for _, f := range files {
			if real, err := filepath.EvalSymlinks(f); err == nil {
				want = append(want, filepath.Dir(real))
			}
		}
	}
	for _, d := range want {
		if watched[d] {
			continue
		}
		if err := fsw.Add(d); err != nil {
			w.log.Warn("watch", zap.String("dir", d), zap.Error(err))
			continue
		}
		watched[d] = true
	}
}

// visibleDirs lists the visible subdirectories below dir (through links).
func visibleDirs(dir string, depth int) []string {
	if depth > 8 {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if skipName(e.Name()) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			out = append(out, p)
			out = append(out, visibleDirs(p, depth+1)...)
		}
	}
	return out
}

// skipName: hidden entries (a ConfigMap's ..data, reached through the
// visible links) and editors' temporary files.
func skipName(n string) bool {
	if strings.HasPrefix(n, ".") || strings.HasSuffix(n, "~") || strings.HasSuffix(n, ".swp") || strings.HasSuffix(n, ".tmp") {
		return true
	}
	return strings.Trim(n, "0123456789") == "" // vim's 4913 probe
}

func (w *watcher) noteEvent(ev fsnotify.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.st.Events++
	now := time.Now()
	w.st.LastEventAt = &now
}

// check reloads when the watched files differ from both the applied and the
// last attempted content.
func (w *watcher) check(ctx context.Context) {
	d, missing, err := digestFiles(w.paths, w.required)
	w.mu.Lock()
	if err == nil && missing == "" && w.missingWarned != "" {
		w.log.Info("watched file back", zap.String("path", w.missingWarned))
		w.missingWarned = ""
	}
	switch {
	case err != nil:
		w.st.Waiting = "cannot read the watched files: " + err.Error()
		w.log.Info("change not applied", zap.String("why", w.st.Waiting))
		w.mu.Unlock()
		return
	case missing != "":
		// A ConfigMap key removed, or a file between an editor's remove
		// and its re-creation: no reload; once it is back it is compared
		// as usual.
		w.st.Waiting = missing + " is missing; waiting for it to come back"
		if missing != w.missingWarned {
			w.missingWarned = missing
			w.log.Warn("watched file missing: no reload until it is back", zap.String("path", missing))
		}
		w.mu.Unlock()
		return
	case d == w.st.Applied || d == w.st.Attempted:
		w.st.Unchanged++
		w.st.Waiting = ""
		w.mu.Unlock()
		return
	}
	w.st.Waiting = ""
	w.st.Attempted = d
	w.st.Reloads++
	w.mu.Unlock()

	w.log.Info("config changed, reloading", zap.String("digest", d[:12]))
	res, err := w.reload(ctx)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.st.Failed++
		w.st.LastError = err.Error()
		w.log.Error("reload after a config change failed; the serving generation is unchanged", zap.Error(err))
		return
	}
	w.st.LastError = ""
	w.log.Info("reloaded after a config change", zap.Int("gen", res.Generation))
}

// digestFiles hashes the content of every watched path: a file (through
// symlinks), or every visible file below a directory (hidden entries, such
// as a ConfigMap's ..data, are reached through the symlinks that point into
// them; editors' temporary files are skipped). missing names a watched path
// that does not exist, or one of required (files the proxy reads in a
// watched directory) that does not.
func digestFiles(paths, required []string) (digest, missing string, err error) {
	for _, r := range required {
		if _, err := os.Stat(r); errors.Is(err, fs.ErrNotExist) {
			return "", r, nil
		}
	}
	h := sha256.New()
	for _, p := range paths {
		st, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return "", p, nil
		}
		if err != nil {
			return "", "", err
		}
		files := []string{p}
		if st.IsDir() {
			if files, err = visibleFiles(p, 0); err != nil {
				return "", "", err
			}
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if errors.Is(err, fs.ErrNotExist) {
				return "", f, nil
			}
			if err != nil {
				return "", "", err
			}
			fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
			h.Write(data)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), "", nil
}

func visibleFiles(dir string, depth int) ([]string, error) {
	if depth > 8 {
		return nil, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := e.Name()
		if skipName(n) {
			continue
		}
		p := filepath.Join(dir, n)
		st, err := os.Stat(p) // through symlinks
		if err != nil {
			continue // a dangling link, or gone meanwhile
		}
		if st.IsDir() {
			sub, err := visibleFiles(p, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		} else if st.Mode().IsRegular() {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

// restore carries over another baton's watch state (digests and counts).
func (w *watcher) restore(st api.WatchStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	paths := w.st.Paths
	w.st = st
	w.st.Paths = paths
}
