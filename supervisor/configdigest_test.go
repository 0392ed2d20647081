package supervisor

import (
	"os"
	"path/filepath"
	"testing"
)

// The three digests of one config agree: of the copy baton makes, of the
// copies read back (an adopted generation), and of the files on disk; the
// on-disk one follows an in-place rewrite of the same size and a removed
// file.
func TestConfigDigests(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.cfg"), filepath.Join(dir, "b.cfg")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(a, "global\n")
	write(b, "frontend fe\n")
	copies, copied, err := copyConfig(map[string]string{a: a, b: b}, filepath.Join(dir, "copy"))
	if err != nil {
		t.Fatal(err)
	}
	var c diskDigestCache
	files := []string{a, b}
	disk, err := c.digest(files)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := c.digest(files)
	if len(copied) != 64 || disk != copied || again != copied || digestCopies(copies) != copied {
		t.Fatalf("digests: copy %s, disk %s then %s, copies read back %s; want one", copied, disk, again, digestCopies(copies))
	}
	if f, err := os.OpenFile(a, os.O_WRONLY, 0); err != nil {
		t.Fatal(err)
	} else {
		_, _ = f.WriteString("GLOBAL\n") // same size, same inode
		f.Close()
	}
	if d, err := c.digest(files); err != nil || d == copied {
		t.Errorf("after an in-place rewrite: digest %s, %v; want a new one", d, err)
	}
	if err := os.Remove(b); err != nil {
		t.Fatal(err)
	}
	if d, err := c.digest(files); err == nil {
		t.Errorf("with a file removed: digest %s, want an error", d)
	}
}
