package doctor

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Bounds of the files doctor reads at paths other processes name (any
// user's proxy command line, a baton's --config, files beside its control
// socket): doctor runs as root, and such a path may name /dev/zero, a FIFO
// nobody writes, or a huge file.
const (
	maxConfigFile  = 16 << 20 // one proxy configuration file
	maxConfigTotal = 64 << 20 // all files of one proxy configuration
	maxBatonConfig = 1 << 20  // a baton --config file
	maxBatonState  = 16 << 20 // CONTROL.state, CONTROL.listeners
)

// errTooLarge: a file is over the bound doctor reads.
var errTooLarge = errors.New("too large")

// errNotRegular: a path names something other than a regular file.
var errNotRegular = errors.New("not a regular file")

// pinRegular opens path (symlinks followed, as the proxies follow them)
// with O_PATH, which opens nothing behind it: no device is opened, no FIFO
// waited on. It returns the descriptor (owned by the caller) if it is a
// regular file of at most limit bytes, else errNotRegular or errTooLarge
// saying what it is; a missing path gives an fs.ErrNotExist error.
func pinRegular(path string, limit int64) (int, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w (%s): not read", path, errNotRegular, fileKind(st.Mode))
	case st.Size > limit:
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w: %d bytes, over the %d bytes doctor reads: not read", path, errTooLarge, st.Size, limit)
	}
	return fd, nil
}

// pinnedPath names the file behind an O_PATH descriptor: opening it opens
// that very file, whatever path now names.
func pinnedPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// readRegular reads path if it is a regular file of at most limit bytes
// (see pinRegular); a file that grew past limit meanwhile is refused too.
func readRegular(path string, limit int64) ([]byte, error) {
	pfd, err := pinRegular(path, limit)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	f, err := os.OpenFile(pinnedPath(pfd), os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: %w: it grew past the %d bytes doctor reads: not read", path, errTooLarge, limit)
	}
	return data, nil
}

// checkRegular reports whether path exists (false, nil when it does not)
// and fails unless it is a regular file of at most limit bytes: for files
// another package reads by path (a baton's state and listener history).
// Unlike readRegular it leaves a window between the check and that read.
func checkRegular(path string, limit int64) (bool, error) {
	pfd, err := pinRegular(path, limit)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	unix.Close(pfd)
	return true, nil
}

// readBatonConfig reads a baton --config file named on a command line.
func readBatonConfig(path string) ([]byte, error) { return readRegular(path, maxBatonConfig) }

// configReader returns the reader of one proxy configuration's files: each
// a regular file of at most maxConfigFile bytes, all of them at most
// maxConfigTotal.
func configReader() func(string) ([]byte, error) {
	left := int64(maxConfigTotal)
	return func(path string) ([]byte, error) {
		data, err := readRegular(path, min(maxConfigFile, left))
		if errors.Is(err, errTooLarge) && left < maxConfigFile {
			return nil, fmt.Errorf("%s: %w: the configuration's files come to more than the %d MiB doctor reads: not read", path, errTooLarge, maxConfigTotal>>20)
		}
		left -= int64(len(data))
		return data, err
	}
}

func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "not a regular file"
}
