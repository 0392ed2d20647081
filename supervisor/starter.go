package supervisor

import (
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
)

// Starter starts child processes.
type Starter interface {
	Start(proc.StartSpec) (Proc, error)
}

// Proc is a started child: the leader of its own process group.
type Proc interface {
	Pid() int
	// Signal signals the leader; proc.ErrDone once it was reaped.
	Signal(unix.Signal) error
	// SignalGroup signals every process of the leader's process group.
	SignalGroup(unix.Signal) error
	// Done is closed once the leader was reaped; Status is valid then.
	Done() <-chan struct{}
	Status() proc.ExitStatus
	// Output is the tail of what the process group wrote to stdout/stderr.
	Output() string
	// OutputDone is closed when every writer closed the output pipe.
	OutputDone() <-chan struct{}
	// Release frees the pidfd; call it once the process is forgotten.
	Release()
}

var _ Proc = (*proc.Process)(nil)

// ExecStarter is the real Starter: s starts each child (proc.ExecStarter).
// It is an owner (tracking.go): strays asks it which children it started.
func ExecStarter(s *proc.ExecStarter) Starter { return execStarter{s} }

type execStarter struct{ s *proc.ExecStarter }

func (e execStarter) Start(sp proc.StartSpec) (Proc, error) {
	p, err := e.s.Start(sp)
	if err != nil {
		return nil, err // not a nil *proc.Process in a Proc
	}
	return p, nil
}

func (e execStarter) Owns(pid int) bool { return e.s.Owns(pid) }

var _ owner = execStarter{}
