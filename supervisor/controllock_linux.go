package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// controlLock is the exclusive flock on CONTROL.lock that makes a control
// path one baton's. The file records the holder's pid. The descriptor is
// the lock's only owner; an upgrade hands a duplicate to the next baton.
type controlLock struct {
	f       *os.File
	path    string
	created bool // this baton created the file (a refusal removes it again)
	locked  bool // this baton holds the flock on it
}

// lockAttempts bounds the retries when the lock file is replaced while it
// is being locked (an exiting baton unlinks it).
const lockAttempts = 3

// acquireControlLock opens path (never through a symbolic link, never a
// file that is not a regular file of baton's own uid with one name), takes
// the lock without waiting, checks that path still names the locked file,
// and writes baton's pid into it. On error nothing is left behind: a file
// this call created is removed again.
func acquireControlLock(path, control string) (*controlLock, error) {
	for range lockAttempts {
		l, err := openLockFile(path)
		if err != nil {
			return nil, err
		}
		if err := unix.Flock(int(l.f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			holder := make([]byte, 32)
			n, _ := l.f.ReadAt(holder, 0)
			l.abandon()
			return nil, fmt.Errorf("%w: another baton (pid %s) runs with control socket %s", errControlInUse, strings.TrimSpace(string(holder[:n])), control)
		}
		l.locked = true
		if !l.current() {
			l.abandon() // an exiting baton unlinked it meanwhile: lock the new one
			continue
		}
		// The pid is only for the message of a refused baton.
		if l.f.Truncate(0) == nil {
			_, _ = l.f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		return l, nil
	}
	return nil, fmt.Errorf("control socket lock %s: replaced %d times while locking it", path, lockAttempts)
}

// openLockFile creates path, or opens the file there if it is a regular
// file baton's uid owns with no other name: O_NOFOLLOW refuses a symbolic
// link, O_NONBLOCK keeps a FIFO from blocking the open, and a hard link to
// somebody's file is refused by its link count.
func openLockFile(path string) (*controlLock, error) {
	const flags = unix.O_RDWR | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	created := true
	fd, err := unix.Open(path, flags|unix.O_CREAT|unix.O_EXCL, 0o600)
	if errors.Is(err, unix.EEXIST) {
		created = false
		fd, err = unix.Open(path, flags, 0)
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%w: control socket lock %s is a symbolic link: baton never writes through one; remove it (rm %s)", ErrUntrustedPath, path, path)
	}
	if err != nil {
		return nil, fmt.Errorf("control socket lock %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control socket lock %s: %w", path, err)
	}
	euid := uint32(os.Geteuid())
	var bad string
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		bad = "is not a regular file"
	case st.Uid != euid:
		bad = fmt.Sprintf("is owned by uid %d, not by baton's uid %d", st.Uid, euid)
	case st.Nlink != 1:
		bad = fmt.Sprintf("has %d names (a hard link)", st.Nlink)
	}
	if bad != "" {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: control socket lock %s %s: baton does not write to it; remove it (rm %s)", ErrUntrustedPath, path, bad, path)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("control socket lock %s: %w", path, err)
	}
	return &controlLock{f: os.NewFile(uintptr(fd), path), path: path, created: created}, nil
}

// current reports whether the path still names the file this lock holds.
func (l *controlLock) current() bool { return namesFile(l.path, l.f) }

// abandon closes the lock after a refusal, removing the file if this baton
// created it and holds its lock: a file it created but another baton
// locked first is that baton's lock file now.
func (l *controlLock) abandon() {
	if l.created && l.locked && l.current() {
		_ = os.Remove(l.path)
	}
	_ = l.f.Close()
}

// namesFile reports whether path names the open file f (same device and
// inode; a symbolic link at path is not followed).
func namesFile(path string, f *os.File) bool {
	var mine, now unix.Stat_t
	if unix.Fstat(int(f.Fd()), &mine) != nil || unix.Lstat(path, &now) != nil {
		return false
	}
	return mine.Dev == now.Dev && mine.Ino == now.Ino
}

// releaseLock removes the lock file at path (while f still holds the lock,
// and only if path still names it: the next baton then creates a fresh
// one) and closes f. For a baton that stops; after an upgrade the next
// baton holds the lock, and closing f alone is right.
func releaseLock(path string, f *os.File) error {
	if namesFile(path, f) {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			_ = f.Close()
			return fmt.Errorf("remove control socket lock: %w", err)
		}
	}
	return f.Close()
}
