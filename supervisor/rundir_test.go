package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// TestPrecreatedRunDirRefused guards the pre-created CONTROL.d incident
// and `--control /etc/nginx/conf` (which must not delete conf.d): a run
// directory baton did not create is refused, with the fix, and left
// exactly as it was, whether another uid owns it or baton's uid does
// (without baton's marker, or open to others, or a link).
func TestPrecreatedRunDirRefused(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	mkdir := func(name string, mode os.FileMode, uid int) string {
		t.Helper()
		p := filepath.Join(base, name)
		must(t, os.Mkdir(p, mode))
		must(t, os.Chmod(p, mode))
		must(t, os.Chown(p, uid, -1))
		must(t, os.WriteFile(filepath.Join(p, "keep.conf"), []byte("user data"), 0o644))
		return p
	}
	markerOf := func(dir string) {
		must(t, os.WriteFile(filepath.Join(dir, runMarker), []byte(strings.Repeat("ab", keyLen)+"\n"), 0o600))
	}
	foreign := mkdir("foreign.d", 0o700, 65534)
	markerOf(foreign) // even with a marker: not baton's uid
	confd := mkdir("conf.d", 0o755, 0)
	closed := mkdir("closed.d", 0o700, 0)
	open := mkdir("open.d", 0o700, 0)
	markerOf(open)
	must(t, os.Chmod(open, 0o770))
	must(t, os.Symlink(confd, filepath.Join(base, "link.d")))
	cases := []struct {
		path string
		want string
	}{
		{foreign, "owned by uid 65534"},
		{confd, "has mode 0755"},
		{closed, "no baton created it"},
		{open, "has mode 0770"},
		{filepath.Join(base, "link.d"), "symbolic link"},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.path), func(t *testing.T) {
			_, err := OpenRunDir(c.path, false)
			if err == nil || !errors.Is(err, ErrUntrustedPath) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("OpenRunDir: %v, want an ErrUntrustedPath saying %q", err, c.want)
			}
			t.Logf("%v", err)
			for _, w := range []string{"rm -r " + c.path, "choose another --control path"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks the fix %q", w)
				}
			}
			if b, err := os.ReadFile(filepath.Join(c.path, "keep.conf")); err != nil || string(b) != "user data" {
				t.Errorf("the directory's content changed: %q, %v", b, err)
			}
			if _, err := os.Lstat(filepath.Join(c.path, runMarker)); c.path == closed && !os.IsNotExist(err) {
				t.Errorf("a marker was written into a refused directory")
			}
		})
	}
	t.Run("New", func(t *testing.T) {
		// The supervisor refuses to start on it, and removes nothing.
		_, err := New(Config{Command: []string{"/bin/true"}, Driver: newFakeDriver("/bin/true", ""), Listeners: &ListenerSet{},
			RunDir: confd}, Deps{Log: zap.NewNop()})
		if !errors.Is(err, ErrUntrustedPath) {
			t.Fatalf("New on a pre-existing directory: %v, want ErrUntrustedPath", err)
		}
		if _, err := os.Stat(filepath.Join(confd, "keep.conf")); err != nil {
			t.Errorf("conf.d lost its content: %v", err)
		}
	})
}

// TestRunDirCreatedAndRemoved: a run directory baton creates is 0700 with
// the marker; a later baton (after a crash) opens it with the same key; an
// upgrade marks an older baton's unmarked directory; Remove removes only a
// directory that still holds this key, Discard only what this start
// created.
func TestRunDirCreatedAndRemoved(t *testing.T) {
	base := t.TempDir()
	path := filepath.Join(base, "b.sock.d")
	rd, err := OpenRunDir(path, false)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("run directory: %v, mode %v; want 0700", err, st.Mode())
	}
	again, err := OpenRunDir(path, false)
	if err != nil || string(again.key) != string(rd.key) || again.created {
		t.Fatalf("reopen: %v (same key %t, created %t)", err, err == nil && string(again.key) == string(rd.key), again != nil && again.created)
	}
	if err := again.Discard(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Discard of a directory this start did not create removed it: %v", err)
	}
	// Somebody (baton's uid) replaced the marker: not removed.
	must(t, os.Remove(filepath.Join(path, runMarker)))
	if _, err := writeMarker(filepath.Join(path, runMarker)); err != nil {
		t.Fatal(err)
	}
	if err := rd.Remove(); err == nil {
		t.Fatal("Remove removed a run directory whose marker changed")
	}
	// An older baton's directory, without a marker, handed over at an
	// upgrade: accepted and marked (without a handover, only if it holds
	// nothing but what baton puts there).
	older := filepath.Join(base, "older.d")
	must(t, os.Mkdir(older, 0o700))
	must(t, os.WriteFile(filepath.Join(older, "notes"), nil, 0o600))
	if _, err := OpenRunDir(older, false); err == nil {
		t.Fatal("an unmarked directory with a file baton does not make was accepted without a handover")
	}
	up, err := OpenRunDir(older, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := up.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(older); !os.IsNotExist(err) {
		t.Errorf("Remove left %s: %v", older, err)
	}
}

// TestUnmarkedLeftoverRunDirUsed guards the crash loop on a run directory
// without the marker (an older baton's that crashed, or a crash between
// its creation and its marker): a 0700 directory of baton's uid holding
// only what baton puts there is marked and used; one holding anything else
// is still refused and left unmarked.
func TestUnmarkedLeftoverRunDirUsed(t *testing.T) {
	base := t.TempDir()
	mk := func(name string, entries ...string) string {
		p := filepath.Join(base, name)
		must(t, os.Mkdir(p, 0o700))
		must(t, os.Chmod(p, 0o700))
		for _, e := range entries {
			must(t, os.Mkdir(filepath.Join(p, e), 0o700))
		}
		return p
	}
	for _, p := range []string{mk("empty.d"), mk("gens.d", "3", "4", "last-good", "last-good.new")} {
		rd, err := OpenRunDir(p, false)
		if err != nil {
			t.Fatalf("%s: %v, want it marked and used", p, err)
		}
		if !rd.Marked() {
			t.Errorf("%s: Marked() false, want true", p)
		}
		if _, err := readRunKey(filepath.Join(p, runMarker)); err != nil {
			t.Errorf("%s: marker: %v", p, err)
		}
		if rd2, err := OpenRunDir(p, false); err != nil || rd2.Marked() {
			t.Errorf("%s reopened: Marked %v, %v; want the marker it has now", p, rd2 != nil && rd2.Marked(), err)
		}
	}
	other := mk("other.d", "3")
	must(t, os.WriteFile(filepath.Join(other, "notes"), nil, 0o600))
	if _, err := OpenRunDir(other, false); !errors.Is(err, ErrUntrustedPath) {
		t.Errorf("a directory with a file baton does not make: %v, want ErrUntrustedPath", err)
	}
	if _, err := os.Lstat(filepath.Join(other, runMarker)); !os.IsNotExist(err) {
		t.Errorf("a refused directory was marked: %v", err)
	}
}
