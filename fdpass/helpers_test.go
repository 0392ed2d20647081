package fdpass_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

// childEnv, when set, turns the test binary into a _getsocks client (see
// runGetsocksChild): the real-process tests re-execute it as the peer.
const (
	childEnv     = "FDPASS_TEST_CHILD"
	childPathEnv = "FDPASS_TEST_GETSOCKS_PATH"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "getsocks" {
		os.Exit(runGetsocksChild(os.Getenv(childPathEnv)))
	}
	goleak.VerifyTestMain(m)
}

// runGetsocksChild fetches the sockets from path and prints one line per
// socket ("OK <inode> <namespace> <interface>", empty names as "-"), or
// "ERR <error>" and exits 1.
func runGetsocksChild(path string) int {
	fds, recs, err := fdpass.FetchGetsocks(path, 5*time.Second)
	if err != nil {
		fmt.Printf("ERR %v\n", err)
		return 1
	}
	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			fmt.Printf("ERR fstat: %v\n", err)
			return 1
		}
		fmt.Printf("OK %d %s %s\n", st.Ino, dash(recs[i].Namespace), dash(recs[i].Interface))
		unix.Close(fd)
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// testTimeout bounds every wait in these tests.
const testTimeout = 10 * time.Second

// eventually polls cond until it returns nil, and fails the test with its
// last error once testTimeout has passed. The poll interval only limits CPU
// use; nothing here waits in place of synchronisation.
func eventually(t testing.TB, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %v", testTimeout, err)
		}
		pause()
	}
}

func pause() {
	timer := time.NewTimer(5 * time.Millisecond)
	<-timer.C
}

// fdCount is the number of descriptors open in this process.
func fdCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents) // includes the directory's own fd, consistently
}

// checkFdCount fails if the process does not get back to want descriptors.
// Nothing in these tests opens descriptors in the background, but give a
// closing one (e.g. a child's pidfd after Wait) a moment.
func checkFdCount(t testing.TB, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got := fdCount(t)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d descriptors open, want %d (leak)", what, got, want)
		}
		pause()
	}
}

func fdInode(t testing.TB, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatalf("fstat %d: %v", fd, err)
	}
	return st.Ino
}

func isCloexec(t testing.TB, fd int) bool {
	t.Helper()
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatalf("F_GETFD %d: %v", fd, err)
	}
	return fl&unix.FD_CLOEXEC != 0
}

func isNonblock(t testing.TB, fd int) bool {
	t.Helper()
	nb, err := fdpass.Nonblocking(fd)
	if err != nil {
		t.Fatalf("F_GETFL %d: %v", fd, err)
	}
	return nb
}

func getsockopt(t testing.TB, fd, level, opt int, name string) int {
	t.Helper()
	v, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		t.Fatalf("getsockopt %s: %v", name, err)
	}
	return v
}

// procSocketInodes maps the socket inodes in /proc/PID/fd to the fd numbers
// holding them. A process that is gone yields an empty map.
func procSocketInodes(pid int) map[uint64][]int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	out := map[uint64][]int{}
	if err != nil {
		return out
	}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]"), 10, 64)
		if err != nil {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		out[ino] = append(out[ino], fd)
	}
	return out
}

// listenN creates n TCP listeners on 127.0.0.1 with kernel-chosen ports,
// closed at cleanup.
func listenN(t testing.TB, n int) []*fdpass.Socket {
	t.Helper()
	sp, err := fdpass.ParseSpec("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	socks := make([]*fdpass.Socket, n)
	for i := range socks {
		s, err := fdpass.Listen(sp)
		if err != nil {
			t.Fatalf("listen #%d: %v", i, err)
		}
		socks[i] = s
	}
	t.Cleanup(func() {
		for _, s := range socks {
			if err := s.Close(); err != nil {
				t.Errorf("close %s: %v", s.Addr(), err)
			}
		}
	})
	return socks
}

func mustSpec(t testing.TB, s string) fdpass.Spec {
	t.Helper()
	sp, err := fdpass.ParseSpec(s)
	if err != nil {
		t.Fatalf("ParseSpec(%q): %v", s, err)
	}
	return sp
}

// shortTempDir returns a private directory with a short path, for unix
// socket paths (107 bytes at most; t.TempDir() can be longer).
func shortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// socketpair returns the two ends of a unix stream socketpair as
// *net.UnixConn, with a deadline, closed at cleanup.
func socketpair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	// Bound every read and write: a broken peer fails the test, not hangs it.
	for _, c := range []*net.UnixConn{a, b} {
		if err := c.SetDeadline(time.Now().Add(testTimeout)); err != nil {
			t.Fatal(err)
		}
	}
	return a, b
}

// ipv6Loopback skips the test when ::1 cannot be bound.
func ipv6Loopback(t testing.TB) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no IPv6: %v", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}); err != nil {
		t.Skipf("IPv6 loopback unavailable: %v", err)
	}
}

// closeFds closes descriptors the test owns.
func closeFds(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
