package proc

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// StartSpec describes one child process.
type StartSpec struct {
	Path      string   // program to exec (absolute)
	Argv      []string // argv, argv[0] included
	Env       []string // the whole environment
	Dir       string   // working directory; "" keeps baton's
	Files     []int    // borrowed descriptors that become fds 3, 4, ... in the child
	Rlimits   []Rlimit // set between fork and exec
	ListenPID bool     // set LISTEN_PID to the child's own pid
	// InCgroup starts the child in the cgroup v2 directory CgroupFD
	// (borrowed) with clone3's CLONE_INTO_CGROUP: it is in it before its
	// first instruction.
	InCgroup bool
	CgroupFD int
	// OnOutput receives each line the child (or its descendants) writes to
	// stdout or stderr. It runs on the process's output goroutine.
	OnOutput func(line string)
	// MaxLine bounds a line passed to OnOutput (0: maxLogLine); a longer
	// one is cut there and ends with cutMarker.
	MaxLine int
	// Sched, unless nil, is the nice level and CPU set the child starts
	// with, inherited from the thread that forks it (startsched_linux.go).
	Sched *StartSched
}

// ErrDone is returned when signalling a process already reaped.
var ErrDone = errors.New("process already exited")

// outputTail is how much of a child's output is kept for error messages.
const outputTail = 4096

// ExecStarter starts children, each in its own process group, with stdin
// on /dev/null and stdout+stderr on a pipe, registered with the Reaper. A
// child whose limits are the ones baton took on itself (TakeOnRlimits)
// inherits them and is started directly; any other goes through the exec
// shim (the running binary, /proc/self/exe, with ExecShimArg), which sets
// them between fork and exec at the cost of one more program start.
type ExecStarter struct {
	Reaper *Reaper
	// Shim is the binary that implements RunExecShim; default /proc/self/exe,
	// which works even after baton's own file was replaced on disk.
	Shim string
	// Own are the limits baton set on itself with TakeOnRlimits (nil: none;
	// every start goes through the shim).
	Own []Rlimit
}

// direct reports whether sp can be started without the shim: it needs no
// LISTEN_PID, and its limits are the ones baton holds now (checked at each
// start: another process may have changed baton's with prlimit).
func (s *ExecStarter) direct(sp StartSpec) bool {
	if s.Own == nil || sp.ListenPID || !sameRlimits(sp.Rlimits, s.Own) {
		return false
	}
	return holdsRlimits(sp.Rlimits)
}

// Start starts the child sp describes. Its pid is registered with the
// Reaper before the child can exit.
func (s *ExecStarter) Start(sp StartSpec) (*Process, error) {
	shim := s.Shim
	if shim == "" {
		shim = "/proc/self/exe"
	}
	path, argv := sp.Path, sp.Argv
	if !s.direct(sp) {
		spec, err := json.Marshal(shimSpec{Path: sp.Path, Argv: sp.Argv, Rlimits: sp.Rlimits, ListenPID: sp.ListenPID})
		if err != nil {
			return nil, err
		}
		path, argv = shim, []string{"baton-exec", ExecShimArg, string(spec)}
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer devnull.Close()
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p := &Process{done: make(chan struct{}), outDone: make(chan struct{}), pidfd: -1, wake: -1}
	// Fd on our own private pipe and /dev/null only: it makes them blocking,
	// which is what a child's stdio should be. Shared sockets are passed as
	// raw descriptors and never go through (*os.File).Fd.
	files := append([]uintptr{devnull.Fd(), wr.Fd(), wr.Fd()}, uintptrs(sp.Files)...)
	attr := &syscall.ProcAttr{
		Dir: sp.Dir, Env: sp.Env, Files: files,
		Sys: &syscall.SysProcAttr{Setpgid: true, PidFD: &p.pidfd, UseCgroupFD: sp.InCgroup, CgroupFD: sp.CgroupFD},
	}
	p.pid, err = s.Reaper.Start(sp.Sched.wrap(func() (int, error) {
		pid, _, err := syscall.StartProcess(path, argv, attr)
		return pid, err
	}), p.exited)
	runtime.KeepAlive(devnull)
	wr.Close()
	if err != nil {
		rd.Close()
		return nil, fmt.Errorf("start %s: %w", sp.Path, err)
	}
	p.out = rd
	go p.readOutput(rd, sp.MaxLine, sp.OnOutput)
	return p, nil
}

// Owns reports whether pid is a child this starter started that was not
// reaped yet.
func (s *ExecStarter) Owns(pid int) bool { return s.Reaper.Owns(pid) }

func uintptrs(fds []int) []uintptr {
	out := make([]uintptr, len(fds))
	for i, fd := range fds {
		out[i] = uintptr(fd)
	}
	return out
}

// Process is a started child, the leader of its own process group, or a
// process another baton started and handed over (Adopt). Its pidfd and
// output pipe are its own until Release.
type Process struct {
	pid     int
	pidfd   int
	done    chan struct{}
	outDone chan struct{}
	out     *os.File // read end of the output pipe (for a handover)
	wake    int      // adopted procs: an eventfd that ends watchPidfd (-1: none)

	mu       sync.Mutex
	status   ExitStatus
	tail     []byte
	released bool
	exitOnce sync.Once
}

// Pid is the process id.
func (p *Process) Pid() int { return p.pid }

func (p *Process) exited(st ExitStatus) {
	p.exitOnce.Do(func() {
		p.mu.Lock()
		p.status = st
		p.mu.Unlock()
		close(p.done)
	})
}

// Signal signals the leader; ErrDone once it was reaped.
func (p *Process) Signal(sig unix.Signal) error {
	select {
	case <-p.done:
		return ErrDone
	default:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd >= 0 && !p.released {
		err := unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
		if errors.Is(err, unix.ESRCH) {
			return ErrDone
		}
		return err
	}
	return unix.Kill(p.pid, sig)
}

// SignalGroup signals every process of the leader's process group.
func (p *Process) SignalGroup(sig unix.Signal) error {
	err := unix.Kill(-p.pid, sig)
	if errors.Is(err, unix.ESRCH) {
		return ErrDone
	}
	return err
}

// Done is closed once the leader was reaped; Status is valid then.
func (p *Process) Done() <-chan struct{} { return p.done }

// OutputDone is closed when every writer closed the output pipe.
func (p *Process) OutputDone() <-chan struct{} { return p.outDone }

// Status is how the process ended, once Done is closed.
func (p *Process) Status() ExitStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// Output is the tail of what the process group wrote to stdout/stderr.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.TrimSpace(string(p.tail))
}

// Release frees the pidfd; call it once the process is forgotten.
func (p *Process) Release() {
	p.mu.Lock()
	if p.released {
		p.mu.Unlock()
		return
	}
	p.released = true
	p.mu.Unlock()
	if p.wake >= 0 {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1) // an eventfd counter is a host-endian uint64
		_, _ = unix.Write(p.wake, one[:])
		<-p.done // watchPidfd returns at once, closing done
		unix.Close(p.wake)
	}
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
	}
}

// readOutput copies the child's output, line by line, to onLine and to the
// tail buffer until every writer is gone. A line over maxLine bytes (0:
// maxLogLine) is cut there and marked; the lines after it are read as usual.
func (p *Process) readOutput(rd io.ReadCloser, maxLine int, onLine func(string)) {
	defer close(p.outDone)
	defer rd.Close()
	if maxLine <= 0 {
		maxLine = maxLogLine
	}
	readLines(rd, maxLine, func(b []byte, cut int) {
		line := string(b)
		if cut > 0 {
			line += cutMarker(cut)
		}
		p.mu.Lock()
		p.tail = append(p.tail, line[max(0, len(line)-outputTail):]...)
		p.tail = append(p.tail, '\n')
		if len(p.tail) > outputTail {
			p.tail = p.tail[len(p.tail)-outputTail:]
		}
		p.mu.Unlock()
		if onLine != nil {
			onLine(line)
		}
	})
}

// GroupAlive reports whether any process is left in process group pgid.
func GroupAlive(pgid int) bool {
	return !errors.Is(unix.Kill(-pgid, 0), unix.ESRCH)
}
