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
	// upgrade: accepted and marked.
	older := filepath.Join(base, "older.d")
	must(t, os.Mkdir(older, 0o700))
	if _, err := OpenRunDir(older, false); err == nil {
		t.Fatal("an unmarked directory was accepted without a handover")
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
