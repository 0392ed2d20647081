package fdpass_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

func listen(t *testing.T, spec string) *fdpass.Socket {
	t.Helper()
	s, err := fdpass.Listen(mustSpec(t, spec))
	if err != nil {
		t.Fatalf("Listen(%s): %v", spec, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// listenInfo returns the sock_diag entry of s, failing unless there is
// exactly one LISTEN socket on its address and it is s.
func listenInfo(t *testing.T, s *fdpass.Socket) fdpass.ListenInfo {
	t.Helper()
	ap := netip.MustParseAddrPort(s.Addr())
	all, err := fdpass.ListeningTCP()
	if err != nil {
		t.Fatalf("ListeningTCP: %v", err)
	}
	var found []fdpass.ListenInfo
	for _, li := range all {
		if li.Addr == ap {
			found = append(found, li)
		}
	}
	if len(found) != 1 || found[0].Inode != s.Inode() {
		t.Fatalf("LISTEN sockets on %s: %+v, want exactly one with inode %d", ap, found, s.Inode())
	}
	return found[0]
}

// checkCommon: every socket Listen makes is non-blocking, close-on-exec,
// without SO_REUSEPORT, and its Inode is the one fstat and /proc show.
func checkCommon(t *testing.T, s *fdpass.Socket) {
	t.Helper()
	fd := s.Fd()
	if !isNonblock(t, fd) {
		t.Error("O_NONBLOCK not set")
	}
	if !isCloexec(t, fd) {
		t.Error("FD_CLOEXEC not set")
	}
	if v := getsockopt(t, fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT"); v != 0 {
		t.Errorf("SO_REUSEPORT = %d, want 0", v)
	}
	if ino := fdInode(t, fd); ino != s.Inode() {
		t.Errorf("Inode() = %d, fstat says %d", s.Inode(), ino)
	}
	link, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("socket:[%d]", s.Inode()); link != want {
		t.Errorf("/proc/self/fd/%d -> %q, want %q", fd, link, want)
	}
}

func TestListenTCPOptions(t *testing.T) {
	// defer_accept=3: the kernel stores retransmissions and reports 3 s
	// back exactly (5 would come back as 7).
	s := listen(t, "tcp://127.0.0.1:0?backlog=77&defer_accept=3&freebind=1")
	checkCommon(t, s)
	fd := s.Fd()
	for _, o := range []struct {
		level, opt int
		name       string
		want       int
	}{
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR", 1},
		{unix.SOL_SOCKET, unix.SO_TYPE, "SO_TYPE", unix.SOCK_STREAM},
		{unix.SOL_SOCKET, unix.SO_DOMAIN, "SO_DOMAIN", unix.AF_INET},
		{unix.SOL_SOCKET, unix.SO_ACCEPTCONN, "SO_ACCEPTCONN", 1},
		{unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", 3},
		{unix.IPPROTO_IP, unix.IP_FREEBIND, "IP_FREEBIND", 1},
	} {
		if got := getsockopt(t, fd, o.level, o.opt, o.name); got != o.want {
			t.Errorf("%s = %d, want %d", o.name, got, o.want)
		}
	}
	ap := netip.MustParseAddrPort(s.Addr())
	if ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == 0 {
		t.Errorf("Addr() = %q, want 127.0.0.1 with the port the kernel chose", s.Addr())
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	if port := sa.(*unix.SockaddrInet4).Port; port != int(ap.Port()) {
		t.Errorf("Addr() port %d, getsockname port %d", ap.Port(), port)
	}
	if s.Spec().Addr != "127.0.0.1:0" || s.Spec().Backlog != 77 {
		t.Errorf("Spec() = %+v, want the spec it was made from", s.Spec())
	}
	if s.Backlog() != 77 || fdpass.EffectiveBacklog(s.Spec()) != 77 {
		t.Errorf("Backlog() = %d, EffectiveBacklog = %d, want 77", s.Backlog(), fdpass.EffectiveBacklog(s.Spec()))
	}
	if li := listenInfo(t, s); li.Backlog != 77 || li.Queue != 0 {
		t.Errorf("sock_diag: backlog %d queue %d, want 77 and 0", li.Backlog, li.Queue)
	}
}

// Options left out are off, and the backlog is the host's somaxconn.
func TestListenTCPDefaults(t *testing.T) {
	s := listen(t, "tcp4://127.0.0.1:0")
	checkCommon(t, s)
	fd := s.Fd()
	if v := getsockopt(t, fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"); v != 1 {
		t.Errorf("SO_REUSEADDR = %d, want 1", v)
	}
	if v := getsockopt(t, fd, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT"); v != 0 {
		t.Errorf("TCP_DEFER_ACCEPT = %d, want 0", v)
	}
	if v := getsockopt(t, fd, unix.IPPROTO_IP, unix.IP_FREEBIND, "IP_FREEBIND"); v != 0 {
		t.Errorf("IP_FREEBIND = %d, want 0", v)
	}
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		t.Fatal(err)
	}
	somaxconn, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if fdpass.DefaultBacklog() != somaxconn {
		t.Errorf("DefaultBacklog() = %d, somaxconn is %d", fdpass.DefaultBacklog(), somaxconn)
	}
	if s.Backlog() != somaxconn || fdpass.EffectiveBacklog(s.Spec()) != somaxconn {
		t.Errorf("Backlog() = %d, EffectiveBacklog = %d, want somaxconn %d", s.Backlog(), fdpass.EffectiveBacklog(s.Spec()), somaxconn)
	}
	if li := listenInfo(t, s); int(li.Backlog) != somaxconn {
		t.Errorf("sock_diag backlog %d, want somaxconn %d", li.Backlog, somaxconn)
	}
}

func TestListenTCP6(t *testing.T) {
	ipv6Loopback(t)
	// Binding a specific IPv6 address makes Linux set IPV6_V6ONLY itself
	// (__inet6_bind), so on ::1 only v6only=1 can be told apart; v6only=0
	// is checked on the v4-mapped loopback below.
	for _, spec := range []string{
		"tcp6://[::1]:0?v6only=1&backlog=33",
		"tcp6://[::1]:0?backlog=33",
		"tcp://[::1]:0?backlog=33",
	} {
		t.Run(spec, func(t *testing.T) {
			s := listen(t, spec)
			checkCommon(t, s)
			fd := s.Fd()
			if v := getsockopt(t, fd, unix.SOL_SOCKET, unix.SO_DOMAIN, "SO_DOMAIN"); v != unix.AF_INET6 {
				t.Errorf("SO_DOMAIN = %d, want AF_INET6", v)
			}
			if v := getsockopt(t, fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY"); v != 1 {
				t.Errorf("IPV6_V6ONLY = %d, want 1", v)
			}
			if v := getsockopt(t, fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR"); v != 1 {
				t.Errorf("SO_REUSEADDR = %d, want 1", v)
			}
			ap := netip.MustParseAddrPort(s.Addr())
			if ap.Addr() != netip.IPv6Loopback() || ap.Port() == 0 {
				t.Errorf("Addr() = %q, want [::1]:PORT", s.Addr())
			}
			if li := listenInfo(t, s); li.Backlog != 33 {
				t.Errorf("sock_diag backlog %d, want 33", li.Backlog)
			}
			c, err := net.DialTimeout("tcp", s.Addr(), testTimeout)
			if err != nil {
				t.Fatalf("dial %s: %v", s.Addr(), err)
			}
			c.Close()
		})
	}
}

// IPV6_V6ONLY is applied before bind, as asked: on the v4-mapped loopback
// v6only=0 (said or implied) binds and IPv4 clients reach it, and v6only=1
// makes the bind fail (EINVAL), whatever net.ipv6.bindv6only says.
func TestListenTCP6V6Only(t *testing.T) {
	ipv6Loopback(t)
	for _, spec := range []string{
		"tcp6://[::ffff:127.0.0.1]:0?v6only=0",
		"tcp6://[::ffff:127.0.0.1]:0",
		"tcp://[::ffff:127.0.0.1]:0",
	} {
		t.Run(spec, func(t *testing.T) {
			s := listen(t, spec)
			checkCommon(t, s)
			if v := getsockopt(t, s.Fd(), unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY"); v != 0 {
				t.Errorf("IPV6_V6ONLY = %d, want 0", v)
			}
			port := netip.MustParseAddrPort(s.Addr()).Port()
			if s.Addr() != fmt.Sprintf("[::ffff:127.0.0.1]:%d", port) {
				t.Errorf("Addr() = %q", s.Addr())
			}
			listenInfo(t, s)
			c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), testTimeout)
			if err != nil {
				t.Fatalf("IPv4 client: %v", err)
			}
			c.Close()
		})
	}
	before := fdCount(t)
	s, err := fdpass.Listen(mustSpec(t, "tcp6://[::ffff:127.0.0.1]:0?v6only=1"))
	if err == nil {
		s.Close()
		t.Fatal("v6only=1 on a v4-mapped address bound: IPV6_V6ONLY was not set before bind")
	}
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("error %v, want EINVAL from bind", err)
	}
	checkFdCount(t, before, "failed Listen")
}

func TestListenTCP6FreeBind(t *testing.T) {
	ipv6Loopback(t)
	s := listen(t, "tcp6://[::1]:0?freebind=1")
	if v := getsockopt(t, s.Fd(), unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND"); v != 1 {
		t.Errorf("IPV6_FREEBIND = %d, want 1", v)
	}
}

func TestListenUDP(t *testing.T) {
	s := listen(t, "udp://127.0.0.1:0?freebind=1")
	checkCommon(t, s)
	fd := s.Fd()
	for _, o := range []struct {
		level, opt int
		name       string
		want       int
	}{
		{unix.SOL_SOCKET, unix.SO_TYPE, "SO_TYPE", unix.SOCK_DGRAM},
		{unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR", 1}, // set after the bind
		{unix.SOL_SOCKET, unix.SO_ACCEPTCONN, "SO_ACCEPTCONN", 0},
		{unix.IPPROTO_IP, unix.IP_FREEBIND, "IP_FREEBIND", 1},
	} {
		if got := getsockopt(t, fd, o.level, o.opt, o.name); got != o.want {
			t.Errorf("%s = %d, want %d", o.name, got, o.want)
		}
	}
	if netip.MustParseAddrPort(s.Addr()).Port() == 0 {
		t.Errorf("Addr() = %q: no port", s.Addr())
	}
	if s.Backlog() != 0 {
		t.Errorf("Backlog() = %d for a datagram socket, want 0", s.Backlog())
	}
	// The socket is bound: a datagram sent to it arrives.
	c, err := net.DialTimeout("udp", s.Addr(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	eventually(t, func() error {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			return fmt.Errorf("recvfrom: %w", err)
		}
		if string(buf[:n]) != "ping" {
			t.Fatalf("got %q", buf[:n])
		}
		return nil
	})
}

// docs/design.md's invariant 1: a second bind of a declared address fails loudly (no
// SO_REUSEPORT group), and the failed Listen leaves no descriptor behind.
func TestListenAddressInUse(t *testing.T) {
	for _, scheme := range []string{"tcp", "udp"} {
		t.Run(scheme, func(t *testing.T) {
			first := listen(t, scheme+"://127.0.0.1:0")
			before := fdCount(t)
			s, err := fdpass.Listen(mustSpec(t, scheme+"://"+first.Addr()))
			if err == nil {
				s.Close()
				t.Fatalf("second Listen on %s succeeded", first.Addr())
			}
			if !errors.Is(err, unix.EADDRINUSE) {
				t.Errorf("error %v, want EADDRINUSE", err)
			}
			if !strings.Contains(err.Error(), first.Addr()) {
				t.Errorf("error %q does not name the address", err)
			}
			checkFdCount(t, before, "failed Listen")
		})
	}
	t.Run("ipv6", func(t *testing.T) {
		ipv6Loopback(t)
		first := listen(t, "tcp6://[::1]:0")
		before := fdCount(t)
		_, err := fdpass.Listen(mustSpec(t, "tcp6://"+first.Addr()))
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("error %v, want EADDRINUSE", err)
		}
		checkFdCount(t, before, "failed Listen")
	})
	// A socket someone else made with SO_REUSEPORT still blocks ours.
	t.Run("foreign reuseport", func(t *testing.T) {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		if err := unix.Listen(fd, 8); err != nil {
			t.Fatal(err)
		}
		sa, _ := unix.Getsockname(fd)
		before := fdCount(t)
		_, err = fdpass.Listen(mustSpec(t, fmt.Sprintf("tcp://127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)))
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("error %v, want EADDRINUSE", err)
		}
		checkFdCount(t, before, "failed Listen")
	})
}

// udpSocket binds a UDP socket of the test's own to 127.0.0.1:port, with
// SO_REUSEADDR when reuse is set; it returns the error of the bind.
func udpSocket(t *testing.T, port int, reuse bool) (int, error) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if reuse {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			t.Fatal(err)
		}
	}
	return fd, unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
}

// TestListenUDPReuseAddrAfterBind: baton's UDP bind is exclusive (a socket
// already on the address, even with SO_REUSEADDR, makes it fail), and only
// then gets SO_REUSEADDR, so that a socket with SO_REUSEADDR, as HAProxy
// binds one per QUIC connection (connected to the client), binds beside it
// and receives that client's datagrams; a socket without it cannot bind.
func TestListenUDPReuseAddrAfterBind(t *testing.T) {
	t.Run("held address", func(t *testing.T) {
		fd, err := udpSocket(t, 0, true)
		if err != nil {
			t.Fatal(err)
		}
		sa, _ := unix.Getsockname(fd)
		before := fdCount(t)
		_, err = fdpass.Listen(mustSpec(t, fmt.Sprintf("udp://127.0.0.1:%d", sa.(*unix.SockaddrInet4).Port)))
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("Listen beside a SO_REUSEADDR socket: %v, want EADDRINUSE", err)
		}
		checkFdCount(t, before, "failed Listen")
	})
	t.Run("beside baton's", func(t *testing.T) {
		s := listen(t, "udp://127.0.0.1:0")
		port := int(netip.MustParseAddrPort(s.Addr()).Port())
		if _, err := udpSocket(t, port, false); !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("bind without SO_REUSEADDR beside baton's socket: %v, want EADDRINUSE", err)
		}
		conn, err := udpSocket(t, port, true)
		if err != nil {
			t.Fatalf("bind with SO_REUSEADDR beside baton's socket (HAProxy's per-connection socket): %v", err)
		}
		client, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		ca := client.LocalAddr().(*net.UDPAddr)
		if err := unix.Connect(conn, &unix.SockaddrInet4{Port: ca.Port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		if _, err := client.WriteTo([]byte("conn"), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		eventually(t, func() error {
			n, _, err := unix.Recvfrom(conn, buf, unix.MSG_DONTWAIT)
			if err != nil {
				return fmt.Errorf("the connected socket got nothing: %w", err)
			}
			if string(buf[:n]) != "conn" {
				t.Fatalf("got %q", buf[:n])
			}
			return nil
		})
		if _, _, err := unix.Recvfrom(s.Fd(), buf, unix.MSG_DONTWAIT); !errors.Is(err, unix.EAGAIN) {
			t.Errorf("baton's socket got the connected peer's datagram (%v)", err)
		}
	})
}

// acceptOne connects to a unix path and accepts the connection on fd,
// proving fd is the socket listening there.
func acceptOne(t *testing.T, path string, fd int) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, testTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	eventually(t, func() error {
		nfd, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if err != nil {
			return fmt.Errorf("accept on %s: %w", path, err)
		}
		unix.Close(nfd)
		return nil
	})
}

func TestListenUnix(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "a.sock")
	s := listen(t, "unix://"+path+"?mode=0640&backlog=9")
	checkCommon(t, s)
	if s.Addr() != path {
		t.Errorf("Addr() = %q, want %q", s.Addr(), path)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want a socket with 0640", st.Mode())
	}
	fd := s.Fd()
	if v := getsockopt(t, fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN, "SO_ACCEPTCONN"); v != 1 {
		t.Errorf("SO_ACCEPTCONN = %d, want 1", v)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	if got := sa.(*unix.SockaddrUnix).Name; got != path {
		t.Errorf("getsockname %q, want %q (proxies match passed sockets by it)", got, path)
	}
	acceptOne(t, path, fd)

	// Close keeps the path (a generation may still serve on it); Unlink
	// removes it, and a second Unlink is a no-op.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Errorf("Close removed the path: %v", err)
	}
	if err := s.Unlink(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Unlink: %v, want the path gone", err)
	}
	if err := s.Unlink(); err != nil {
		t.Errorf("second Unlink: %v", err)
	}
}

func TestListenUnixDefaultMode(t *testing.T) {
	// Without mode= the path gets 0777 minus the umask, whatever it is:
	// only check that it is a stream socket.
	path := filepath.Join(shortTempDir(t), "b.sock")
	s := listen(t, "unix://"+path)
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("lstat %s: %v %v, want a socket", path, st, err)
	}
	if v := getsockopt(t, s.Fd(), unix.SOL_SOCKET, unix.SO_TYPE, "SO_TYPE"); v != unix.SOCK_STREAM {
		t.Errorf("SO_TYPE = %d, want SOCK_STREAM", v)
	}
}

// A socket file left by a dead process (nobody listening) is replaced.
func TestListenUnixStaleReplaced(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "stale.sock")
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd) // the file stays, nobody listens
	if st, err := os.Lstat(path); err != nil || st.Mode()&os.ModeSocket == 0 {
		t.Fatalf("stale socket file not there: %v", err)
	}
	s := listen(t, "unix://"+path+"?mode=0600")
	acceptOne(t, path, s.Fd())
	if st, err := os.Lstat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("after replacing: %v %v, want mode 0600", st, err)
	}
}

// A live socket is never taken over: EADDRINUSE, and it keeps working.
func TestListenUnixLiveInUse(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "live.sock")
	live := listen(t, "unix://"+path)
	before := fdCount(t)
	s, err := fdpass.Listen(mustSpec(t, "unix://"+path))
	if err == nil {
		s.Close()
		t.Fatal("Listen took over a live unix socket")
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("error %v, want EADDRINUSE", err)
	}
	checkFdCount(t, before, "failed Listen")
	// The probe connection Listen made must not have left the live socket
	// broken; drain it, then check a fresh one is accepted.
	for {
		nfd, _, err := unix.Accept4(live.Fd(), unix.SOCK_CLOEXEC)
		if err != nil {
			break
		}
		unix.Close(nfd)
	}
	acceptOne(t, path, live.Fd())
}

// A live socket whose accept queue is full (its process is hung) is still
// "in use": Listen must say so, not block in its probe connect forever.
func TestListenUnixLiveFullBacklog(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "full.sock")
	live := listen(t, "unix://"+path+"?backlog=1")
	var clients []int
	defer func() { closeFds(clients) }()
	for {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, fd)
		if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); errors.Is(err, unix.EAGAIN) {
			break // the queue is full
		} else if err != nil {
			t.Fatal(err)
		}
		if len(clients) > 64 {
			t.Fatal("the accept queue never filled")
		}
	}
	done := make(chan error, 1)
	go func() {
		s, err := fdpass.Listen(mustSpec(t, "unix://"+path))
		if err == nil {
			s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Errorf("Listen on a live, full socket: %v, want EADDRINUSE", err)
		}
	case <-time.After(testTimeout):
		live.Close() // releases the blocked probe
		<-done
		t.Fatalf("Listen blocked %v probing a live socket with a full queue", testTimeout)
	}
}

func TestListenUnixRegularFileRefused(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "file")
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := fdCount(t)
	s, err := fdpass.Listen(mustSpec(t, "unix://"+path))
	if err == nil {
		s.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("error %q does not say the path is not a socket", err)
	}
	checkFdCount(t, before, "failed Listen")
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me" {
		t.Errorf("file changed: %q %v", b, err)
	}
}

func TestListenUnixMissingDir(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "no", "such.sock")
	before := fdCount(t)
	if _, err := fdpass.Listen(mustSpec(t, "unix://"+path)); !errors.Is(err, unix.ENOENT) {
		t.Errorf("error %v, want ENOENT", err)
	}
	checkFdCount(t, before, "failed Listen")
}

func TestSocketCloseTwice(t *testing.T) {
	before := fdCount(t)
	s, err := fdpass.Listen(mustSpec(t, "tcp://127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	if fdCount(t) != before+1 {
		t.Fatalf("Listen opened %d descriptors, want 1", fdCount(t)-before)
	}
	addr := s.Addr()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if s.Fd() != -1 {
		t.Errorf("Fd() after Close = %d, want -1", s.Fd())
	}
	checkFdCount(t, before, "Close")
	if err := s.Unlink(); err != nil { // a no-op for tcp
		t.Errorf("Unlink of a tcp socket: %v", err)
	}
	// The address is free again: nothing else held the socket.
	again := listen(t, "tcp://"+addr)
	if again.Addr() != addr {
		t.Errorf("relisten on %s got %s", addr, again.Addr())
	}
}

// dupNoFlags duplicates fd the way an inherited descriptor arrives: without
// close-on-exec, and with O_NONBLOCK cleared on the shared description (as a
// blocking server leaves it).
func dupNoFlags(t *testing.T, fd int) int {
	t.Helper()
	nfd, err := unix.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	if isCloexec(t, nfd) {
		t.Fatal("dup kept FD_CLOEXEC")
	}
	if err := unix.SetNonblock(nfd, false); err != nil {
		t.Fatal(err)
	}
	return nfd
}

func TestAdopt(t *testing.T) {
	orig := listen(t, "tcp://127.0.0.1:0?backlog=12")
	nfd := dupNoFlags(t, orig.Fd())
	if isNonblock(t, orig.Fd()) {
		t.Fatal("O_NONBLOCK is per description: clearing it on the dup should show on the original")
	}
	s, err := fdpass.Adopt(mustSpec(t, "tcp://"+orig.Addr()+"?backlog=12"), nfd)
	if err != nil {
		unix.Close(nfd)
		t.Fatalf("Adopt: %v", err)
	}
	defer s.Close()
	if s.Fd() != nfd {
		t.Errorf("Fd() = %d, want the adopted %d", s.Fd(), nfd)
	}
	if !isCloexec(t, nfd) {
		t.Error("Adopt did not set FD_CLOEXEC")
	}
	if isNonblock(t, nfd) || isNonblock(t, orig.Fd()) {
		t.Error("Adopt set O_NONBLOCK on the shared description a blocking server left")
	}
	if s.Inode() != orig.Inode() || s.Addr() != orig.Addr() {
		t.Errorf("adopted inode %d addr %s, want %d %s", s.Inode(), s.Addr(), orig.Inode(), orig.Addr())
	}
	if s.Backlog() != 12 {
		t.Errorf("Backlog() = %d, want 12 from the spec", s.Backlog())
	}
	if s.Spec().Name != "tcp_"+strings.ReplaceAll(orig.Addr(), ":", "_") {
		t.Errorf("Spec() = %+v", s.Spec())
	}
	listenInfo(t, orig) // still exactly one LISTEN socket
}

// Adopt never changes the file status flags of the description it is given
// (shared with the processes serving on it): F_GETFL reads the same before
// and after, whether the server left the socket blocking or not.
func TestAdoptKeepsDescriptionFlags(t *testing.T) {
	for _, nonblock := range []bool{false, true} {
		orig := listen(t, "tcp://127.0.0.1:0")
		nfd := dupNoFlags(t, orig.Fd())
		if err := unix.SetNonblock(nfd, nonblock); err != nil {
			t.Fatal(err)
		}
		before, err := unix.FcntlInt(uintptr(orig.Fd()), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		s, err := fdpass.Adopt(mustSpec(t, "tcp://"+orig.Addr()), nfd)
		if err != nil {
			t.Fatal(err)
		}
		after, err := unix.FcntlInt(uintptr(orig.Fd()), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if after != before {
			t.Errorf("O_NONBLOCK=%v: F_GETFL %#o before Adopt, %#o after", nonblock, before, after)
		}
	}
}

// A spec with port 0 adopts whatever port the socket has, and reports it.
func TestAdoptPortZero(t *testing.T) {
	orig := listen(t, "tcp://127.0.0.1:0")
	nfd := dupNoFlags(t, orig.Fd())
	s, err := fdpass.Adopt(mustSpec(t, "tcp://127.0.0.1:0"), nfd)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	defer s.Close()
	if s.Addr() != orig.Addr() {
		t.Errorf("Addr() = %s, want %s", s.Addr(), orig.Addr())
	}
}

// Adopt owns the descriptor even on error: it is closed.
func TestAdoptWrongAddress(t *testing.T) {
	orig := listen(t, "tcp://127.0.0.1:0")
	other := listen(t, "tcp://127.0.0.1:0")
	for _, tc := range []struct{ name, spec string }{
		{"other port", "tcp://" + other.Addr()},
		{"other ip", "tcp://127.0.0.2:" + strconv.Itoa(int(netip.MustParseAddrPort(orig.Addr()).Port()))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := fdCount(t)
			nfd := dupNoFlags(t, orig.Fd())
			s, err := fdpass.Adopt(mustSpec(t, tc.spec), nfd)
			if err == nil {
				s.Close()
				t.Fatalf("Adopt(%s) of a socket bound to %s succeeded", tc.spec, orig.Addr())
			}
			if !strings.Contains(err.Error(), orig.Addr()) {
				t.Errorf("error %q does not name the real address %s", err, orig.Addr())
			}
			checkFdCount(t, before, "failed Adopt")
		})
	}
	listenInfo(t, orig) // closing the dup left the socket alone
}

func TestAdoptNotASocket(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	before := fdCount(t)
	if _, err := fdpass.Adopt(mustSpec(t, "tcp://127.0.0.1:80"), p[0]); !errors.Is(err, unix.ENOTSOCK) {
		t.Errorf("Adopt of a pipe: %v, want ENOTSOCK", err)
	}
	if fdCount(t) != before-1 {
		t.Errorf("Adopt did not close the pipe it was given")
	}
}

func TestAdoptUnix(t *testing.T) {
	path := filepath.Join(shortTempDir(t), "u.sock")
	orig := listen(t, "unix://"+path)
	nfd := dupNoFlags(t, orig.Fd())
	s, err := fdpass.Adopt(mustSpec(t, "unix://"+path), nfd)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	defer s.Close()
	if s.Addr() != path || s.Inode() != orig.Inode() || isNonblock(t, nfd) || !isCloexec(t, nfd) {
		t.Errorf("adopted %s inode %d, want %s %d, cloexec and still blocking", s.Addr(), s.Inode(), path, orig.Inode())
	}
}

// Adopt verifies unix sockets too: a socket on another path, or a pipe, is
// refused (and closed).
func TestAdoptChecksUnixSockets(t *testing.T) {
	dir := shortTempDir(t)
	orig := listen(t, "unix://"+filepath.Join(dir, "real.sock"))
	before := fdCount(t)
	nfd := dupNoFlags(t, orig.Fd())
	if s, err := fdpass.Adopt(mustSpec(t, "unix://"+filepath.Join(dir, "other.sock")), nfd); err == nil {
		t.Errorf("Adopt of a socket on real.sock as other.sock succeeded, Addr() = %s", s.Addr())
		s.Close()
	}
	checkFdCount(t, before, "Adopt")
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[1])
	if s, err := fdpass.Adopt(mustSpec(t, "unix://"+filepath.Join(dir, "real.sock")), p[0]); err == nil {
		t.Errorf("Adopt of a pipe as a unix socket succeeded")
		s.Close()
	}
}

// Adopt checks the transport as well as the address: a UDP socket is not
// adopted for a tcp spec on the same address.
func TestAdoptChecksTransport(t *testing.T) {
	u := listen(t, "udp://127.0.0.1:0")
	nfd := dupNoFlags(t, u.Fd())
	if s, err := fdpass.Adopt(mustSpec(t, "tcp://"+u.Addr()), nfd); err == nil {
		t.Errorf("Adopt of a UDP socket for tcp://%s succeeded", u.Addr())
		s.Close()
	}
}

func TestNonblocking(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer closeFds(p[:])
	if nb, err := fdpass.Nonblocking(p[0]); err != nil || nb {
		t.Errorf("Nonblocking(blocking pipe) = %v, %v", nb, err)
	}
	if err := unix.SetNonblock(p[0], true); err != nil {
		t.Fatal(err)
	}
	if nb, err := fdpass.Nonblocking(p[0]); err != nil || !nb {
		t.Errorf("Nonblocking(non-blocking pipe) = %v, %v", nb, err)
	}
	if _, err := fdpass.Nonblocking(-1); err == nil {
		t.Error("Nonblocking(-1) gave no error")
	}
}
