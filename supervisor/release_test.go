package supervisor

import (
	"os"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
)

// testListener returns a listening TCP socket on loopback and its inode.
func testListener(t testing.TB) (int, uint64) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 16); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return fd, st.Ino
}

// TestReleaseWatchCatchesDup: the ticks watch only the descriptors the last
// scan found; a listener dup()ed after it is found by the confirming scan,
// so the watch never says released while one is open.
func TestReleaseWatchCatchesDup(t *testing.T) {
	fd, inode := testListener(t)
	w := &releaseWatch{inodes: map[uint64]bool{inode: true}, members: func() ([]int, error) { return []int{os.Getpid()}, nil }}
	defer w.close()
	if w.released() {
		t.Fatal("released while this process holds the listener")
	}
	if len(w.held) != 1 || w.held[0].fd != fd {
		t.Fatalf("held %+v, want fd %d", w.held, fd)
	}
	for range 3 {
		if w.released() {
			t.Fatal("released while the listener is open")
		}
	}
	if w.scans != 1 || w.ticks != 3 {
		t.Errorf("%d scans and %d ticks, want 1 scan then 3 ticks", w.scans, w.ticks)
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { unix.Close(dup) }()
	// The watched descriptor now names something else (not a socket): the
	// tick drops it, the confirming scan finds the duplicate.
	if err := unix.Dup3(int(os.Stdin.Fd()), fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	if w.released() {
		t.Fatal("released while a duplicate of the listener is open")
	}
	if len(w.held) != 1 || w.held[0].fd != dup || w.scans != 2 {
		t.Fatalf("held %+v after %d scans, want fd %d after 2", w.held, w.scans, dup)
	}
	unix.Close(dup)
	dup = -1
	if !w.released() {
		t.Fatal("not released once every descriptor of the listener is closed")
	}
	if w.scans != 3 {
		t.Errorf("%d scans, want 3: the release is confirmed by a full scan", w.scans)
	}
}

// TestReleaseWatchScanError: a membership that cannot be read is not a
// release (never acknowledge on doubt).
func TestReleaseWatchScanError(t *testing.T) {
	w := &releaseWatch{inodes: map[uint64]bool{1: true}, members: func() ([]int, error) { return nil, unix.EIO }}
	if w.released() {
		t.Fatal("released on a membership read error")
	}
}

// BenchmarkReleasePoll times one poll of the release watch against a real
// process (this one) holding one listener and n other sockets: a tick
// (readlink of the recorded descriptors only), the full scan that starts
// and confirms a watch (every descriptor of the process), and, for
// comparison, SocketInodes, which every poll read before (the cgroup's
// members' whole descriptor tables).
//
//	go test -run '^$' -bench ReleasePoll ./supervisor/
func BenchmarkReleasePoll(b *testing.B) {
	_, inode := testListener(b)
	pfs, err := proc.NewFS()
	if err != nil {
		b.Fatal(err)
	}
	self := func() ([]int, error) { return []int{os.Getpid()}, nil }
	open := 0
	for _, n := range []int{16, 1024, 8192} {
		for ; open < n; open += 2 {
			p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatalf("%d sockets open: %v", open, err)
			}
			b.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
		}
		b.Run("fds="+strconv.Itoa(n), func(b *testing.B) {
			w := &releaseWatch{inodes: map[uint64]bool{inode: true}, members: self}
			defer w.close()
			if w.released() {
				b.Fatal("released")
			}
			b.Run("tick", func(b *testing.B) {
				for b.Loop() {
					if w.tick() {
						b.Fatal("tick lost the listener")
					}
				}
			})
			b.Run("scan", func(b *testing.B) {
				for b.Loop() {
					if w.scan() {
						b.Fatal("scan lost the listener")
					}
				}
			})
			b.Run("SocketInodes", func(b *testing.B) {
				for b.Loop() {
					if in, err := pfs.SocketInodes(os.Getpid()); err != nil || !in[inode] {
						b.Fatal("SocketInodes lost the listener", err)
					}
				}
			})
		})
	}
}
