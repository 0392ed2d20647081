package proxyctl

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// binaryID identifies the file a program path names now: a binary
// replaced on disk (a package upgrade) is another one.
type binaryID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

func statBinary(path string) (binaryID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return binaryID{}, err
	}
	return binaryID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

// notifiesReady reports whether the binary file bin is known (from an
// earlier generation's "show info") to be an HAProxy whose master sends
// READY=1 once its worker is ready.
func (h *HAProxy) notifiesReady(bin binaryID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.notifies[bin]
}

// learn records what "show info" said of the version of bin.
func (h *HAProxy) learn(bin binaryID, version string) {
	ok := readyAfterWorker(version)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.notifies) > 16 {
		clear(h.notifies) // binaries replaced over and over: start again
	}
	h.notifies[bin] = ok
}

// readyAfterWorker reports whether an HAProxy of this version (as "show
// info" or -v print it: 3.2.0-e134140d2, 3.1-dev14, 2.6.12-1+deb12u4)
// sends READY=1 only once its new worker is ready: 3.1 and later. Before,
// the master sent it right after forking. An unreadable version: no.
func readyAfterWorker(version string) bool {
	f := strings.FieldsFunc(version, func(r rune) bool { return r < '0' || r > '9' })
	if len(f) < 2 || !strings.HasPrefix(version, f[0]) {
		return false
	}
	major, err1 := strconv.Atoi(f[0])
	minor, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return false
	}
	return major > 3 || major == 3 && minor >= 1
}
