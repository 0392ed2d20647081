package supervisor

import (
	"errors"
	"net"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// skipWithoutSteering skips where the kernel refuses baton's steering
// program (not root, no CAP_BPF and CAP_NET_ADMIN): the set then holds plain UDP sockets.
func skipWithoutSteering(t *testing.T, ls *ListenerSet) {
	t.Helper()
	if why := steeringRefused(); why != nil {
		t.Skipf("steering refused here: %v", why)
	}
	for _, e := range ls.items {
		if e.steer == nil && !e.sock.Spec().IsStream() {
			t.Fatal("a UDP listener is not steered although steering was not refused")
		}
	}
}

// TestSteeredListenerSet: a UDP address gets one member per generation
// (the anchor is never handed out), a member closes with its
// generation's release, members stay out of the release watch's inodes,
// and the whole group closes with the set.
func TestSteeredListenerSet(t *testing.T) {
	before := selfFdCount(t)
	ls := bindSpecs(t, "tcp://127.0.0.1:0", "udp://127.0.0.1:0")
	skipWithoutSteering(t, ls)
	udp := ls.Sockets()[1]
	l1, err := ls.acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := ls.acquire(2)
	if err != nil {
		t.Fatal(err)
	}
	if l1[0].Fd != l2[0].Fd {
		t.Error("the TCP listener differs between generations")
	}
	m1, m2 := l1[1], l2[1]
	if m1.Inode == m2.Inode || m1.Inode == udp.Inode() || m2.Inode == udp.Inode() {
		t.Errorf("UDP inodes: anchor %d, generation 1 %d, generation 2 %d: want three sockets", udp.Inode(), m1.Inode, m2.Inode)
	}
	if m1.Addr != udp.Addr() || m2.Addr != udp.Addr() {
		t.Errorf("members on %s and %s, anchor on %s", m1.Addr, m2.Addr, udp.Addr())
	}
	if in := ls.inodes(); len(in) != 1 || !in[l1[0].Inode] {
		t.Errorf("release-watch inodes %v, want the TCP socket's only", in)
	}
	if !ls.steers(1) || !ls.steers(2) || ls.steers(3) {
		t.Error("steers: wrong generations")
	}
	if err := ls.setActive(2); err != nil {
		t.Fatal(err)
	}
	// A datagram to the address reaches generation 2's member.
	c, err := net.Dial("udp", udp.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte{0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0}); err != nil {
		t.Fatal(err)
	}
	fds := []unix.PollFd{{Fd: int32(m2.Fd), Events: unix.POLLIN}, {Fd: int32(m1.Fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 2000); err != nil || n != 1 || fds[0].Revents&unix.POLLIN == 0 {
		t.Errorf("poll %d %v %+v: want the datagram on generation 2's member only", n, err, fds)
	}
	c.Close()

	if err := ls.Release(1); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(m1.Fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("generation 1's member still open after its release (%v)", err)
	}
	if ls.steers(1) {
		t.Error("still steering for generation 1")
	}
	h := ls.handover()
	var members []lifecycle.Gen
	for _, r := range h {
		if r.MemberOf != 0 {
			members = append(members, r.MemberOf)
		}
	}
	if len(h) != 3 || !h[1].Steered || len(members) != 1 || members[0] != 2 || h[2].Inode != m2.Inode {
		t.Errorf("handover %+v, want TCP, the steered anchor, generation 2's member", h)
	}
	if err := ls.CloseAll(); err != nil {
		t.Fatal(err)
	}
	if n := selfFdCount(t); n != before {
		t.Errorf("%d descriptors after CloseAll, %d before", n, before)
	}
}

// TestSteeredAdoptListeners: an upgrade's records (anchor and members, with
// descriptors) rebuild the steered group in the new set.
func TestSteeredAdoptListeners(t *testing.T) {
	ls := bindSpecs(t, "udp://127.0.0.1:0")
	skipWithoutSteering(t, ls)
	defer ls.CloseAll()
	l, err := ls.acquire(3)
	if err != nil {
		t.Fatal(err)
	}
	recs := ls.handover()
	var fds []int
	for i := range recs {
		fd, err := unix.FcntlInt(uintptr(recs[i].Fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		recs[i].Fd = len(fds)
		fds = append(fds, fd)
	}
	ls2, err := AdoptListeners(Handover{Listeners: recs, Gens: []GenHandover{{Gen: 3}}}, fds)
	if err != nil {
		t.Fatal(err)
	}
	defer ls2.CloseAll()
	got, err := ls2.acquire(3)
	if err != nil || len(got) != 1 || got[0].Inode != l[0].Inode {
		t.Fatalf("adopted set gives generation 3 %+v (%v), want its member, inode %d", got, err, l[0].Inode)
	}
	if ls2.Sockets()[0].Inode() != ls.Sockets()[0].Inode() {
		t.Error("the adopted anchor is another socket")
	}
	if err := ls2.setActive(3); err != nil {
		t.Fatal(err)
	}
	// A member record without its group is refused.
	fd, err := unix.FcntlInt(uintptr(got[0].Fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	member := recs[1]
	member.Fd = 0
	if _, err := AdoptListeners(Handover{Listeners: []ListenerHandover{member}}, []int{fd}); err == nil {
		t.Error("a member without its steered listener was adopted")
	}
}

// TestSteeringRefusedSharesOneSocket: where the kernel refused the
// program, a UDP address is one socket every generation shares.
func TestSteeringRefusedSharesOneSocket(t *testing.T) {
	steeringState.Lock()
	old := steeringState.refused
	steeringState.refused = errors.New("refused for the test")
	steeringState.Unlock()
	t.Cleanup(func() {
		steeringState.Lock()
		steeringState.refused = old
		steeringState.Unlock()
	})
	ls := bindSpecs(t, "udp://127.0.0.1:0")
	defer ls.CloseAll()
	l1, err := ls.acquire(1)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := ls.acquire(2)
	if err != nil {
		t.Fatal(err)
	}
	if l1[0].Inode != l2[0].Inode || l1[0].Inode != ls.Sockets()[0].Inode() {
		t.Errorf("inodes %d and %d, anchor %d: want one shared socket", l1[0].Inode, l2[0].Inode, ls.Sockets()[0].Inode())
	}
	if ls.steers(1) || len(ls.inodes()) != 1 {
		t.Error("a shared UDP socket is treated as steered")
	}
}
