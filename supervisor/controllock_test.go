package supervisor

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSymlinkedLockNeverWritten guards the symlinked lock incident: a
// CONTROL.lock that is a symbolic link to somebody's file (here a
// root-owned one) is refused; the file keeps its content, nothing is
// created.
func TestSymlinkedLockNeverWritten(t *testing.T) {
	dir := shortDir(t)
	victim := filepath.Join(t.TempDir(), "precious")
	const content = "root's data\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "b.sock")
	if err := os.Symlink(victim, sock+".lock"); err != nil {
		t.Fatal(err)
	}
	ctl, err := ListenControl(sock, 0o600)
	if err == nil {
		ctl.Close()
		t.Fatal("ListenControl accepted a symlinked lock")
	}
	t.Logf("%v", err)
	if !errors.Is(err, ErrUntrustedPath) || !strings.Contains(err.Error(), "symbolic link") || !strings.Contains(err.Error(), "rm "+sock+".lock") {
		t.Errorf("error %q: want it to say the lock is a symbolic link and how to remove it", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != content {
		t.Errorf("the link's target now holds %q, want %q unchanged", b, content)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket created: %v", err)
	}
}

// TestControlLockRefusals: a lock file that is not a regular file of
// baton's uid with one name is refused and left alone; a refusal after the
// lock file was created (the path is not a socket) leaves no lock behind;
// a lock another baton holds is reported with its pid and not removed.
func TestControlLockRefusals(t *testing.T) {
	requireRoot(t)
	dir := shortDir(t)
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		setup func(lock string)
		want  string
	}{
		{"hard-link", func(lock string) { must(t, os.Link(other, lock)) }, "hard link"},
		{"other-owner", func(lock string) { must(t, os.WriteFile(lock, nil, 0o600)); must(t, os.Chown(lock, 65534, -1)) }, "owned by uid 65534"},
		{"fifo", func(lock string) { must(t, unix.Mkfifo(lock, 0o600)) }, "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sock := filepath.Join(dir, c.name+".sock")
			c.setup(sock + ".lock")
			ctl, err := ListenControl(sock, 0o600)
			if err == nil {
				ctl.Close()
				t.Fatal("accepted")
			}
			t.Logf("%v", err)
			if !errors.Is(err, ErrUntrustedPath) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want %q", err, c.want)
			}
			if _, err := os.Lstat(sock + ".lock"); err != nil {
				t.Errorf("the refused lock file was removed: %v", err)
			}
		})
	}
	t.Run("not-a-socket", func(t *testing.T) {
		sock := filepath.Join(dir, "file.sock")
		must(t, os.WriteFile(sock, []byte("x"), 0o600))
		if _, err := ListenControl(sock, 0o600); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
			t.Fatalf("error %v, want 'exists and is not a socket'", err)
		}
		if _, err := os.Lstat(sock + ".lock"); !os.IsNotExist(err) {
			t.Errorf("a refused control path left %s.lock behind: %v", sock, err)
		}
	})
	t.Run("held", func(t *testing.T) {
		sock := filepath.Join(dir, "held.sock")
		first, err := ListenControl(sock, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ListenControl(sock, 0o600)
		if !errors.Is(err, errControlInUse) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
			t.Errorf("second ListenControl: %v, want errControlInUse naming pid %d", err, os.Getpid())
		}
		if _, err := os.Lstat(sock + ".lock"); err != nil {
			t.Errorf("the held lock file was removed by the refused baton: %v", err)
		}
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{sock, sock + ".lock"} {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s left after Close: %v", p, err)
			}
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRefusedLockLeavesWinnersFile guards the lock race: baton A creates
// the lock file, baton B opens and locks it first; A's refusal must not
// remove the file B holds.
func TestRefusedLockLeavesWinnersFile(t *testing.T) {
	lock := filepath.Join(shortDir(t), "b.sock.lock")
	a, err := openLockFile(lock)
	if err != nil {
		t.Fatal(err)
	}
	if !a.created {
		t.Fatal("A did not create the lock file")
	}
	b, err := openLockFile(lock)
	if err != nil {
		t.Fatal(err)
	}
	defer b.f.Close()
	must(t, unix.Flock(int(b.f.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	if err := unix.Flock(int(a.f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("A's flock: %v, want EWOULDBLOCK", err)
	}
	a.abandon()
	if !b.current() {
		t.Error("A's refusal removed the lock file B holds")
	}
}
