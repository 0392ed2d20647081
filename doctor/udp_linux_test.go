package doctor

import (
	"cmp"
	"context"
	"net/netip"
	"os"
	"slices"
	"sort"
	"testing"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// udpMember is an unconnected UDP socket bound to addr with SO_REUSEPORT
// (port 0: a free port), as a file to hand to a child; the test's copy is
// closed at the end (or earlier by the caller).
func udpMember(t *testing.T, addr netip.AddrPort) (*os.File, netip.AddrPort, uint64) {
	t.Helper()
	fd := udpSocket(t, addr, unix.SO_REUSEPORT)
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		addr = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		addr = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	f := os.NewFile(uintptr(fd), "udp "+addr.String())
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	return f, addr, st.Ino
}

// udpSocket is a UDP socket with option set, bound to addr.
func udpSocket(t *testing.T, addr netip.AddrPort, option int) int {
	t.Helper()
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: addr.Addr().As16(), Port: int(addr.Port())})
	if addr.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	must(t, unix.SetsockoptInt(fd, unix.SOL_SOCKET, option, 1))
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		t.Skipf("bind %s: %v", addr, err)
	}
	return fd
}

// connectedUDP binds a UDP socket to addr (SO_REUSEPORT, as the group's
// members) and connects it to a peer on the loopback, as HAProxy does for
// each QUIC connection; it is closed at the end.
func connectedUDP(t *testing.T, addr netip.AddrPort) uint64 {
	t.Helper()
	peer := udpSocket(t, netip.AddrPortFrom(addr.Addr(), 0), unix.SO_REUSEADDR)
	t.Cleanup(func() { unix.Close(peer) })
	psa, err := unix.Getsockname(peer)
	if err != nil {
		t.Fatal(err)
	}
	fd := udpSocket(t, addr, unix.SO_REUSEPORT)
	t.Cleanup(func() { unix.Close(fd) })
	must(t, unix.Connect(fd, psa))
	var st unix.Stat_t
	must(t, unix.Fstat(fd, &st))
	return st.Ino
}

// findingsOf returns the findings of check.
func findingsOf(r Report, check string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

func sortedInodes(in []uint64) []uint64 {
	out := slices.Clone(in)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

var udpLoopbacks = []struct{ name, addr string }{{"v4", "127.0.0.1:0"}, {"v6", "[::1]:0"}}

// Two SO_REUSEPORT UDP sockets on one address, each held by a process of
// its own (the test binary re-run as "haproxy", given the socket as its
// descriptor 3; this process closes its copies), are one
// udp-reuseport-group warning naming both; a connected UDP socket bound to
// the same address (this process's) is not a member.
func TestRunFindsUDPReuseportGroup(t *testing.T) {
	for _, tc := range udpLoopbacks {
		t.Run(tc.name, func(t *testing.T) {
			s1, addr, in1 := udpMember(t, netip.MustParseAddrPort(tc.addr))
			s2, _, in2 := udpMember(t, addr)
			conn := connectedUDP(t, addr)
			p1 := startFakeProxyWith(t, "haproxy", []*os.File{s1}, "-f", "/nonexistent/h.cfg")
			p2 := startFakeProxyWith(t, "haproxy", []*os.File{s2}, "-f", "/nonexistent/h.cfg")
			s1.Close()
			s2.Close()

			o := hostOptions(t)
			o.Ports = []int{int(addr.Port())}
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			requireComplete(t, r.Findings)
			got := findingsOf(r, "udp-reuseport-group")
			if len(got) != 1 || got[0].Subject != addr.String() || got[0].Severity != Warning {
				t.Fatalf("udp-reuseport-group findings %+v, want one warning for %s", got, addr)
			}
			if inodes := sortedInodes(got[0].Data["inodes"].([]uint64)); !slices.Equal(inodes, sortedInodes([]uint64{in1, in2})) {
				t.Errorf("inodes %v, want %d and %d (not the connected socket's %d)", inodes, in1, in2, conn)
			}
			if want := []int{min(p1, p2), max(p1, p2)}; !slices.Equal(got[0].Pids, want) {
				t.Errorf("pids %v, want %v (not this process, %d)", got[0].Pids, want, os.Getpid())
			}
			if fs := findingsOf(r, "udp-foreign-socket"); len(fs) != 0 {
				t.Errorf("foreign-socket findings without a baton: %+v", fs)
			}
			if r.Host.UDPSockets < 2 {
				t.Errorf("host summary: %d UDP sockets", r.Host.UDPSockets)
			}
			t.Logf("%s %s %s\n  saw: %s", got[0].Severity, got[0].Check, got[0].Subject, got[0].Saw)
		})
	}
}

// A group a process named "baton" holds entirely, one member handed to each
// of two "haproxy" processes, is information only; a third socket on the
// address held by this process alone is a udp-foreign-socket warning naming
// its inode, this process and its owner's uid, and the group is then
// reported through it only.
func TestRunUDPBatonGroupAndForeignSocket(t *testing.T) {
	for _, tc := range udpLoopbacks {
		t.Run(tc.name, func(t *testing.T) {
			s1, addr, in1 := udpMember(t, netip.MustParseAddrPort(tc.addr))
			s2, _, in2 := udpMember(t, addr)
			connectedUDP(t, addr)
			b := startFakeProxyWith(t, "baton", []*os.File{s1, s2}, "run", "--", "haproxy")
			startFakeProxyWith(t, "haproxy", []*os.File{s1}, "-f", "/nonexistent/h.cfg")
			startFakeProxyWith(t, "haproxy", []*os.File{s2}, "-f", "/nonexistent/h.cfg")
			s1.Close()
			s2.Close()

			o := hostOptions(t)
			o.Ports = []int{int(addr.Port())}
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			requireComplete(t, r.Findings)
			got := findingsOf(r, "udp-reuseport-group")
			if len(got) != 1 || got[0].Severity != Info || got[0].Data["baton"] != b || r.Failing() {
				t.Fatalf("findings %+v, want one info udp-reuseport-group held by baton pid %d", r.Findings, b)
			}
			t.Logf("%s %s %s\n  saw: %s", got[0].Severity, got[0].Check, got[0].Subject, got[0].Saw)

			_, _, in3 := udpMember(t, addr)
			r, err = Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			requireComplete(t, r.Findings)
			if fs := findingsOf(r, "udp-reuseport-group"); len(fs) != 0 {
				t.Errorf("udp-reuseport-group beside a foreign socket: %+v", fs)
			}
			got = findingsOf(r, "udp-foreign-socket")
			if len(got) != 1 || got[0].Severity != Warning || got[0].Subject != addr.String() {
				t.Fatalf("udp-foreign-socket findings %+v, want one warning for %s", got, addr)
			}
			d := got[0].Data
			if !slices.Equal(d["inodes"].([]uint64), []uint64{in3}) || !slices.Equal(got[0].Pids, []int{os.Getpid()}) ||
				!slices.Equal(d["owners"].([]uint32), []uint32{uint32(os.Geteuid())}) ||
				!slices.Equal(sortedInodes(d["baton_inodes"].([]uint64)), sortedInodes([]uint64{in1, in2})) {
				t.Errorf("foreign socket: %+v, want inode %d of pid %d (uid %d) beside %d and %d", got[0], in3, os.Getpid(), os.Geteuid(), in1, in2)
			}
			t.Logf("%s %s %s\n  saw: %s", got[0].Severity, got[0].Check, got[0].Subject, got[0].Saw)
		})
	}
}

// Without udp_diag, the unconnected UDP sockets come from /proc/net/udp and
// udp6: the same sockets, owners and addresses as sock_diag's, and no
// connected one.
func TestUDPFromProcNet(t *testing.T) {
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range udpLoopbacks {
		t.Run(tc.name, func(t *testing.T) {
			_, addr, in1 := udpMember(t, netip.MustParseAddrPort(tc.addr))
			_, _, in2 := udpMember(t, addr)
			conn := connectedUDP(t, addr)
			f := &Facts{}
			var got []UDPSocket
			for _, u := range udpFromProcNet(fs, f, nil) {
				if u.Addr == addr {
					got = append(got, u)
				}
			}
			var diag []UDPSocket
			for _, u := range udpSockets(fs, f) {
				if u.Addr == addr {
					diag = append(diag, u)
				}
			}
			byInode := func(a, b UDPSocket) int { return cmp.Compare(a.Inode, b.Inode) }
			slices.SortFunc(got, byInode)
			slices.SortFunc(diag, byInode)
			uid := uint32(os.Geteuid())
			want := []UDPSocket{{Addr: addr, Inode: min(in1, in2), UID: uid}, {Addr: addr, Inode: max(in1, in2), UID: uid}}
			same := func(a, b UDPSocket) bool { return a.Addr == b.Addr && a.Inode == b.Inode && a.UID == b.UID }
			if !slices.EqualFunc(got, want, same) {
				t.Errorf("/proc/net: %+v, want %+v (not the connected %d)", got, want, conn)
			}
			if !slices.EqualFunc(diag, want, same) {
				t.Errorf("sock_diag: %+v, want %+v", diag, want)
			}
			if len(f.Notes) != 0 {
				t.Errorf("notes: %q", f.Notes)
			}
		})
	}
}
