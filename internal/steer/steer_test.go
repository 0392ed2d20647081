package steer

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// newTestGroup makes a group on a free loopback port, or skips where this
// kernel or user may not load the program.
func newTestGroup(t *testing.T) *Group {
	t.Helper()
	_ = rlimit.RemoveMemlock()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().(*net.UDPAddr).AddrPort()
	c.Close()
	g, err := NewGroup(addr, Options{})
	if errors.Is(err, unix.EPERM) && os.Geteuid() != 0 {
		t.Skipf("an SK_REUSEPORT program and a SOCKMAP need CAP_BPF and CAP_NET_ADMIN: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func initial() []byte {
	p := []byte{0xc3, 0, 0, 0, 1, 8}
	p = append(p, randomBytes(8)...)
	p = append(p, 0) // SCID length
	return append(p, make([]byte, 64)...)
}

func short(cookie uint64) []byte {
	p := []byte{0x43}
	p = binary.BigEndian.AppendUint64(p, cookie)
	p = append(p, randomBytes(12)...) // the rest of a 20-byte ID
	return append(p, make([]byte, 32)...)
}

func handshake(cookie uint64) []byte {
	p := []byte{0xe3, 0, 0, 0, 1, 20}
	p = binary.BigEndian.AppendUint64(p, cookie)
	p = append(p, randomBytes(12)...)
	return append(p, make([]byte, 32)...)
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// receiver sends datagrams and says which member got each.
type receiver struct {
	t    *testing.T
	g    *Group
	conn *net.UDPConn
}

func (r receiver) who(p []byte, members ...*Member) *Member {
	r.t.Helper()
	if _, err := r.conn.WriteToUDPAddrPort(p, r.g.addr); err != nil {
		r.t.Fatal(err)
	}
	fds := make([]unix.PollFd, len(members))
	for i, m := range members {
		fds[i] = unix.PollFd{Fd: int32(m.fd), Events: unix.POLLIN}
	}
	n, err := unix.Poll(fds, 2000)
	if err != nil || n == 0 {
		r.t.Fatalf("no member received the datagram (poll %d, %v)", n, err)
	}
	var got *Member
	for i, f := range fds {
		if f.Revents&unix.POLLIN == 0 {
			continue
		}
		buf := make([]byte, 2048)
		if _, _, err := unix.Recvfrom(members[i].fd, buf, 0); err != nil {
			r.t.Fatal(err)
		}
		if got != nil {
			r.t.Fatal("two members received one datagram")
		}
		got = members[i]
	}
	return got
}

func TestSteering(t *testing.T) {
	g := newTestGroup(t)
	old, err := g.Add(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.SetActive(); err != nil {
		t.Fatal(err)
	}
	next, err := g.Add(false)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := receiver{t: t, g: g, conn: conn}
	all := []*Member{old, next}
	name := map[*Member]string{old: "old", next: "next"}
	expect := func(what string, p []byte, want *Member) {
		t.Helper()
		for i := 0; i < 20; i++ {
			if got := r.who(p, all...); got != want {
				t.Fatalf("%s: %s received it, want %s", what, name[got], name[want])
			}
		}
	}
	expect("Initial before the new member is active", initial(), old)
	expect("short header naming the new member", short(next.Cookie()), next)
	expect("Handshake naming the new member", handshake(next.Cookie()), next)
	expect("short header naming no member", short(12345), old)

	if err := next.SetActive(); err != nil {
		t.Fatal(err)
	}
	expect("Initial after the switch", initial(), next)
	expect("short header naming the old member", short(old.Cookie()), old)
	expect("Handshake naming the old member", handshake(old.Cookie()), old)
	expect("a datagram too short for a connection ID", []byte{0x40, 1, 2}, next)

	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	all = []*Member{next}
	expect("short header naming the closed member", short(old.Cookie()), next)
}

// TestMembersShareTheAddress: every member is bound to the group's
// address, and a socket without SO_REUSEPORT cannot take the address while
// members hold it.
func TestMembersShareTheAddress(t *testing.T) {
	g := newTestGroup(t)
	for range 3 {
		m, err := g.Add(false)
		if err != nil {
			t.Fatal(err)
		}
		sa, err := unix.Getsockname(m.FD())
		if err != nil {
			t.Fatal(err)
		}
		in := sa.(*unix.SockaddrInet4)
		if got := netip.AddrPortFrom(netip.AddrFrom4(in.Addr), uint16(in.Port)); got != g.addr {
			t.Fatalf("member bound to %s, want %s", got, g.addr)
		}
	}
	if c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(g.addr)); err == nil {
		c.Close()
		t.Fatal("a plain socket bound the group's address")
	}
}

// TestNoActiveGoesToSink: while no member is active a datagram naming no
// member goes to the sink, which drops it without an ICMP error (a
// connected client sees no ECONNREFUSED and may resend); the sink's
// cookie routes nothing.
func TestNoActiveGoesToSink(t *testing.T) {
	g := newTestGroup(t)
	sink, err := g.Add(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := sink.SetSink(); err != nil {
		t.Fatal(err)
	}
	m, err := g.Add(false)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(g.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, p := range [][]byte{initial(), initial(), short(sink.Cookie()), short(sink.Cookie())} {
		if _, err := conn.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	fds := []unix.PollFd{{Fd: int32(m.FD()), Events: unix.POLLIN}, {Fd: int32(sink.FD()), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, 200); n != 0 {
		t.Fatalf("a datagram was readable while no member was active: %+v", fds)
	}
	_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read: %v, want a timeout (no ICMP error)", err)
	}
	if err := m.SetActive(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(initial()); err != nil {
		t.Fatal(err)
	}
	if n, _ := unix.Poll(fds[:1], 2000); n != 1 {
		t.Fatal("the active member did not receive an Initial")
	}
	// Closing the active member leaves the sink in its place.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(initial()); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := conn.Read(make([]byte, 64)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client read after the active member closed: %v, want a timeout", err)
	}
}

// TestAloneRefusesSecondGroup: a second group's exclusive member of the
// same user would join the first group (SO_REUSEPORT lets it): the Alone
// hook, seeing another socket on the address, undoes it before its
// program is attached, and the first group still steers.
func TestAloneRefusesSecondGroup(t *testing.T) {
	g := newTestGroup(t)
	a, err := g.Add(true)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetActive(); err != nil {
		t.Fatal(err)
	}
	others := func(fd int, addr netip.AddrPort) error {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		if st.Ino != a.Inode() {
			return fmt.Errorf("%w: another socket holds %s", unix.EADDRINUSE, addr)
		}
		return nil
	}
	g2, err := NewGroup(g.addr, Options{Alone: others})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if _, err := g2.Add(true); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("second group's exclusive member: %v, want EADDRINUSE", err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := receiver{t: t, g: g, conn: conn}
	if got := r.who(initial(), a); got != a {
		t.Fatal("the first group no longer steers")
	}
}

// TestAdoptReplacesProgram: a new group adopting the members (an upgraded
// or restarted baton) steers them with its own program and maps.
func TestAdoptReplacesProgram(t *testing.T) {
	g := newTestGroup(t)
	a, err := g.Add(true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.Add(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetActive(); err != nil {
		t.Fatal(err)
	}
	g2, err := NewGroup(g.addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	dup := func(m *Member) *Member {
		fd, err := unix.Dup(m.FD())
		if err != nil {
			t.Fatal(err)
		}
		m2, err := g2.Adopt(fd)
		if err != nil {
			t.Fatal(err)
		}
		return m2
	}
	a2, b2 := dup(a), dup(b)
	if a2.Cookie() != a.Cookie() || b2.Inode() != b.Inode() {
		t.Fatal("an adopted member is not the same socket")
	}
	if err := b2.SetActive(); err != nil { // attaches g2's program
		t.Fatal(err)
	}
	g.Close() // the old baton's copies and maps go
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := receiver{t: t, g: g2, conn: conn}
	for range 10 {
		if got := r.who(initial(), a2, b2); got != b2 {
			t.Fatal("an Initial did not reach the member the new program marks active")
		}
		if got := r.who(short(a2.Cookie()), a2, b2); got != a2 {
			t.Fatal("a datagram naming the other member's cookie did not reach it")
		}
	}
	if _, err := g2.Adopt(-1); err == nil {
		t.Fatal("adopted a bad descriptor")
	}
}

// TestExclusiveFirstMember: the first member's bind fails while another
// socket holds the address.
func TestExclusiveFirstMember(t *testing.T) {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = rlimit.RemoveMemlock()
	g, err := NewGroup(c.LocalAddr().(*net.UDPAddr).AddrPort(), Options{})
	if err != nil {
		t.Skip(err)
	}
	defer g.Close()
	if _, err := g.Add(true); !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("exclusive member beside a held address: %v, want EADDRINUSE", err)
	}
}
