package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

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
