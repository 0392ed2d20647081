package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor"
)

func trustSetup(t *testing.T) *runSetup {
	t.Helper()
	sp, err := fdpass.ParseSpec("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cmd := []string{"/bin/sleep", "30"}
	drv, err := proxyctl.New("generic", cmd, proxyctl.GenericOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return &runSetup{group: -1, log: zap.NewNop(), specs: []fdpass.Spec{sp}, cmd: cmd, driver: drv}
}

// assertGone fails for every path that exists.
func assertGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
}

// TestStartRefusesUntrustedPaths guards `baton run` on paths another user
// could write, end to end before anything is supervised: a group- or
// world-writable control directory, a run directory baton did not create
// (another uid's, or a pre-existing one of baton's uid, as `--control
// /etc/nginx/conf` would meet conf.d) and a symlinked lock are refused
// with the fix (exit status 1), nothing of them is changed, and no
// control socket, lock or run directory is left behind.
func TestStartRefusesUntrustedPaths(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	base := t.TempDir()
	mkdir := func(p string, mode os.FileMode, uid int) {
		t.Helper()
		if err := os.Mkdir(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := errors.Join(os.Chmod(p, mode), os.Chown(p, uid, -1)); err != nil {
			t.Fatal(err)
		}
	}
	open := filepath.Join(base, "open")
	mkdir(open, 0o777, 0)
	t.Run("writable-control-dir", func(t *testing.T) {
		sock := filepath.Join(open, "b.sock")
		_, err := startFresh(trustSetup(t), sock, "")
		if err == nil || !strings.Contains(err.Error(), "chmod go-w "+open) || exitCode(err) != exitFailed {
			t.Fatalf("startFresh: %v (exit %d), want the fix and exit 1", err, exitCode(err))
		}
		assertGone(t, sock, sock+".lock", sock+".d")
	})
	for _, c := range []struct {
		name string
		uid  int
		mode os.FileMode
		want string
	}{
		{"other-uid", 65534, 0o700, "owned by uid 65534"},
		{"pre-existing", 0, 0o755, "has mode 0755"},
		{"pre-existing-0700", 0, 0o700, "no baton created it"},
	} {
		t.Run("run-dir-"+c.name, func(t *testing.T) {
			dir := filepath.Join(base, c.name)
			mkdir(dir, 0o700, 0)
			sock := filepath.Join(dir, "conf")
			mkdir(sock+".d", c.mode, c.uid)
			keep := filepath.Join(sock+".d", "site.conf")
			if err := os.WriteFile(keep, []byte("server {}"), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := startFresh(trustSetup(t), sock, "")
			if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, supervisor.ErrUntrustedPath) {
				t.Fatalf("startFresh: %v, want %q", err, c.want)
			}
			t.Logf("%v", err)
			if b, err := os.ReadFile(keep); err != nil || string(b) != "server {}" {
				t.Errorf("%s: %q, %v; want it untouched", keep, b, err)
			}
			assertGone(t, sock, sock+".lock", filepath.Join(sock+".d", ".baton-run"))
		})
	}
	t.Run("symlinked-lock", func(t *testing.T) {
		dir := filepath.Join(base, "lock")
		mkdir(dir, 0o700, 0)
		victim := filepath.Join(base, "victim")
		if err := os.WriteFile(victim, []byte("root's"), 0o644); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(dir, "b.sock")
		if err := os.Symlink(victim, sock+".lock"); err != nil {
			t.Fatal(err)
		}
		if _, err := startFresh(trustSetup(t), sock, ""); err == nil || !strings.Contains(err.Error(), "symbolic link") {
			t.Fatalf("startFresh: %v, want a refusal of the link", err)
		}
		if b, _ := os.ReadFile(victim); string(b) != "root's" {
			t.Errorf("the link's target now holds %q", b)
		}
		assertGone(t, sock, sock+".d")
	})
}

// TestWatchErrorLeavesNoRunDir guards the run directory left behind after
// a --watch error: the start fails and removes the run directory (and the
// control socket and lock) it created.
func TestWatchErrorLeavesNoRunDir(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "b.sock")
	rs := trustSetup(t)
	rs.watch = []string{"/nonexistent/dir/file"}
	st, err := startFresh(rs, sock, "")
	if err != nil {
		t.Fatal(err)
	}
	err = supervise(rs, st, nil)
	if err == nil || !strings.Contains(err.Error(), "--watch") {
		t.Fatalf("supervise: %v, want the --watch error", err)
	}
	assertGone(t, sock, sock+".lock", sock+".d")
}

// TestFailedUpgradeLeavesOldPaths guards the old baton's paths when the
// new baton fails after it took over the control socket and its lock: the
// failed start removes neither the socket path, nor the lock file, nor the
// run directory (the old baton carries on with them).
func TestFailedUpgradeLeavesOldPaths(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "b.sock")
	rs := trustSetup(t)
	old, err := startFresh(rs, sock, "")
	if err != nil {
		t.Fatal(err)
	}
	defer old.close(false)

	// The new baton's start state as receiveUpgrade builds it.
	lf, err := old.ctl.Listener.File()
	if err != nil {
		t.Fatal(err)
	}
	lockf, err := os.OpenFile(sock+".lock", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fds := []int{dupFd(t, lf), dupFd(t, lockf)}
	lf.Close()
	lockf.Close()
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pair[1])
	cf := os.NewFile(uintptr(pair[0]), "handover")
	c, err := net.FileConn(cf)
	cf.Close()
	if err != nil {
		t.Fatal(err)
	}
	st := &startState{conn: c.(*net.UnixConn), procfs: old.procfs}
	if st.ctl, err = supervisor.AdoptControl(sock, supervisor.Handover{ControlFd: 0, LockFd: 1}, fds); err != nil {
		t.Fatal(err)
	}
	if st.run, err = supervisor.OpenRunDir(sock+".d", true); err != nil {
		t.Fatal(err)
	}
	if st.listeners, err = supervisor.BindListeners(rs.specs); err != nil {
		t.Fatal(err)
	}

	rs.watch = []string{"/nonexistent/dir/file"}
	if err := supervise(rs, st, nil); err == nil || !strings.Contains(err.Error(), "--watch") {
		t.Fatalf("supervise: %v, want the --watch error", err)
	}
	for _, p := range []string{sock, sock + ".lock", sock + ".d"} {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("the failed upgrade removed the old baton's %s: %v", p, err)
		}
	}
}

func dupFd(t *testing.T, f *os.File) int {
	t.Helper()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}
