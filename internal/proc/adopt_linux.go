package proc

import (
	"errors"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// StatusUnknown is the exit code reported for an adopted process: it is not
// baton's child, so its exit status cannot be collected.
const StatusUnknown = -1

// Handover is what another baton needs to keep supervising a process it
// did not start: its pid, a pidfd (owned by the receiver) and the read end of
// its output pipe (owned by the receiver; -1 when there is none).
type Handover struct {
	Pid    int
	Pidfd  int
	Output int
}

// Handover returns p's pidfd and output pipe for another baton: duplicates,
// owned by the caller, close-on-exec.
func (p *Process) Handover() (Handover, error) {
	h := Handover{Pid: p.pid, Pidfd: -1, Output: -1}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pidfd < 0 || p.released {
		return h, fmt.Errorf("pid %d: no pidfd", p.pid)
	}
	fd, err := unix.FcntlInt(uintptr(p.pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return h, fmt.Errorf("dup pidfd of %d: %w", p.pid, err)
	}
	h.Pidfd = fd
	if p.out != nil {
		raw, err := p.out.SyscallConn()
		if err == nil {
			_ = raw.Control(func(ofd uintptr) {
				if d, err := unix.FcntlInt(ofd, unix.F_DUPFD_CLOEXEC, 0); err == nil {
					h.Output = d
				}
			})
		}
	}
	return h, nil
}

// Adopt wraps a process another baton started (its pidfd and output pipe
// come from h, and are owned by the result): its exit is seen when the
// pidfd becomes readable; its exit status is StatusUnknown.
func Adopt(h Handover, onLine func(string)) *Process {
	p := &Process{pid: h.Pid, pidfd: h.Pidfd, wake: -1, done: make(chan struct{}), outDone: make(chan struct{})}
	if fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC); err == nil {
		p.wake = fd
	}
	go p.watchPidfd()
	if h.Output >= 0 {
		p.out = os.NewFile(uintptr(h.Output), "output")
		go p.readOutput(p.out, 0, onLine)
	} else {
		close(p.outDone)
	}
	return p
}

// watchPidfd closes done once the process exited (the pidfd polls
// readable), or gives up when the proc is released (its eventfd polls
// readable). It sleeps in poll(2) without a timeout: an adopted
// generation costs baton no wake-ups while it serves.
func (p *Process) watchPidfd() {
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	if p.wake >= 0 {
		fds = append(fds, unix.PollFd{Fd: int32(p.wake), Events: unix.POLLIN})
	}
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		// Exited, released, or poll failed (then nobody can tell
		// otherwise): done either way, and the exit status is unknown.
		p.exited(ExitStatus{Code: StatusUnknown})
		return
	}
}

// OpenPidfd returns a pidfd for pid if it is still the process that started
// at startTicks (field 22 of /proc/PID/stat): a pid can be reused.
func OpenPidfd(pid int, startTicks uint64) (int, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	// Checked after opening: the pidfd now pins this very process.
	if got, err := StartTicks(pid); err != nil || got != startTicks {
		unix.Close(fd)
		return -1, fmt.Errorf("pid %d is another process now (started at %d, recorded %d)", pid, got, startTicks)
	}
	return fd, nil
}

// TakeFd returns a duplicate of descriptor fd of the process behind pidfd
// (pidfd_getfd): the same open file description, close-on-exec. The caller
// owns it.
func TakeFd(pidfd, fd int) (int, error) {
	nfd, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_getfd: %w", err)
	}
	return nfd, nil
}

// FindSocketFd returns the number of a descriptor of pid that is the socket
// with this inode, or -1.
func FindSocketFd(pid int, inode uint64) int {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	for _, e := range ents {
		if t, err := os.Readlink(dir + "/" + e.Name()); err == nil && t == want {
			n, _ := strconv.Atoi(e.Name())
			return n
		}
	}
	return -1
}
