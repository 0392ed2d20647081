package proxyctl

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
)

// GenericOptions configure the generic driver.
type GenericOptions struct {
	DrainSignal unix.Signal // default SIGTERM
	StopSignal  unix.Signal // default SIGINT
	// Check is a config check command (argv); none when empty.
	Check []string
	// Readiness: READY=1 on the generation's NOTIFY_SOCKET (the default), or
	// ReadyProbe exiting 0, or — only when asked for — the process being
	// alive ReadyAfter after its start.
	ReadyProbe []string
	ReadyAfter time.Duration
}

// Generic drives any server that speaks systemd socket activation: the
// listeners are fds 3, 4, ... with LISTEN_FDS, LISTEN_FDNAMES (from the
// listener names) and LISTEN_PID (set to the child's own pid by the exec
// shim); NOTIFY_SOCKET is a per-generation socket on which baton waits for
// READY=1.
type Generic struct {
	cmd []string
	opt GenericOptions
}

// What the generic driver and its sessions implement, checked at compile
// time. It reads no configuration and names no roles: it is a Driver only.
var (
	_ Driver = (*Generic)(nil)

	_ Session       = (*delaySession)(nil)
	_ Session       = (*probeSession)(nil)
	_ Session       = (*notifySession)(nil)
	_ ReadyNotifier = (*notifySession)(nil)
)

// NewGeneric returns a generic driver for cmd (argv[0] resolved).
func NewGeneric(cmd []string, opt GenericOptions) (*Generic, error) {
	if opt.DrainSignal == 0 {
		opt.DrainSignal = unix.SIGTERM
	}
	if opt.StopSignal == 0 {
		opt.StopSignal = unix.SIGINT
	}
	if len(opt.ReadyProbe) > 0 && opt.ReadyAfter > 0 {
		return nil, fmt.Errorf("%w: give a readiness probe or a ready-after delay, not both", ErrBadCommand)
	}
	return &Generic{cmd: cmd, opt: opt}, nil
}

// Name implements Driver.
func (d *Generic) Name() string { return "generic" }

// CheckArgv implements Driver.
func (d *Generic) CheckArgv(GenSpec) []string { return d.opt.Check }

// Signal implements Driver.
func (d *Generic) Signal(kind SignalKind) unix.Signal {
	if kind == Drain {
		return d.opt.DrainSignal
	}
	return d.opt.StopSignal
}

// Prepare implements Driver.
func (d *Generic) Prepare(g GenSpec) (Launch, Session, error) {
	fds := make([]int, len(g.Listeners))
	names := make([]string, len(g.Listeners))
	for i, l := range g.Listeners {
		fds[i], names[i] = l.Fd, l.Spec.Name
	}
	l := Launch{Argv: d.cmd, Env: fdpass.ListenFdsEnv(names), Files: fds, ListenPID: true}
	switch {
	case d.opt.ReadyAfter > 0:
		return l, &delaySession{after: d.opt.ReadyAfter}, nil
	case len(d.opt.ReadyProbe) > 0:
		if g.Run == nil {
			return Launch{}, nil, errors.New("generic: no command runner for the readiness probe")
		}
		return l, &probeSession{argv: d.opt.ReadyProbe, run: g.Run}, nil
	}
	ns, err := newNotifySession(filepath.Join(g.Dir, "notify.sock"))
	if err != nil {
		return Launch{}, nil, err
	}
	l.Env = append(l.Env, "NOTIFY_SOCKET="+ns.path)
	return l, ns, nil
}

// delaySession: ready once the process has lived `after`.
type delaySession struct {
	after time.Duration
	start time.Time
}

func (s *delaySession) Started(int)  { s.start = time.Now() }
func (s *delaySession) Close() error { return nil }
func (s *delaySession) Ready(context.Context) error {
	if left := s.after - time.Since(s.start); left > 0 {
		return fmt.Errorf("ready-after: %s to go", left.Round(time.Millisecond))
	}
	return nil
}

// probeSession: ready once the probe command exits 0. It runs at most every
// 100 ms, however often Ready is called.
type probeSession struct {
	argv []string
	run  func(ctx context.Context, argv []string) error
	last time.Time
	err  error
}

func (s *probeSession) Started(int)  {}
func (s *probeSession) Close() error { return nil }
func (s *probeSession) Ready(ctx context.Context) error {
	if !s.last.IsZero() && time.Since(s.last) < 100*time.Millisecond {
		return s.err
	}
	s.last = time.Now()
	s.err = s.run(ctx, s.argv)
	if s.err != nil {
		s.err = fmt.Errorf("readiness probe %q: %w", strings.Join(s.argv, " "), s.err)
	}
	return s.err
}

// notifySession listens on a per-generation NOTIFY_SOCKET for sd_notify
// datagrams and is ready once READY=1 came from the generation's leader or
// one of its descendants (SCM_CREDENTIALS tells the sender); with
// leaderOnly, from the leader alone.
type notifySession struct {
	path       string
	conn       *net.UnixConn
	pid        int
	leaderOnly bool
	// notified is closed at the first READY=1 (ReadyNotifier), after the
	// STATUS= of the same datagram was recorded.
	notified chan struct{}

	mu     sync.Mutex
	ready  bool
	status string
	wg     sync.WaitGroup
}

func newNotifySession(path string) (*notifySession, error) {
	_ = os.Remove(path)
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	raw, err := c.SyscallConn()
	if err == nil {
		cerr := raw.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
		})
		err = errors.Join(err, cerr)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	return &notifySession{path: path, conn: c, notified: make(chan struct{})}, nil
}

func (s *notifySession) Started(pid int) {
	s.mu.Lock()
	s.pid = pid
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.read()
	}()
}

func (s *notifySession) read() {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	for {
		n, oobn, _, _, err := s.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return // closed
		}
		sender := senderPid(oob[:oobn])
		s.mu.Lock()
		wasReady := s.ready
		if s.fromGeneration(sender) {
			for _, line := range strings.Split(string(buf[:n]), "\n") {
				switch {
				case line == "READY=1":
					s.ready = true
				case strings.HasPrefix(line, "STATUS="):
					s.status = strings.TrimPrefix(line, "STATUS=")
				}
			}
		}
		if s.ready && !wasReady {
			close(s.notified)
		}
		s.mu.Unlock()
	}
}

// fromGeneration: the leader itself or one of its descendants.
func (s *notifySession) fromGeneration(pid int) bool {
	if pid == s.pid {
		return true
	}
	if s.leaderOnly {
		return false
	}
	for _, d := range proc.Descendants(s.pid) {
		if d == pid {
			return true
		}
	}
	return false
}

func senderPid(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if cred, err := unix.ParseUnixCredentials(&m); err == nil {
			return int(cred.Pid)
		}
	}
	return 0
}

// ReadyNotified implements ReadyNotifier.
func (s *notifySession) ReadyNotified() <-chan struct{} { return s.notified }

// state returns whether READY=1 came, and the last STATUS= text.
func (s *notifySession) state() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready, s.status
}

func (s *notifySession) Ready(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready {
		return nil
	}
	return fmt.Errorf("no READY=1 on NOTIFY_SOCKET yet (does the server speak sd_notify? else use --ready-probe or --ready-after)")
}

func (s *notifySession) Close() error {
	err := s.conn.Close()
	s.wg.Wait()
	_ = os.Remove(s.path)
	return err
}
