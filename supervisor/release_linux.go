package supervisor

import (
	"errors"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// releaseTight is how long a release watch polls every millisecond before
// backing off (pollEvery): an HAProxy worker closes its listeners within
// milliseconds of the drain signal, and the reload's acknowledgement waits
// for it.
const releaseTight = 100 * time.Millisecond

// releaseWatch tells when no process of an old generation holds a
// listening socket any more. No kernel event says that a process closed a
// descriptor, so it polls, as cheaply as it can: a full scan (every member,
// every descriptor) records which descriptors refer to a listener; each
// tick then reads only those links; once they are all closed, a full scan
// confirms (a process that dup()ed a listener, or a new process of the
// generation, is found there and watched in turn). Only a clean full scan
// says released: never on doubt.
type releaseWatch struct {
	members func() ([]int, error) // every process of the generation (ScanMembers)
	inodes  map[uint64]bool       // the listening sockets
	held    []heldFd              // what the last scan found, minus what ticks saw closed
	scans   int
	ticks   int
}

// heldFd is descriptor fd of a process, open on listening socket inode when
// a scan found it. dir is the process's /proc/PID/fd opened then: it keeps
// naming that very process (a reused pid is another directory), so a tick
// cannot mistake another process's descriptor for it.
type heldFd struct {
	pid, fd int
	inode   uint64
	dir     int
}

// released makes one poll: a tick while descriptors are held, else a full
// scan. It reports whether the last full scan found none.
func (w *releaseWatch) released() bool {
	if len(w.held) > 0 && !w.tick() {
		return false
	}
	return w.scan()
}

// tick drops the recorded descriptors that are closed (or no longer refer
// to their socket); true when none is left. An unreadable one makes it
// return true too, so that a full scan decides.
func (w *releaseWatch) tick() bool {
	w.ticks++
	buf := make([]byte, 64)
	keep := w.held[:0]
	doubt := false
	for _, h := range w.held {
		inode, err := fdSocketInode(h.dir, h.fd, buf)
		switch {
		case err == nil && inode == h.inode:
			keep = append(keep, h)
		case err == nil || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH):
			unix.Close(h.dir) // closed, reused for something else, or the process is gone
		default:
			keep = append(keep, h)
			doubt = true
		}
	}
	w.held = keep
	return len(keep) == 0 || doubt
}

// scan records every descriptor of every member that refers to one of the
// listeners; true when there is none and the membership could be read.
func (w *releaseWatch) scan() bool {
	w.scans++
	w.close()
	pids, err := w.members()
	if err != nil {
		return false
	}
	for _, pid := range pids {
		w.held = append(w.held, listenerFds(pid, w.inodes)...)
	}
	return len(w.held) == 0
}

// close releases the descriptors the watch holds.
func (w *releaseWatch) close() {
	for _, h := range w.held {
		unix.Close(h.dir)
	}
	w.held = w.held[:0]
}

// listenerFds opens /proc/PID/fd and returns the descriptors of pid that
// refer to one of inodes, each with a duplicate of that directory's
// descriptor (the caller closes them). A process that exited meanwhile has
// none.
func listenerFds(pid int, inodes map[uint64]bool) []heldFd {
	dir, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	var out []heldFd
	link := make([]byte, 64)
	ents := make([]byte, 8192)
	for {
		n, err := unix.Getdents(dir, ents)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		for b := ents[:n]; len(b) > 0; {
			name, rest := direntName(b)
			b = rest
			fd, err := strconv.Atoi(name)
			if err != nil {
				continue // "." and ".."
			}
			if inode, err := fdSocketInode(dir, fd, link); err == nil && inodes[inode] {
				out = append(out, heldFd{pid: pid, fd: fd, inode: inode})
			}
		}
	}
	if len(out) == 0 {
		unix.Close(dir)
		return nil
	}
	out[0].dir = dir
	for i := 1; i < len(out); i++ {
		out[i].dir, err = unix.FcntlInt(uintptr(dir), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			out[i].dir = -1 // a tick finds it unreadable: a full scan decides
		}
	}
	return out
}

// direntName returns the name of the first linux_dirent64 in b and the
// rest of b.
func direntName(b []byte) (string, []byte) {
	// struct linux_dirent64 { u64 ino; s64 off; u16 reclen; u8 type; char name[]; }
	const nameOff = 19
	if len(b) < nameOff {
		return "", nil
	}
	reclen := int(b[16]) | int(b[17])<<8
	if reclen < nameOff || reclen > len(b) {
		return "", nil
	}
	name := b[nameOff:reclen]
	for i, c := range name {
		if c == 0 {
			name = name[:i]
			break
		}
	}
	return string(name), b[reclen:]
}

// fdSocketInode reads the link of descriptor fd in the /proc/PID/fd
// directory dir: the socket's inode, or 0 for something else than a socket.
func fdSocketInode(dir, fd int, buf []byte) (uint64, error) {
	if dir < 0 {
		return 0, unix.EBADF
	}
	n, err := unix.Readlinkat(dir, strconv.Itoa(fd), buf)
	if err != nil {
		return 0, err
	}
	const prefix = "socket:["
	s := buf[:n]
	if len(s) < len(prefix)+2 || string(s[:len(prefix)]) != prefix || s[len(s)-1] != ']' {
		return 0, nil
	}
	return strconv.ParseUint(string(s[len(prefix):len(s)-1]), 10, 64)
}
