package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ExitStatus is how a process ended.
type ExitStatus struct {
	Code   int         // exit code, or 128+signal when killed by a signal
	Signal unix.Signal // the signal that killed it, 0 otherwise
}

// SignalName is sig as baton logs and prints it: SIGUSR1, SIGWINCH (not the
// C library's description, "user defined signal 1"); "signal N" for a
// number without a name.
func SignalName(sig unix.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// String is how the process ended: "exit status 1", or "killed by SIGKILL"
// (Code is then 128 + the signal's number).
func (st ExitStatus) String() string {
	switch {
	case st.Signal != 0:
		return "killed by " + SignalName(st.Signal)
	case st.Code == StatusUnknown:
		return "exit status unknown (a process baton adopted)"
	}
	return fmt.Sprintf("exit status %d", st.Code)
}

func exitStatus(ws unix.WaitStatus) ExitStatus {
	if ws.Signaled() {
		return ExitStatus{Code: 128 + int(ws.Signal()), Signal: ws.Signal()}
	}
	return ExitStatus{Code: ws.ExitStatus()}
}

// Reaper is the one owner of wait4 in baton. It reaps every child and, as
// baton is a child subreaper, every orphaned descendant, and routes each exit
// by pid to the callback registered when the child was started. Exits of pids
// nobody registered (orphans) go to the orphan callback.
//
// Nothing else in the process may wait for children (no os/exec): a
// wait4(-1) here would steal their status.
type Reaper struct {
	mu       sync.Mutex
	waiting  map[int]func(ExitStatus)
	onOrphan func(pid int, st ExitStatus)
	sigchld  <-chan os.Signal
	kick     chan struct{}
}

// NewReaper makes baton a child subreaper and returns a Reaper driven by
// SIGCHLD notifications on sigchld (from signal.Notify in cmd/baton).
// onOrphan may be nil.
func NewReaper(sigchld <-chan os.Signal, onOrphan func(pid int, st ExitStatus)) (*Reaper, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, err
	}
	if onOrphan == nil {
		onOrphan = func(int, ExitStatus) {}
	}
	return &Reaper{
		waiting: map[int]func(ExitStatus){}, onOrphan: onOrphan,
		sigchld: sigchld, kick: make(chan struct{}, 1),
	}, nil
}

// Start runs fork (which starts one child and returns its pid) with the
// routing table locked, so that the child's exit, however early, finds its
// callback. onExit runs on the reaper's goroutine and must not block.
func (r *Reaper) Start(fork func() (int, error), onExit func(ExitStatus)) (int, error) {
	r.mu.Lock()
	pid, err := fork()
	if err == nil {
		r.waiting[pid] = onExit
	}
	r.mu.Unlock()
	r.wake()
	return pid, err
}

// Owns reports whether pid is a child started through Start that was not
// reaped yet.
func (r *Reaper) Owns(pid int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.waiting[pid]
	return ok
}

func (r *Reaper) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run reaps until ctx is done. One goroutine runs it; its owner cancels ctx
// and waits for it to return.
func (r *Reaper) Run(ctx context.Context) {
	for {
		r.reapAll()
		select {
		case <-ctx.Done():
			return
		case <-r.sigchld:
		case <-r.kick:
		}
	}
}

// reapAll collects every exited child without blocking.
func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return // ECHILD: no children; 0: none exited
		}
		if !ws.Exited() && !ws.Signaled() {
			continue
		}
		r.mu.Lock()
		cb, ok := r.waiting[pid]
		delete(r.waiting, pid)
		r.mu.Unlock()
		if ok {
			cb(exitStatus(ws))
		} else {
			r.onOrphan(pid, exitStatus(ws))
		}
	}
}
