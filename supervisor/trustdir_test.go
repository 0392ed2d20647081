package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// requireRoot skips a test that changes file ownership.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
}

// TestControlDirTrust guards the trusted control directory: a control
// directory another user owns or may write, or below a directory another
// user may write without the sticky bit, is refused with the fix; links are
// resolved to the real path.
func TestControlDirTrust(t *testing.T) {
	requireRoot(t)
	base := t.TempDir() // 0700, ours, below /tmp (root, sticky)
	mk := func(name string, mode os.FileMode, uid int) string {
		t.Helper()
		p := filepath.Join(base, name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, -1); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := mk("good", 0o755, 0)
	open := mk("open", 0o777, 0)
	other := mk("other", 0o700, 65534)
	loose := mk("loose", 0o777, 0)
	below := mk("loose/below", 0o700, 0)
	sticky := mk("sticky", 0o777|os.ModeSticky, 0)
	inSticky := mk("sticky/in", 0o700, 0)
	if err := os.Symlink(good, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(base, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		dir  string
		want []string // in the error; nil: accepted
		real string
	}{
		{dir: good, real: good},
		{dir: inSticky, real: inSticky},
		{dir: filepath.Join(base, "link"), real: good},
		{dir: open, want: []string{open, "group- or world-writable", "mode 0777", "chmod go-w " + open, "choose another --control directory"}},
		{dir: other, want: []string{other, "owned by uid 65534", "chown 0 " + other + " && chmod go-w " + other}},
		{dir: below, want: []string{loose + " above the control directory", "without the sticky bit", "chmod go-w " + loose}},
		{dir: sticky, want: []string{"group- or world-writable"}},
		{dir: file, want: []string{"not a directory"}},
	}
	for _, c := range cases {
		t.Run(filepath.Base(c.dir), func(t *testing.T) {
			real, err := CheckControlDir(c.dir)
			if c.want == nil {
				if err != nil || real != c.real {
					t.Fatalf("CheckControlDir(%s) = %q, %v; want %q", c.dir, real, err, c.real)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrUntrustedPath) {
				t.Fatalf("CheckControlDir(%s) = %q, %v; want an ErrUntrustedPath", c.dir, real, err)
			}
			t.Logf("%v", err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q", w)
				}
			}
		})
	}
}
