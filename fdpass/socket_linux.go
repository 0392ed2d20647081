package fdpass

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Socket is a bound (and, for streams, listening) socket created by Listen
// or adopted by Adopt. The Socket owns its descriptor: Close closes it. The
// descriptor is close-on-exec; Listen creates it non-blocking, Adopt keeps
// the flags the description already had.
type Socket struct {
	spec    Spec
	fd      int
	addr    string // the bound address, with the real port when Spec asked for 0
	inode   uint64
	backlog int // the listen(2) backlog passed, 0 for datagram sockets
}

// Listen creates the socket described by sp: no SO_REUSEPORT, SO_REUSEADDR
// for inet streams (so a restart is not blocked by TIME_WAIT), the spec's
// options, bound and listening. A UDP socket is bound without SO_REUSEADDR,
// so the bind fails if any socket holds the address, and gets it only
// after the bind (udpReuseAddr). A stale unix socket file nobody listens on
// is replaced.
func Listen(sp Spec) (*Socket, error) {
	fd, err := newSocket(sp)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", sp.Addr, err)
	}
	s, err := setupSocket(sp, fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen %s://%s: %w", sp.Scheme, sp.Addr, err)
	}
	return s, nil
}

func newSocket(sp Spec) (int, error) {
	typ := unix.SOCK_STREAM
	if !sp.IsStream() {
		typ = unix.SOCK_DGRAM
	}
	family := unix.AF_UNIX
	if sp.Scheme != Unix {
		family = unix.AF_INET
		if netip.MustParseAddrPort(sp.Addr).Addr().Is6() {
			family = unix.AF_INET6
		}
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	return fd, nil
}

func setupSocket(sp Spec, fd int) (*Socket, error) {
	if err := setOptions(sp, fd); err != nil {
		return nil, err
	}
	if sp.Scheme == Unix {
		if err := bindUnix(sp, fd); err != nil {
			return nil, err
		}
	} else if err := unix.Bind(fd, inetSockaddr(sp.Addr)); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	if err := udpReuseAddr(sp, fd); err != nil {
		return nil, err
	}
	backlog := 0
	if sp.IsStream() {
		backlog = EffectiveBacklog(sp)
		if err := unix.Listen(fd, backlog); err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
	}
	s, err := newSocketInfo(sp, fd)
	if err != nil {
		return nil, err
	}
	s.backlog = backlog
	return s, nil
}

// EffectiveBacklog is the backlog a stream spec gets: its own, or the
// host's somaxconn.
func EffectiveBacklog(sp Spec) int {
	if sp.Backlog != 0 {
		return sp.Backlog
	}
	return DefaultBacklog()
}

func setOptions(sp Spec, fd int) error {
	set := func(level, opt, val int, name string) error {
		if err := unix.SetsockoptInt(fd, level, opt, val); err != nil {
			return fmt.Errorf("setsockopt %s: %w", name, err)
		}
		return nil
	}
	if sp.Scheme == Unix {
		return nil
	}
	v6 := netip.MustParseAddrPort(sp.Addr).Addr().Is6()
	var errs []error
	if sp.IsStream() {
		errs = append(errs, set(unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"))
	}
	if v6 {
		errs = append(errs, set(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, boolInt(sp.V6Only), "IPV6_V6ONLY"))
	}
	if sp.FreeBind {
		if v6 {
			errs = append(errs, set(unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1, "IPV6_FREEBIND"))
		} else {
			errs = append(errs, set(unix.IPPROTO_IP, unix.IP_FREEBIND, 1, "IP_FREEBIND"))
		}
	}
	if sp.DeferAccept > 0 {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, sp.DeferAccept, "TCP_DEFER_ACCEPT"))
	}
	return errors.Join(errs...)
}

// udpReuseAddr sets SO_REUSEADDR on a bound UDP socket. HAProxy's QUIC
// stack (tune.quic.socket-owner connection, its default) gives each
// connection a socket of its own, bound with SO_REUSEADDR to the
// listener's address and connected to the client; Linux lets a UDP socket
// bind an address another socket holds only when both have SO_REUSEADDR,
// and HAProxy does not set it on a socket it received. Without it every
// connection falls back to the listener socket, and HAProxy's soft stop
// no longer waits for those connections. Set after the bind, it leaves
// baton's own bind exclusive: a second baton, or a generation's socket
// left behind, still makes it fail with EADDRINUSE. Afterwards any socket
// with SO_REUSEADDR, of any user, may bind the address beside baton's
// (docs/design.md, "UDP and QUIC listeners").
func udpReuseAddr(sp Spec, fd int) error {
	if sp.IsStream() {
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("setsockopt SO_REUSEADDR: %w", err)
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func inetSockaddr(addr string) unix.Sockaddr {
	ap := netip.MustParseAddrPort(addr)
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// bindUnix binds fd to the path itself, then applies the mode. It does not
// bind a temporary name and rename it: getsockname would then report the
// temporary name, and HAProxy and nginx match passed sockets by the name.
// Until the chmod the path has 0777 minus baton's umask. The path is replaced
// only when it is a socket that nobody listens on.
func bindUnix(sp Spec, fd int) error {
	if err := checkStaleUnix(sp.Addr); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sp.Addr}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if sp.Mode != 0 {
		if err := os.Chmod(sp.Addr, sp.Mode); err != nil {
			_ = os.Remove(sp.Addr)
			return fmt.Errorf("chmod: %w", err)
		}
	}
	return nil
}

// checkStaleUnix fails when path exists and is not a socket, or is a socket
// that accepts connections; a socket file that refuses them is removed.
func checkStaleUnix(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer unix.Close(probe)
	err = unix.Connect(probe, &unix.SockaddrUnix{Name: path})
	if err == nil || !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("%s: %w (a process is listening on it)", path, unix.EADDRINUSE)
	}
	return os.Remove(path)
}

func newSocketInfo(sp Spec, fd int) (*Socket, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	addr := sp.Addr
	if sp.Scheme != Unix {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return nil, fmt.Errorf("getsockname: %w", err)
		}
		addr = sockaddrString(sa)
	}
	return &Socket{spec: sp, fd: fd, addr: addr, inode: st.Ino}, nil
}

func sockaddrString(sa unix.Sockaddr) string {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrUnix:
		return a.Name
	}
	return fmt.Sprintf("%v", sa)
}

// Adopt wraps a descriptor received from elsewhere (an upgrade, pidfd_getfd)
// as a Socket. It takes ownership of fd, even on error (fd is then closed).
// It verifies that fd is a socket of sp's type bound to sp's address (port 0
// in the spec accepts any port) and sets close-on-exec, a flag of the
// descriptor. It leaves the file status flags (O_NONBLOCK) alone: they
// belong to the open file description, which the processes serving on the
// socket share, and a server that made its socket blocking would get EAGAIN
// from accept. baton sets O_NONBLOCK only on sockets it creates (Listen).
func Adopt(sp Spec, fd int) (*Socket, error) {
	s, err := adopt(sp, fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("adopt %s://%s: %w", sp.Scheme, sp.Addr, err)
	}
	return s, nil
}

func adopt(sp Spec, fd int) (*Socket, error) {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("not a socket: %w", err)
	}
	if want := map[bool]int{true: unix.SOCK_STREAM, false: unix.SOCK_DGRAM}[sp.IsStream()]; typ != want {
		return nil, fmt.Errorf("socket type %d, want %d", typ, want)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	got := sockaddrString(sa)
	if got != sp.Addr && !(sp.Scheme != Unix && strings.HasSuffix(sp.Addr, ":0") && sameHost(got, sp.Addr)) {
		return nil, fmt.Errorf("descriptor is bound to %q", got)
	}
	unix.CloseOnExec(fd)
	s, err := newSocketInfo(sp, fd)
	if err != nil {
		return nil, err
	}
	if sp.IsStream() {
		s.backlog = EffectiveBacklog(sp)
	}
	return s, nil
}

func sameHost(a, b string) bool {
	pa, err1 := netip.ParseAddrPort(a)
	pb, err2 := netip.ParseAddrPort(b)
	return err1 == nil && err2 == nil && pa.Addr() == pb.Addr()
}

// Spec returns the spec the socket was created from.
func (s *Socket) Spec() Spec { return s.spec }

// Addr returns the bound address (the real port when the spec said 0).
func (s *Socket) Addr() string { return s.addr }

// Backlog is the listen(2) backlog baton set (0 for datagram sockets).
func (s *Socket) Backlog() int { return s.backlog }

// Inode returns the socket's inode number, as /proc/PID/fd shows it.
func (s *Socket) Inode() uint64 { return s.inode }

// Fd returns the descriptor, borrowed: it stays owned by s and is valid until
// Close.
func (s *Socket) Fd() int { return s.fd }

// Close closes the descriptor. The socket itself lives on while another
// process holds it. A unix socket's path is left alone: a generation may still
// be serving on it.
func (s *Socket) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	if err != nil {
		return fmt.Errorf("close %s: %w", s.spec.Addr, err)
	}
	return nil
}

// Unlink removes a unix socket's path; a no-op for other schemes. Call it
// when the listener leaves the configuration and nobody holds it any more.
func (s *Socket) Unlink() error {
	if s.spec.Scheme != Unix {
		return nil
	}
	if err := os.Remove(s.spec.Addr); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("unlink %s: %w", s.spec.Addr, err)
	}
	return nil
}

// Nonblocking reports whether O_NONBLOCK is set on the socket's open file
// description (shared by every process holding it).
func Nonblocking(fd int) (bool, error) {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return false, err
	}
	return fl&unix.O_NONBLOCK != 0, nil
}

// DefaultBacklog is the host's net.core.somaxconn, or 4096 when unreadable.
func DefaultBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			return n
		}
	}
	return 4096
}
