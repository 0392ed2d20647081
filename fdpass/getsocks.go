package fdpass

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// getsocksLine is the request HAProxy's sock_get_old_sockets() sends.
const getsocksLine = "_getsocks\n"

// getsocksTimeout bounds each step of a transfer; HAProxy itself gives up
// after 1 s per read (SO_RCVTIMEO).
const getsocksTimeout = 5 * time.Second

// GetsocksEntry is one socket offered through _getsocks. Fd is borrowed.
// Namespace and Interface go into the per-socket record HAProxy matches
// against its bind lines ("namespace", "interface"); both are usually empty.
type GetsocksEntry struct {
	Fd        int
	Namespace string
	Interface string
}

// ServeGetsocks answers one _getsocks request on c: the count alone, then
// batches of at most MaxBatch descriptors (full ones first), each followed
// by the client's 4-byte acknowledgement. The entries' descriptors are
// borrowed. The caller sets deadlines and closes c.
func ServeGetsocks(c *net.UnixConn, entries []GetsocksEntry) error {
	if err := checkGetsocksEntries(entries); err != nil {
		return err
	}
	line, err := bufio.NewReaderSize(io.LimitReader(c, 64), 64).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	if line != getsocksLine {
		return fmt.Errorf("unexpected request %q", line)
	}
	var word [4]byte
	binary.NativeEndian.PutUint32(word[:], uint32(len(entries)))
	if _, err := c.Write(word[:]); err != nil {
		return fmt.Errorf("send count: %w", err)
	}
	for _, b := range Batches(len(entries)) {
		batch := entries[b[0]:b[1]]
		if err := Send(c, getsocksRecords(batch), entryFds(batch)); err != nil {
			return fmt.Errorf("send batch %d-%d: %w", b[0], b[1], err)
		}
		if _, err := io.ReadFull(c, word[:]); err != nil {
			return fmt.Errorf("read ack of batch %d-%d: %w", b[0], b[1], err)
		}
	}
	return nil
}

// checkGetsocksEntries refuses names a record cannot carry: lengths are one
// byte, and HAProxy keeps at most IFNAMSIZ-1 bytes of an interface name.
func checkGetsocksEntries(entries []GetsocksEntry) error {
	for _, e := range entries {
		if len(e.Namespace) > 255 || len(e.Interface) > 15 {
			return fmt.Errorf("getsocks: namespace %q or interface %q too long", e.Namespace, e.Interface)
		}
	}
	return nil
}

func getsocksRecords(batch []GetsocksEntry) []byte {
	var buf bytes.Buffer
	for _, e := range batch {
		buf.WriteByte(byte(len(e.Namespace)))
		buf.WriteString(e.Namespace)
		buf.WriteByte(byte(len(e.Interface)))
		buf.WriteString(e.Interface)
		buf.Write([]byte{0, 0, 0, 0}) // listener options: ignored since HAProxy 2.3
	}
	return buf.Bytes()
}

func entryFds(batch []GetsocksEntry) []int {
	fds := make([]int, len(batch))
	for i, e := range batch {
		fds[i] = e.Fd
	}
	return fds
}

// ErrPeerRefused is wrapped by the errors a GetsocksServer reports for a
// peer its check refused: someone else's attempt, not a failed transfer.
var ErrPeerRefused = errors.New("getsocks: peer refused")

// PeerCheck decides whether the process pid (SO_PEERCRED of a connection)
// may take the sockets; the error says why not.
type PeerCheck func(pid int) error

// GetsocksServer serves _getsocks on a unix socket to the processes of the
// generation baton started, as its PeerCheck decides. Connections from any
// other process are refused.
type GetsocksServer struct {
	ln      *net.UnixListener
	path    string
	entries []GetsocksEntry
	checkc  chan PeerCheck
	onError func(error)

	closeOnce sync.Once
	done      chan struct{}
}

// NewGetsocksServer listens on path (mode 0600; its directory should be
// 0700 and private to this generation). entries are borrowed until Close
// returns. onError receives refused peers (wrapping ErrPeerRefused) and
// failed transfers.
func NewGetsocksServer(path string, entries []GetsocksEntry, onError func(error)) (*GetsocksServer, error) {
	if err := checkGetsocksEntries(entries); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("getsocks listen: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("getsocks chmod: %w", err)
	}
	return &GetsocksServer{
		ln: ln, path: path, entries: entries, onError: onError,
		checkc: make(chan PeerCheck, 1), done: make(chan struct{}),
	}, nil
}

// Path returns the socket path to give to haproxy -x.
func (s *GetsocksServer) Path() string { return s.path }

// Allow lets the process pid, and no other, take the sockets. See AllowPeer.
func (s *GetsocksServer) Allow(pid int) {
	s.AllowPeer(func(peer int) error {
		if peer != pid {
			return fmt.Errorf("only pid %d may take the sockets", pid)
		}
		return nil
	})
}

// AllowPeer sets the check every peer must pass. Call it once, right after
// the generation's process was started; a request that arrives first waits
// for it. Later calls are ignored.
func (s *GetsocksServer) AllowPeer(check PeerCheck) {
	select {
	case s.checkc <- check:
	default:
	}
}

// Serve accepts and answers requests until Close. It is run by one
// goroutine, owned by whoever calls Close.
func (s *GetsocksServer) Serve() {
	var check PeerCheck
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		if check == nil {
			select {
			case check = <-s.checkc:
			case <-s.done:
				c.Close()
				return
			}
		}
		s.serveConn(c, check)
	}
}

func (s *GetsocksServer) serveConn(c *net.UnixConn, check PeerCheck) {
	defer c.Close()
	peer, err := PeerCred(c)
	if err != nil {
		s.onError(fmt.Errorf("getsocks: peer credentials: %w", err))
		return
	}
	if err := check(int(peer.Pid)); err != nil {
		s.onError(fmt.Errorf("%w: pid %d (uid %d): %w", ErrPeerRefused, peer.Pid, peer.Uid, err))
		return
	}
	_ = c.SetDeadline(time.Now().Add(getsocksTimeout))
	if err := ServeGetsocks(c, s.entries); err != nil {
		s.onError(fmt.Errorf("getsocks: pid %d: %w", peer.Pid, err))
	}
}

// Close stops serving and removes the socket path. The borrowed descriptors
// may be closed once the goroutine running Serve has returned.
func (s *GetsocksServer) Close() error {
	var err error
	s.closeOnce.Do(func() {
		close(s.done)
		err = s.ln.Close()
	})
	return err
}

// PeerCred returns the SO_PEERCRED credentials of a unix connection.
func PeerCred(c *net.UnixConn) (*unix.Ucred, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, cerr
}

// GetsocksRecord is the per-socket metadata a _getsocks client receives.
type GetsocksRecord struct {
	Namespace, Interface string
}

// FetchGetsocks is the client side of _getsocks, as HAProxy's -x does it:
// it connects to path, asks for the sockets and acknowledges each batch.
// The caller owns the returned descriptors; on error none are returned.
func FetchGetsocks(path string, timeout time.Duration) ([]int, []GetsocksRecord, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("getsocks connect: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	fds, data, err := fetchAll(c)
	if err != nil {
		closeAll(fds)
		return nil, nil, err
	}
	recs, err := parseGetsocksRecords(data, len(fds))
	if err != nil {
		closeAll(fds)
		return nil, nil, err
	}
	return fds, recs, nil
}

func fetchAll(c *net.UnixConn) ([]int, []byte, error) {
	if _, err := io.WriteString(c, getsocksLine); err != nil {
		return nil, nil, fmt.Errorf("getsocks request: %w", err)
	}
	var word [4]byte
	if _, err := io.ReadFull(c, word[:]); err != nil {
		return nil, nil, fmt.Errorf("getsocks count: %w", err)
	}
	want := int(binary.NativeEndian.Uint32(word[:]))
	var fds []int
	var data []byte
	buf := make([]byte, MaxBatch*(2+2*255+4))
	for len(fds) < want {
		n, got, err := Recv(c, buf, MaxBatch)
		fds = append(fds, got...)
		if err == nil && n == 0 {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fds, nil, fmt.Errorf("getsocks: got %d of %d sockets: %w", len(fds), want, err)
		}
		data = append(data, buf[:n]...)
		binary.NativeEndian.PutUint32(word[:], uint32(len(fds)))
		if _, err := c.Write(word[:]); err != nil {
			return fds, nil, fmt.Errorf("getsocks ack: %w", err)
		}
	}
	if len(fds) != want {
		return fds, nil, fmt.Errorf("getsocks: got %d sockets, announced %d", len(fds), want)
	}
	return fds, data, nil
}

func parseGetsocksRecords(data []byte, n int) ([]GetsocksRecord, error) {
	errShort := errors.New("getsocks: records shorter than announced")
	recs := make([]GetsocksRecord, 0, n)
	for range n {
		var r GetsocksRecord
		for _, field := range []*string{&r.Namespace, &r.Interface} {
			if len(data) < 1 || len(data) < 1+int(data[0]) {
				return nil, errShort
			}
			*field, data = string(data[1:1+int(data[0])]), data[1+int(data[0]):]
		}
		if len(data) < 4 {
			return nil, errShort
		}
		data = data[4:]
		recs = append(recs, r)
	}
	if len(data) != 0 {
		return nil, fmt.Errorf("getsocks: %d bytes left after %d records", len(data), n)
	}
	return recs, nil
}
