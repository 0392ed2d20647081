package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// errControlInUse means another baton holds the control socket.
var errControlInUse = errors.New("control socket in use")

// ControlSocket is the bound control socket and the lock that makes it
// baton's alone. The lock descriptor is owned by the ControlSocket (an
// upgrade hands the next baton a duplicate). Listener is the socket bound
// at Path now: the supervisor's loop binds a new one when the path was
// removed (see keepControl), and Acceptor follows.
type ControlSocket struct {
	Listener *net.UnixListener
	Path     string
	lock     *os.File
	lockPath string
	kept     controlKeep
}

// ListenControl binds the control socket at path with the given mode after
// taking an exclusive lock on path+".lock", so that a second baton on the
// same path fails with a clear error instead of stealing the socket. A
// stale socket file is replaced. The directory must exist and pass
// CheckControlDir; path is used as given (the caller passes the checked
// real path). Before the lock is taken nothing is created; a refusal after
// that removes the lock file again if this call created it.
func ListenControl(path string, mode os.FileMode) (*ControlSocket, error) {
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("control socket %s: directory %s does not exist", path, dir)
	}
	if _, err := CheckControlDir(dir); err != nil {
		return nil, err
	}
	// Anything but a socket there is somebody's file, not ours to delete.
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
	}
	lock, err := acquireControlLock(path+".lock", path)
	if err != nil {
		return nil, err
	}
	// A socket there is stale: we hold the lock, so no baton serves it.
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket == 0 {
		lock.abandon()
		return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
	}
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err == nil {
		err = os.Chmod(path, mode)
	}
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		lock.abandon()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &ControlSocket{Listener: ln, Path: path, lock: lock.f, lockPath: lock.path}, nil
}

// Close closes the socket (removing its path) and releases the lock,
// removing the lock file.
func (c *ControlSocket) Close() error {
	return errors.Join(c.Listener.Close(), releaseLock(c.lockPath, c.lock))
}

// Release closes baton's descriptors without removing the path: another
// baton (an upgrade) holds the socket and the lock now.
func (c *ControlSocket) Release() error {
	c.Listener.SetUnlinkOnClose(false)
	return errors.Join(c.Listener.Close(), c.lock.Close())
}

// AdoptControl takes over the control socket and its lock from a handover
// (their descriptors are taken from fds).
func AdoptControl(path string, h Handover, fds []int) (*ControlSocket, error) {
	lfd, lockfd := fdAt(fds, h.ControlFd), fdAt(fds, h.LockFd)
	if lfd < 0 || lockfd < 0 {
		closeFds([]int{lfd, lockfd})
		return nil, errors.New("handover without the control socket")
	}
	f := os.NewFile(uintptr(lfd), path)
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		unix.Close(lockfd)
		return nil, fmt.Errorf("adopt control socket: %w", err)
	}
	ul, ok := ln.(*net.UnixListener)
	if !ok {
		ln.Close()
		unix.Close(lockfd)
		return nil, errors.New("adopt control socket: not a unix socket")
	}
	ul.SetUnlinkOnClose(true)
	return &ControlSocket{Listener: ul, Path: path, lock: os.NewFile(uintptr(lockfd), path+".lock"), lockPath: path + ".lock"}, nil
}

// ControlServer serves the control API (HTTP/1.1, JSON) on the control
// socket. Each connection's peer is checked (SO_PEERCRED, SO_PEERGROUPS)
// as it is accepted, before anything is read from it: root, baton's own
// uid, and (when set) members of AllowGID, as primary or supplementary
// group, may talk to it; any other peer gets a 403 and is closed. At most
// controlMaxConns admitted connections are open at once (see connLimit),
// and every one has read, write and idle timeouts.
type ControlServer struct {
	sup      *Supervisor
	log      *zap.Logger
	allowGID int
	srv      *http.Server

	refusing chan struct{}  // a place per refused peer being answered
	refusals sync.WaitGroup // goroutines answering refused peers
	refused  *logEvery
}

// Limits of the control server. Its requests have no body; a reload's
// answer may come long after the request (it waits for the switch), so
// writes are bounded per answer (controlWriteTimeout), not per request.
const (
	controlMaxConns          = 32
	controlReadHeaderTimeout = 5 * time.Second
	controlReadTimeout       = 10 * time.Second
	controlWriteTimeout      = 10 * time.Second
	controlIdleTimeout       = 30 * time.Second
	maxRefusalsAnswered      = 4 // refused peers answered at once; more are closed unanswered
)

// DefaultControlPath is the control socket's path unless one is given.
const DefaultControlPath = "/run/baton/baton.sock"

// NewControlServer returns a server for sup; allowGID < 0 allows no group.
func NewControlServer(sup *Supervisor, log *zap.Logger, allowGID int) *ControlServer {
	c := &ControlServer{sup: sup, log: log, allowGID: allowGID,
		refusing: make(chan struct{}, maxRefusalsAnswered), refused: newLogEvery(capLogEvery)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", c.status)
	mux.HandleFunc("GET /v1/reloads", c.reloads)
	mux.HandleFunc("POST /v1/reload", c.reload)
	mux.HandleFunc("POST /v1/stop", c.stop)
	mux.HandleFunc("POST /v1/upgrade", c.upgrade)
	c.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: controlReadHeaderTimeout,
		ReadTimeout:       controlReadTimeout,
		IdleTimeout:       controlIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnState:         connState,
		ErrorLog:          zap.NewStdLog(log.With(zap.String("server", "control"))),
	}
	return c
}

// Serve serves on ln until Shutdown.
func (c *ControlServer) Serve(ln net.Listener) error {
	err := c.srv.Serve(newConnLimit(ln, controlMaxConns, "control", c.admit, c.log))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for running requests, up to ctx, and
// for the answers to refused peers.
func (c *ControlServer) Shutdown(ctx context.Context) error {
	err := c.srv.Shutdown(ctx)
	c.refusals.Wait()
	return err
}

// notRunning answers a request the supervisor can no longer take: after a
// handover the client should ask again (the new baton answers).
func (c *ControlServer) notRunning(w http.ResponseWriter, err error) {
	if c.sup.HandedOver() {
		writeError(w, http.StatusServiceUnavailable, "handed_over", errors.New("baton has just been upgraded; ask again"))
		return
	}
	writeError(w, http.StatusServiceUnavailable, "not_running", err)
}

func (c *ControlServer) status(w http.ResponseWriter, r *http.Request) {
	st, err := c.sup.Status(r.Context())
	if err != nil {
		c.notRunning(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (c *ControlServer) reloads(w http.ResponseWriter, r *http.Request) {
	recs, err := c.sup.Reloads(r.Context())
	if err != nil {
		c.notRunning(w, err)
		return
	}
	writeJSON(w, http.StatusOK, api.ReloadsResponse{Reloads: recs})
}

func (c *ControlServer) reload(w http.ResponseWriter, r *http.Request) {
	res, err := c.sup.Reload(r.Context())
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, ErrNotRunning):
		c.notRunning(w, err)
	case errors.Is(err, lifecycle.ErrStopping):
		writeError(w, http.StatusServiceUnavailable, "stopping", err)
	default:
		writeError(w, http.StatusUnprocessableEntity, reloadErrorCode(err), err)
	}
}

func reloadErrorCode(err error) string {
	for _, c := range []struct {
		err  error
		code string
	}{
		{lifecycle.ErrCheckFailed, "check_failed"},
		{lifecycle.ErrStartFailed, "start_failed"},
		{lifecycle.ErrNotReady, "not_ready"},
		{lifecycle.ErrExitedBeforeReady, "exited_before_ready"},
		{lifecycle.ErrExitedAfterReady, "exited_after_ready"},
	} {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "reload_failed"
}

func (c *ControlServer) stop(w http.ResponseWriter, r *http.Request) {
	fast := r.URL.Query().Get("fast") == "1"
	err := c.sup.Stop(r.Context(), fast)
	if errors.Is(err, ErrNotRunning) && c.sup.HandedOver() {
		c.notRunning(w, err)
		return
	}
	if err != nil && !errors.Is(err, ErrNotRunning) {
		writeError(w, http.StatusServiceUnavailable, "stop_failed", err)
		return
	}
	writeJSON(w, http.StatusOK, api.StopResponse{Stopped: true})
}

func (c *ControlServer) upgrade(w http.ResponseWriter, r *http.Request) {
	res, err := c.sup.Upgrade(r.Context())
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, res)
	case errors.Is(err, lifecycle.ErrNotQuiescent):
		writeError(w, http.StatusConflict, "busy", err)
	case errors.Is(err, errUpgradeUnavailable):
		writeError(w, http.StatusNotImplemented, "unavailable", err)
	default:
		writeError(w, http.StatusUnprocessableEntity, "upgrade_failed", err)
	}
}

func writeError(w http.ResponseWriter, status int, code string, err error) {
	writeJSON(w, status, api.APIError{Code: code, Error: err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	// The answer is bounded, not the request: a reload may take as long as
	// the old generation's drain.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(controlWriteTimeout))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
