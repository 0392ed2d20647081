package fdpass_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

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
