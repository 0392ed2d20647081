package fdpass_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

func TestListeningTCPFindsOurSockets(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		v6         bool
	}{
		{"v4", "tcp://127.0.0.1:0?backlog=21", false},
		{"v6", "tcp6://[::1]:0?backlog=22", true},
		{"v4-mapped", "tcp6://[::ffff:127.0.0.1]:0?backlog=23", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.v6 {
				ipv6Loopback(t)
			}
			s := listen(t, tc.spec)
			li := listenInfo(t, s) // exactly one, with our inode
			if li.Addr != netip.MustParseAddrPort(s.Addr()) {
				t.Errorf("Addr %v, want %s", li.Addr, s.Addr())
			}
			if int(li.Backlog) != s.Spec().Backlog {
				t.Errorf("Backlog %d, want %d", li.Backlog, s.Spec().Backlog)
			}
			if li.Queue != 0 {
				t.Errorf("Queue %d, want 0", li.Queue)
			}
		})
	}
}

// Only LISTEN sockets: not UDP, not connected TCP sockets, not a closed
// listener.
func TestListeningTCPOnlyListening(t *testing.T) {
	ln := listen(t, "tcp://127.0.0.1:0")
	u := listen(t, "udp://127.0.0.1:0")
	c, err := net.DialTimeout("tcp", ln.Addr(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	gone := listen(t, "tcp://127.0.0.1:0")
	goneAddr := netip.MustParseAddrPort(gone.Addr())
	if err := gone.Close(); err != nil {
		t.Fatal(err)
	}
	all, err := fdpass.ListeningTCP()
	if err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	for _, li := range all {
		switch li.Addr {
		case netip.MustParseAddrPort(u.Addr()):
			t.Errorf("UDP socket %s listed", u.Addr())
		case client:
			t.Errorf("connected client socket %s listed", client)
		case goneAddr:
			t.Errorf("closed listener %s listed", goneAddr)
		}
		if li.Addr.Port() == 0 || li.Inode == 0 {
			t.Errorf("entry without port or inode: %+v", li)
		}
	}
	listenInfo(t, ln)
}

// Queue is the accept queue: connections the kernel completed that nobody
// accepted yet. baton never accepts, so it rises with every client.
func TestListeningTCPQueue(t *testing.T) {
	for _, tc := range []struct {
		name, spec string
		v6         bool
	}{
		{"v4", "tcp://127.0.0.1:0?backlog=16", false},
		{"v6", "tcp6://[::1]:0?backlog=16", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.v6 {
				ipv6Loopback(t)
			}
			s := listen(t, tc.spec)
			const clients = 5
			for i := range clients {
				c, err := net.DialTimeout("tcp", s.Addr(), testTimeout)
				if err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
				defer c.Close()
			}
			eventually(t, func() error {
				li := listenInfo(t, s)
				if li.Queue != clients || li.Backlog != 16 {
					return fmt.Errorf("queue %d backlog %d, want %d and 16", li.Queue, li.Backlog, clients)
				}
				return nil
			})
		})
	}
}

// Hundreds of listeners take more than one netlink message: all are found.
func TestListeningTCPMany(t *testing.T) {
	socks := listenN(t, 400)
	all, err := fdpass.ListeningTCP()
	if err != nil {
		t.Fatal(err)
	}
	byInode := map[uint64]fdpass.ListenInfo{}
	for _, li := range all {
		byInode[li.Inode] = li
	}
	for _, s := range socks {
		li, ok := byInode[s.Inode()]
		if !ok || li.Addr.String() != s.Addr() {
			t.Fatalf("%s (inode %d): found %v %+v", s.Addr(), s.Inode(), ok, li)
		}
	}
}

// DiagUDP with 1<<TCPClose lists the bound, unconnected UDP sockets (IPv4
// and IPv6) with inode and owner; a connected UDP socket bound to the same
// address (SO_REUSEADDR, bind, connect: HAProxy's per-connection QUIC
// sockets) is in TCPEstablished and listed only when asked for.
func TestDiagUDP(t *testing.T) {
	reuseAddr := func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}); err != nil {
			return err
		}
		return serr
	}
	inode := func(c syscall.Conn) uint64 {
		rc, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		return st.Ino
	}
	for _, tc := range []struct {
		name, network, addr string
		v6                  bool
	}{
		{"v4", "udp4", "127.0.0.1:0", false},
		{"v6", "udp6", "[::1]:0", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.v6 {
				ipv6Loopback(t)
			}
			lc := net.ListenConfig{Control: reuseAddr}
			u, err := lc.ListenPacket(context.Background(), tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer u.Close()
			ap := netip.MustParseAddrPort(u.LocalAddr().String())
			peer, err := net.ListenPacket(tc.network, tc.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			d := net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(ap), Control: reuseAddr}
			c, err := d.Dial(tc.network, peer.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			uIno, cIno := inode(u.(*net.UDPConn)), inode(c.(*net.UDPConn))

			find := func(mask uint32) map[uint64]fdpass.ListenInfo {
				all, err := fdpass.DiagUDP(mask)
				if err != nil {
					t.Fatal(err)
				}
				out := map[uint64]fdpass.ListenInfo{}
				for _, li := range all {
					if li.Addr == ap {
						out[li.Inode] = li
					}
				}
				return out
			}
			unconnected := find(1 << fdpass.TCPClose)
			if len(unconnected) != 1 {
				t.Fatalf("unconnected sockets on %s: %+v, want only inode %d", ap, unconnected, uIno)
			}
			li, ok := unconnected[uIno]
			if !ok || li.State != fdpass.TCPClose || li.UID != uint32(os.Geteuid()) {
				t.Errorf("unconnected socket: %+v, want inode %d state %d uid %d", li, uIno, fdpass.TCPClose, os.Geteuid())
			}
			connected := find(1 << fdpass.TCPEstablished)
			if li, ok := connected[cIno]; !ok || len(connected) != 1 || li.State != fdpass.TCPEstablished {
				t.Errorf("connected sockets on %s: %+v, want inode %d", ap, connected, cIno)
			}
		})
	}
}
