package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
)

// A control socket's path can be removed under a running baton (a cleanup
// script, an rm -rf of /run/baton): the socket still works for whoever
// holds a descriptor of it, but no client can connect any more. baton binds
// a new socket at the path, on the supervisor's loop (so an upgrade hands
// over whichever socket is current), while it holds the control lock.
//
// Which file at the path is baton's own is recorded by (device, inode) when
// the loop first checks it (right after baton bound or took over the
// socket) and after each rebind: fstat of the socket descriptor gives
// sockfs's inode, not the file's.

// errControlLockGone: the path is another socket and baton's lock file is
// gone, so baton leaves the path alone.
var errControlLockGone = errors.New("control socket lock file removed")

// controlKeep is a ControlSocket's state for keepControl.
type controlKeep struct {
	mu       sync.Mutex // guards Listener against Acceptor; the loop writes it
	mode     os.FileMode
	gid      int  // -1: leave the group
	permSet  bool // SetRebind was called
	dev, ino uint64
	known    bool   // dev, ino record our socket file
	warned   string // the last problem logged, to log each once
}

// SetRebind records how a socket bound again at the path is made: its
// mode, and its group when gid >= 0. Without it, 0600 and baton's group.
func (c *ControlSocket) SetRebind(mode os.FileMode, gid int) {
	c.kept.mu.Lock()
	defer c.kept.mu.Unlock()
	c.kept.mode, c.kept.gid, c.kept.permSet = mode, gid, true
}

func (c *ControlSocket) current() *net.UnixListener {
	c.kept.mu.Lock()
	defer c.kept.mu.Unlock()
	return c.Listener
}

// pathState says what is at the path: ours (the file baton bound), gone,
// another socket (a stale or foreign one: replaced, as at start, since baton
// holds the lock; left alone when the lock file is gone), or something else
// (left alone, reported).
func (c *ControlSocket) pathState() (st string, dev, ino uint64) {
	fi, err := os.Lstat(c.Path)
	if errors.Is(err, os.ErrNotExist) {
		return "gone", 0, 0
	}
	if err != nil {
		return "unreadable", 0, 0
	}
	sys, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !ok || fi.Mode()&os.ModeSocket == 0:
		return "not a socket", 0, 0
	case c.kept.known && (sys.Dev != c.kept.dev || sys.Ino != c.kept.ino):
		return "another socket", sys.Dev, sys.Ino
	default:
		return "ours", sys.Dev, sys.Ino
	}
}

// keep checks the path and binds a new socket there when it is gone or is
// another socket. It runs on the supervisor's loop. rebound reports a new
// socket; a problem it cannot fix is returned once per kind.
func (c *ControlSocket) keep() (rebound bool, err error) {
	st, dev, ino := c.pathState()
	switch st {
	case "ours":
		c.kept.dev, c.kept.ino, c.kept.known, c.kept.warned = dev, ino, true, ""
		return false, nil
	case "another socket":
		// Replacing it is right only while baton's lock file is there: with
		// it gone (a cleanup removed it), another baton may have locked a
		// new one and bound this socket, and the two would replace each
		// other's socket on every event.
		if !namesFile(c.lockPath, c.lock) {
			if c.kept.warned == "lock gone" {
				return false, nil
			}
			c.kept.warned = "lock gone"
			return false, fmt.Errorf("%w: control socket %s is another socket now and the lock file %s was removed; another baton may serve that path: left as it is (restart this baton to bind it again)", errControlLockGone, c.Path, c.lockPath)
		}
	case "gone":
	default:
		if c.kept.warned == st {
			return false, nil
		}
		c.kept.warned = st
		return false, fmt.Errorf("control socket %s: the path is %s now; left as it is", c.Path, st)
	}
	if err := c.rebind(st == "another socket"); err != nil {
		if c.kept.warned == err.Error() {
			return false, nil
		}
		c.kept.warned = err.Error()
		return false, err
	}
	c.kept.warned = ""
	return true, nil
}

func (c *ControlSocket) rebind(replace bool) error {
	if replace {
		_ = os.Remove(c.Path)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: c.Path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("bind control socket %s again: %w", c.Path, err)
	}
	mode, gid := os.FileMode(0o600), -1
	if c.kept.permSet {
		mode, gid = c.kept.mode, c.kept.gid
	}
	err = os.Chmod(c.Path, mode)
	if err == nil && gid >= 0 {
		err = os.Chown(c.Path, -1, gid)
	}
	var fi os.FileInfo
	if err == nil {
		fi, err = os.Lstat(c.Path)
	}
	if err != nil {
		ln.Close() // removes the path again
		return fmt.Errorf("bind control socket %s again: %w", c.Path, err)
	}
	sys := fi.Sys().(*syscall.Stat_t)
	c.kept.mu.Lock()
	old := c.Listener
	c.Listener = ln
	c.kept.dev, c.kept.ino, c.kept.known = sys.Dev, sys.Ino, true
	c.kept.mu.Unlock()
	old.SetUnlinkOnClose(false) // the path is the new socket's
	_ = old.Close()             // the acceptor moves on to the new one
	return nil
}

// Acceptor is the net.Listener the control server serves: it accepts on
// whichever socket is bound at the path now.
func (c *ControlSocket) Acceptor() net.Listener { return &controlAcceptor{c: c} }

type controlAcceptor struct {
	c      *ControlSocket
	closed atomic.Bool
}

func (a *controlAcceptor) Accept() (net.Conn, error) {
	for {
		ln := a.c.current()
		conn, err := ln.Accept()
		if err == nil {
			return conn, nil
		}
		if a.closed.Load() || a.c.current() == ln {
			return nil, err
		}
		// The socket was replaced under us: accept on the new one.
	}
}

// Close closes the current socket (removing its path, unless Release or
// the handover said otherwise).
func (a *controlAcceptor) Close() error {
	a.closed.Store(true)
	return a.c.current().Close()
}

func (a *controlAcceptor) Addr() net.Addr { return a.c.current().Addr() }

// controlCheckEvery is how often the control socket's path is checked
// without an inotify event (one missed, or the directory replaced).
const controlCheckEvery = time.Minute

// watchControl runs on an effect goroutine until ctx ends: it has the loop
// check the control socket's path at once (a baton that took over through
// an upgrade finds it as the old one left it), whenever inotify reports a
// change of that name in its directory, and every controlCheckEvery.
func (s *Supervisor) watchControl(ctx context.Context) {
	path := s.cfg.Control.Path
	var events <-chan fsnotify.Event
	var errs <-chan error
	if w, err := fsnotify.NewWatcher(); err != nil {
		s.log.Warn("watch the control socket's directory", zap.Error(err))
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(path)); err != nil {
			s.log.Warn("watch the control socket's directory", zap.Error(err))
		} else {
			events, errs = w.Events, w.Errors
		}
	}
	s.inLoop(s.keepControl)
	timer := s.clock.NewTimer(controlCheckEvery)
	defer func() { timer.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Name != path {
				continue
			}
		case _, ok := <-errs: // an overflow: check anyway
			if !ok {
				errs = nil
				continue
			}
		case <-timer.C():
			timer = s.clock.NewTimer(controlCheckEvery)
		}
		s.inLoop(s.keepControl)
	}
}

// keepControl runs on the loop: see ControlSocket.keep. After a successful
// upgrade the next baton owns the path.
func (s *Supervisor) keepControl() {
	if s.handedOver.Load() {
		return
	}
	rebound, err := s.cfg.Control.keep()
	switch {
	case errors.Is(err, errControlLockGone):
		s.log.Error("control socket", zap.Error(err))
	case err != nil:
		s.log.Warn("control socket", zap.Error(err))
	case rebound:
		s.log.Warn("control socket path was removed or replaced: bound a new socket there", zap.String("path", s.cfg.Control.Path))
	}
}
