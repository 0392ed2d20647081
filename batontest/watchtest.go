package batontest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// WatchView mirrors the watch section of `baton status --json`.
type WatchView struct {
	Paths       []string   `json:"paths"`
	Applied     string     `json:"applied_digest"`
	Attempted   string     `json:"attempted_digest"`
	Events      int        `json:"events"`
	Unchanged   int        `json:"unchanged"`
	Reloads     int        `json:"reloads"`
	Failed      int        `json:"failed"`
	LastEventAt *time.Time `json:"last_event_at"`
	LastError   string     `json:"last_error"`
	Waiting     string     `json:"waiting"`
}

// WatchedStatus is a Status with the config watch's section (nil when
// baton runs without --watch).
type WatchedStatus struct {
	Status
	Watch *WatchView `json:"watch"`
}

// WatchStatus asks the control API for the status, watch section included.
func (b *Baton) WatchStatus() (WatchedStatus, error) {
	var st WatchedStatus
	body, err := b.getStatus(&st, &st.Status)
	if err == nil && st.Watch == nil {
		err = fmt.Errorf("status has no watch section: %s", body)
	}
	return st, err
}

// ConfigMapDir is a directory laid out like a kubelet ConfigMap volume:
// the files live in a hidden timestamped directory (..2006_01_02_...),
// ..data is a symlink to it, and each visible name is a symlink into
// ..data. Update replaces the content the way kubelet's atomic writer
// does: a new timestamped directory, a ..data_tmp symlink to it renamed
// over ..data (the atomic switch), the visible links, then the old
// directory removed.
type ConfigMapDir struct {
	Dir     string
	current string // the timestamped directory ..data points to (base name)
}

// NewConfigMapDir creates dir (which must not exist yet, its parent must)
// holding files.
func NewConfigMapDir(dir string, files map[string][]byte) (*ConfigMapDir, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	c := &ConfigMapDir{Dir: dir}
	return c, c.Update(files)
}

// DataDir is the timestamped directory that holds the current files.
func (c *ConfigMapDir) DataDir() string { return filepath.Join(c.Dir, c.current) }

// Update switches the volume to files (same names as before, or new ones;
// visible links of names that left are removed).
func (c *ConfigMapDir) Update(files map[string][]byte) error {
	ts, err := os.MkdirTemp(c.Dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(ts, name), files[name], 0o644); err != nil {
			return err
		}
	}
	tmp := filepath.Join(c.Dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(c.Dir, "..data")); err != nil {
		return err
	}
	for _, name := range names {
		link := filepath.Join(c.Dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			return err
		}
	}
	if c.current != "" {
		old, err := os.ReadDir(filepath.Join(c.Dir, c.current))
		if err != nil {
			return err
		}
		for _, e := range old {
			if _, ok := files[e.Name()]; !ok {
				if err := os.Remove(filepath.Join(c.Dir, e.Name())); err != nil && !os.IsNotExist(err) {
					return err
				}
			}
		}
		if err := os.RemoveAll(filepath.Join(c.Dir, c.current)); err != nil {
			return err
		}
	}
	c.current = filepath.Base(ts)
	return nil
}
