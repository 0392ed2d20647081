package supervisor

import (
	"os"
	"path/filepath"
	"strings"
)

// configMapData is the symlink a Kubernetes ConfigMap (or Secret, or
// projected) volume swaps atomically to a new timestamped directory at
// each update; every visible name in the volume is a link through it.
const configMapData = "..data"

// watchFilter tells the events that can change the watched content from
// the others in the same directories (a busy log file beside a watched
// config file): only the former are counted and start a check. It is
// rebuilt whenever the watch re-reads its directories (watchMore), so it
// follows a ..data swap to the new timestamped directory.
//
// For a watched file: events on its own name, on a ..data link beside it
// (the ConfigMap swap), and on the real file its links lead to. For a
// watched directory: events on the directory itself, on a ..data beside
// it, on anything below it except noise (noiseName), and on the real files
// its visible links lead to.
type watchFilter struct {
	names map[string]bool
	dirs  []string // watched directories (and where they lead through links)
}

func newWatchFilter(paths []string) *watchFilter {
	f := &watchFilter{names: map[string]bool{}}
	for _, p := range paths {
		f.names[p] = true
		f.names[filepath.Join(filepath.Dir(p), configMapData)] = true
		files := []string{p}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			f.dirs = append(f.dirs, p)
			if real, err := filepath.EvalSymlinks(p); err == nil && real != p {
				f.dirs = append(f.dirs, real)
			}
			files, _ = visibleFiles(p, 0)
		}
		for _, file := range files {
			if real, err := filepath.EvalSymlinks(file); err == nil {
				f.names[real] = true
			}
		}
	}
	return f
}

// counts reports whether an event on name can change the watched content.
func (f *watchFilter) counts(name string) bool {
	if f.names[name] {
		return true
	}
	for _, d := range f.dirs {
		rel, ok := strings.CutPrefix(name, d+"/")
		if !ok {
			continue
		}
		noise := false
		for _, part := range strings.Split(rel, "/") {
			if noiseName(part) {
				noise = true
				break
			}
		}
		if !noise {
			return true
		}
	}
	return false
}

// noiseName: an entry below a watched directory whose events cannot change
// its digest, being outside it (skipName: hidden entries, editors' swap,
// backup and temporary files, vim's 4913 probe); ..data is not noise, its
// swap is a ConfigMap's update.
func noiseName(n string) bool {
	return n != configMapData && skipName(n)
}
