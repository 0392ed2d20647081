package proxyctl

import (
	"maps"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
)

// TestEpollInodes reads this very process's epoll sets: a listening socket
// added to one is found by its inode, and no longer once removed.
func TestEpollInodes(t *testing.T) {
	l := boundListener(t, "tcp://127.0.0.1:0")
	other := boundListener(t, "tcp://127.0.0.1:0")
	var st unix.Stat_t
	if err := unix.Fstat(l.Fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Ino != l.Inode {
		t.Fatalf("fstat inode %d, listener says %d", st.Ino, l.Inode)
	}
	self := os.Getpid()
	if proc.EpollInodes(self)[l.Inode] {
		t.Fatalf("inode %d polled before any epoll set has it", l.Inode)
	}
	ep := epollWith(t, l.Fd)
	defer unix.Close(ep)
	got := proc.EpollInodes(self)
	if !got[l.Inode] {
		t.Errorf("inode %d not found in this process's epoll sets %v", l.Inode, got)
	}
	if got[other.Inode] {
		t.Errorf("inode %d of a socket never added reported as polled", other.Inode)
	}
	t.Logf("epoll fd %d: polled inodes %v", ep, slices.Sorted(maps.Keys(got)))
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, l.Fd, nil); err != nil {
		t.Fatal(err)
	}
	if proc.EpollInodes(self)[l.Inode] {
		t.Errorf("inode %d still reported after EPOLL_CTL_DEL", l.Inode)
	}
	// A second epoll fd: sets are read from every eventpoll fd.
	ep2 := epollWith(t, other.Fd)
	defer unix.Close(ep2)
	if !proc.EpollInodes(self)[other.Inode] {
		t.Errorf("inode %d in a second epoll set not found", other.Inode)
	}
	if n := len(proc.EpollInodes(1 << 30)); n != 0 {
		t.Errorf("a pid that does not exist: %d inodes", n)
	}
}

func TestDescendants(t *testing.T) {
	a, b := startSleeper(t), startSleeper(t)
	got := proc.Descendants(os.Getpid())
	if !slices.Contains(got, a) || !slices.Contains(got, b) {
		t.Errorf("descendants of this process %v lack the children %d and %d", got, a, b)
	}
	if d := proc.Descendants(a); len(d) != 0 {
		t.Errorf("sleep %d has descendants %v", a, d)
	}
}
