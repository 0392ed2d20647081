package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/internal/proc"
)

// serveControl serves the control API of h's supervisor on a fresh control
// socket; cleanup shuts the server down and closes the socket.
func serveControl(t *testing.T, h *harness) string {
	t.Helper()
	return serveControlGroup(t, h, -1)
}

// serveControlGroup is serveControl with --control-group gid.
func serveControlGroup(t *testing.T, h *harness, gid int) string {
	t.Helper()
	path := filepath.Join(h.dir, "c.sock")
	ctl, err := ListenControl(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewControlServer(h.sup, h.log, gid)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctl.Listener) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shortWait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		// Shutdown already closed the listener; Close releases the lock.
		if err := ctl.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("close control socket: %v", err)
		}
	})
	return path
}

func call(t *testing.T, sock, method, path string) controlResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), longWait)
	defer cancel()
	resp, err := controlRequest(ctx, sock, method, path)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func decode[T any](t *testing.T, resp controlResponse) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(resp.body, &v); err != nil {
		t.Fatalf("decode %s: %v", resp.body, err)
	}
	return v
}

func TestControlServer(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.start()
	sock := serveControl(t, h)
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket %v (%v), want a socket with mode 0600", st.Mode(), err)
	}

	t.Run("status", func(t *testing.T) {
		resp := call(t, sock, http.MethodGet, "/v1/status")
		if resp.code != http.StatusOK {
			t.Fatalf("GET /v1/status: %d %s", resp.code, resp.body)
		}
		st := decode[api.Status](t, resp)
		if g := h.active(st); g.Gen != 1 || g.Pid != h.drv.pid(1) || st.Pid != os.Getpid() || st.Proxy != "fake" {
			t.Errorf("status %+v", st)
		}
		if len(st.Listeners) != 1 || st.Listeners[0].Inode != h.inode() {
			t.Errorf("status listeners %+v, want inode %d", st.Listeners, h.inode())
		}
	})
	t.Run("reload", func(t *testing.T) {
		resp := call(t, sock, http.MethodPost, "/v1/reload")
		if resp.code != http.StatusOK {
			t.Fatalf("POST /v1/reload: %d %s", resp.code, resp.body)
		}
		if r := decode[api.ReloadResponse](t, resp); r.Generation != 2 || r.Pid != h.drv.pid(2) || r.Pid == 0 {
			t.Errorf("reload response %+v, want generation 2 pid %d", r, h.drv.pid(2))
		}
	})
	t.Run("reload check failed", func(t *testing.T) {
		h.setCheck("line 3: unknown directive 'lisen'")
		defer h.setCheck("ok")
		resp := call(t, sock, http.MethodPost, "/v1/reload")
		e := decode[api.APIError](t, resp)
		if resp.code != http.StatusUnprocessableEntity || e.Code != "check_failed" || !strings.Contains(e.Error, "unknown directive 'lisen'") {
			t.Errorf("POST /v1/reload with a broken config: %d %+v, want 422 check_failed with the checker's words", resp.code, e)
		}
	})
	t.Run("wrong method", func(t *testing.T) {
		if resp := call(t, sock, http.MethodGet, "/v1/reload"); resp.code != http.StatusMethodNotAllowed {
			t.Errorf("GET /v1/reload: %d, want 405", resp.code)
		}
	})
	t.Run("peer credentials", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("running a client as uid 65534 needs root")
		}
		// Let the filesystem pass uid 65534, so SO_PEERCRED is what refuses.
		if err := os.Chmod(h.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(sock, 0o666); err != nil {
			t.Fatal(err)
		}
		bin := worldExecutableCopy(t)
		okCount := h.status().Counters.ReloadsOK

		// The control: the same client as root is served.
		out, st := runClient(t, h.reaper, nil, bin, sock, "GET", "/v1/status")
		if st.Code != 0 || !strings.HasPrefix(out, "200\n") {
			t.Fatalf("client as root: exit %+v, output %q", st, out)
		}
		out, st = runClient(t, h.reaper, &syscall.Credential{Uid: 65534, Gid: 65534}, bin, sock, "POST", "/v1/reload")
		code, body, _ := strings.Cut(out, "\n")
		if st.Code != 0 || code != "403" {
			t.Fatalf("client as uid 65534: exit %+v, output %q; want 403", st, out)
		}
		var e api.APIError
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != "forbidden" || !strings.Contains(e.Error, "uid 65534") {
			t.Errorf("refusal %q (%v), want code forbidden naming uid 65534", body, err)
		}
		if n := h.status().Counters.ReloadsOK; n != okCount {
			t.Errorf("reloads went from %d to %d: the refused request reloaded", okCount, n)
		}
	})
	t.Run("stop", func(t *testing.T) {
		resp := call(t, sock, http.MethodPost, "/v1/stop")
		if resp.code != http.StatusOK {
			t.Fatalf("POST /v1/stop: %d %s", resp.code, resp.body)
		}
		if err := h.waitRun(); err != nil {
			t.Fatalf("Run: %v", err)
		}
		resp = call(t, sock, http.MethodGet, "/v1/status")
		if e := decode[api.APIError](t, resp); resp.code != http.StatusServiceUnavailable || e.Code != "not_running" {
			t.Errorf("status after stop: %d %+v, want 503 not_running", resp.code, e)
		}
		resp = call(t, sock, http.MethodPost, "/v1/reload")
		if e := decode[api.APIError](t, resp); resp.code != http.StatusServiceUnavailable || !strings.Contains(e.Error, ErrNotRunning.Error()) {
			t.Errorf("reload after stop: %d %+v, want 503", resp.code, e)
		}
	})
}

// worldExecutableCopy copies the test binary where any uid may run it (the
// go tool builds it in a 0700 directory).
func worldExecutableCopy(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := shortDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "fake")
	dst, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if err2 := dst.Close(); err == nil {
		err = err2
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// runClient runs `bin client SOCK METHOD PATH` with cred (nil: ours),
// started and reaped through the test's Reaper, and returns its output.
func runClient(t *testing.T, r *testReaper, cred *syscall.Credential, bin, sock, method, path string) (string, proc.ExitStatus) {
	t.Helper()
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	// stderr apart: a -cover test binary warns there about GOCOVERDIR.
	errFile, err := os.CreateTemp("", "svclient")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(errFile.Name())
	defer errFile.Close()
	exited := make(chan proc.ExitStatus, 1)
	attr := &syscall.ProcAttr{
		Env:   childTestEnv(),
		Files: []uintptr{devnull.Fd(), wr.Fd(), errFile.Fd()}, // private files only
		Sys:   &syscall.SysProcAttr{Credential: cred},
	}
	_, err = r.Start(func() (int, error) {
		return syscall.ForkExec(bin, []string{bin, roleClient, sock, method, path}, attr)
	}, func(st proc.ExitStatus) { exited <- st })
	wr.Close()
	if err != nil {
		t.Fatal(err)
	}
	_ = rd.SetReadDeadline(time.Now().Add(longWait))
	out, err := io.ReadAll(rd)
	if err != nil {
		t.Fatalf("client output: %v", err)
	}
	select {
	case st := <-exited:
		if st.Code != 0 {
			stderr, _ := os.ReadFile(errFile.Name())
			t.Logf("client stderr: %s", stderr)
		}
		return string(out), st
	case <-time.After(shortWait):
		t.Fatal("client not reaped")
		return "", proc.ExitStatus{}
	}
}

func TestListenControl(t *testing.T) {
	dir := shortDir(t)
	t.Run("in use", func(t *testing.T) {
		path := filepath.Join(dir, "a.sock")
		c1, err := ListenControl(path, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ListenControl(path, 0o600)
		if !errors.Is(err, errControlInUse) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
			t.Errorf("second ListenControl: %v, want errControlInUse naming pid %d", err, os.Getpid())
		}
		// The first one still serves its socket.
		if c, err := net.Dial("unix", path); err != nil {
			t.Errorf("the first control socket stopped answering: %v", err)
		} else {
			c.Close()
		}
		if err := c1.Close(); err != nil {
			t.Fatal(err)
		}
		c2, err := ListenControl(path, 0o600)
		if err != nil {
			t.Fatalf("ListenControl after the holder closed: %v", err)
		}
		c2.Close()
	})
	t.Run("missing directory", func(t *testing.T) {
		path := filepath.Join(dir, "nope", "c.sock")
		_, err := ListenControl(path, 0o600)
		if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), filepath.Join(dir, "nope")) {
			t.Errorf("ListenControl in a missing directory: %v, want an error naming the directory", err)
		}
	})
	t.Run("stale socket replaced", func(t *testing.T) {
		path := filepath.Join(dir, "s.sock")
		// A socket file nobody listens on, as a killed baton leaves it.
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
		c, err := ListenControl(path, 0o600)
		if err != nil {
			t.Fatalf("ListenControl over a stale socket: %v", err)
		}
		defer c.Close()
		conn, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("new control socket does not answer: %v", err)
		}
		conn.Close()
	})
	t.Run("not a socket", func(t *testing.T) {
		// A mistyped --control must not delete somebody's file.
		path := filepath.Join(dir, "precious")
		if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := ListenControl(path, 0o600)
		if err == nil {
			c.Close()
			t.Fatalf("ListenControl replaced the regular file %s", path)
		}
		if b, _ := os.ReadFile(path); string(b) != "data" {
			t.Errorf("%s was changed: %q (%v)", path, b, err)
		}
	})
}

// --control-group admits a peer whose primary or supplementary groups (as
// the kernel recorded them when it connected) include the group, and
// refuses one whose groups do not.
func TestControlGroupSupplementary(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("running clients under other uids and groups needs root")
	}
	const group = 4242
	h := newHarness(t, harnessOpts{})
	h.start()
	sock := serveControlGroup(t, h, group)
	// The filesystem lets every uid through, so the peer check decides.
	if err := os.Chmod(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	bin := worldExecutableCopy(t)
	for _, tc := range []struct {
		name string
		cred syscall.Credential
		want string
	}{
		{"supplementary member", syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{100, group}}, "200"},
		{"primary member", syscall.Credential{Uid: 65534, Gid: group}, "200"},
		{"not a member", syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{100, group + 1}}, "403"},
	} {
		out, st := runClient(t, h.reaper, &tc.cred, bin, sock, "GET", "/v1/status")
		if code, body, _ := strings.Cut(out, "\n"); st.Code != 0 || code != tc.want {
			t.Errorf("%s (uid %d, gid %d, groups %v): exit %+v, answer %s %.120s; want %s", tc.name, tc.cred.Uid, tc.cred.Gid, tc.cred.Groups, st, code, body, tc.want)
		}
	}
}
