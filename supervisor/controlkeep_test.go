package supervisor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// serveKeptControl serves the control API on ctl's Acceptor (it follows a
// socket bound again). Call it before h.start: cleanup then closes ctl
// after the supervisor, which keeps the path bound, has stopped.
func serveKeptControl(t *testing.T, h *harness, ctl *ControlSocket) {
	t.Helper()
	srv := NewControlServer(h.sup, h.log, -1)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctl.Acceptor()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shortWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := ctl.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("close control socket: %v", err)
		}
	})
}

// statusAnswers reports whether GET /v1/status on path answers 200.
func statusAnswers(path string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), shortWait)
	defer cancel()
	resp, err := controlRequest(ctx, path, http.MethodGet, "/v1/status")
	return err == nil && resp.code == http.StatusOK
}

// A control socket whose path was removed, or replaced by another socket,
// is bound again while baton runs; a path taken by something else is left
// alone and reported once, and bound again once it is free.
func TestControlSocketRecreated(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "c.sock")
	ctl, err := ListenControl(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ctl.SetRebind(0o640, os.Getegid())
	h := newHarness(t, harnessOpts{control: ctl})
	serveKeptControl(t, h, ctl)
	h.start()
	if !statusAnswers(path) {
		t.Fatal("status does not answer on the control socket")
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(shortWait, func() bool { return statusAnswers(path) }) {
		t.Fatalf("status does not answer %v after the control socket's path was removed", shortWait)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("control socket bound again: %v (%v), want a socket with mode 0640", fi.Mode(), err)
	}

	// A socket of someone else's (nobody listens on it) at the path.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	bindStray(t, path)
	if !pollUntil(shortWait, func() bool { return statusAnswers(path) }) {
		t.Fatal("status does not answer after the path became another socket")
	}

	// A regular file: not baton's to remove. It replaces the socket in one
	// rename: between a remove and a write baton may already have bound a
	// new socket there (and opening a socket fails with ENXIO).
	if err := os.WriteFile(path+".new", []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	waitFor(t, shortWait, "the path being a regular file reported", func() bool {
		return h.logs.FilterMessage("control socket").Len() == 1
	})
	if b, _ := os.ReadFile(path); string(b) != "data" {
		t.Errorf("the regular file at the path was changed: %q", b)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if !pollUntil(shortWait, func() bool { return statusAnswers(path) }) {
		t.Fatal("status does not answer after the regular file was removed")
	}
	if n := h.logs.FilterMessage("control socket path was removed or replaced: bound a new socket there").Len(); n != 3 {
		t.Errorf("%d rebinds logged, want 3", n)
	}
}

// A baton that takes over a control socket (an upgrade) whose path was
// removed meanwhile binds it again when it starts, without waiting for an
// inotify event.
func TestControlSocketRecreatedAfterTakeover(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "c.sock")
	old, err := ListenControl(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// What the old baton hands over: duplicates of the socket and the lock.
	lfd, err := dupSocket(old.Listener)
	if err != nil {
		t.Fatal(err)
	}
	lockfd, err := dupFd(int(old.lock.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Release(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	ctl, err := AdoptControl(path, Handover{ControlFd: 0, LockFd: 1}, []int{lfd, lockfd})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, harnessOpts{control: ctl})
	serveKeptControl(t, h, ctl)
	h.start()
	if !pollUntil(shortWait, func() bool { return statusAnswers(path) }) {
		t.Fatal("status does not answer on a control socket taken over after its path was removed")
	}
}

// bindStray binds a unix socket at path that nobody listens on, as a
// killed program leaves it.
func bindStray(t *testing.T, path string) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
}

// TestControlSocketLeftAloneWithoutLock guards two batons on one path:
// with baton's lock file removed, another socket at the control path may be
// another baton's, so it is left alone (reported once), not replaced.
func TestControlSocketLeftAloneWithoutLock(t *testing.T) {
	path := filepath.Join(shortDir(t), "c.sock")
	ctl, err := ListenControl(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	if _, err := ctl.keep(); err != nil {
		t.Fatal(err)
	}
	must(t, os.Remove(path))
	must(t, os.Remove(path+".lock"))
	bindStray(t, path)
	var before unix.Stat_t
	must(t, unix.Lstat(path, &before))

	rebound, err := ctl.keep()
	if rebound || !errors.Is(err, errControlLockGone) {
		t.Fatalf("keep: rebound %v, error %v; want the path left alone and errControlLockGone", rebound, err)
	}
	if rebound, err := ctl.keep(); rebound || err != nil {
		t.Errorf("second keep: rebound %v, error %v; want nothing (reported once)", rebound, err)
	}
	var after unix.Stat_t
	must(t, unix.Lstat(path, &after))
	if after.Ino != before.Ino {
		t.Error("the other socket at the path was replaced")
	}
}
