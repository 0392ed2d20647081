package fdpass_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

// entriesFor offers socks through _getsocks with a mix of records: some
// with interface "lo" (HAProxy matches `bind ... interface lo` on it),
// some with a namespace, the last with both.
func entriesFor(socks []*fdpass.Socket) []fdpass.GetsocksEntry {
	entries := make([]fdpass.GetsocksEntry, len(socks))
	for i, s := range socks {
		e := fdpass.GetsocksEntry{Fd: s.Fd()}
		if i%5 == 1 {
			e.Interface = "lo"
		}
		if i%7 == 3 {
			e.Namespace = "blue"
		}
		if i == len(socks)-1 && i > 0 {
			e.Namespace, e.Interface = "ns-"+strings.Repeat("x", 40), "eth0.100"
		}
		entries[i] = e
	}
	return entries
}

func recordsOf(entries []fdpass.GetsocksEntry) []fdpass.GetsocksRecord {
	recs := make([]fdpass.GetsocksRecord, len(entries))
	for i, e := range entries {
		recs[i] = fdpass.GetsocksRecord{Namespace: e.Namespace, Interface: e.Interface}
	}
	return recs
}

// testServer is a GetsocksServer whose Serve runs on a goroutine the test
// owns: cleanup closes the server and waits for that goroutine.
type testServer struct {
	*fdpass.GetsocksServer
	errs chan error    // onError calls
	done chan struct{} // closed when Serve returned
}

// startGetsocks serves entries on a socket in a private short directory.
// Register it after the sockets it borrows, so that cleanup closes the
// server (and waits for Serve) before closing them.
func startGetsocks(t *testing.T, entries []fdpass.GetsocksEntry) *testServer {
	t.Helper()
	dir := shortTempDir(t)
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "gs.sock")
	errs := make(chan error, 64)
	srv, err := fdpass.NewGetsocksServer(path, entries, func(err error) {
		select {
		case errs <- err:
		default:
		}
	})
	if err != nil {
		t.Fatalf("NewGetsocksServer: %v", err)
	}
	s := &testServer{GetsocksServer: srv, errs: errs, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		srv.Serve()
	}()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		s.waitServe(t)
	})
	return s
}

func (s *testServer) waitServe(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(testTimeout):
		t.Errorf("Serve still running %v after Close", testTimeout)
	}
}

func (s *testServer) noErrors(t *testing.T) {
	t.Helper()
	select {
	case err := <-s.errs:
		t.Errorf("onError: %v", err)
	default:
	}
}

func (s *testServer) nextError(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(testTimeout):
		t.Fatalf("no onError call within %v", testTimeout)
		return nil
	}
}

func TestGetsocksRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 252, 253, 300} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			socks := listenN(t, n)
			entries := entriesFor(socks)
			srv := startGetsocks(t, entries)
			srv.Allow(os.Getpid())
			base := fdCount(t)

			fds, recs, err := fdpass.FetchGetsocks(srv.Path(), testTimeout)
			if err != nil {
				t.Fatalf("FetchGetsocks: %v", err)
			}
			defer closeFds(fds)
			if len(fds) != n || len(recs) != n {
				t.Fatalf("got %d descriptors and %d records, want %d", len(fds), len(recs), n)
			}
			for i, fd := range fds {
				if ino := fdInode(t, fd); ino != socks[i].Inode() {
					t.Fatalf("descriptor %d: inode %d, want %d (the same socket, in order)", i, ino, socks[i].Inode())
				}
				if !isCloexec(t, fd) {
					t.Errorf("received descriptor %d is not close-on-exec", i)
				}
			}
			if want := recordsOf(entries); n > 0 && !reflect.DeepEqual(recs, want) {
				t.Errorf("records %+v, want %+v", recs, want)
			}
			if n > 1 && recs[1].Interface != "lo" {
				t.Errorf("record 1 interface %q, want lo", recs[1].Interface)
			}
			// The server closes its end of the connection once it read the
			// last ack, maybe after FetchGetsocks returned: poll.
			checkFdCount(t, base+n, "after FetchGetsocks")
			closeFds(fds)
			fds = nil
			checkFdCount(t, base, "after closing fetched descriptors")

			// One LISTEN socket per address: passing shares, never copies.
			all, err := fdpass.ListeningTCP()
			if err != nil {
				t.Fatal(err)
			}
			perInode := map[uint64]int{}
			for _, li := range all {
				perInode[li.Inode]++
			}
			for _, s := range socks {
				if perInode[s.Inode()] != 1 {
					t.Fatalf("%s: %d LISTEN entries with inode %d", s.Addr(), perInode[s.Inode()], s.Inode())
				}
			}
			srv.noErrors(t)
		})
	}
}

// rawGetsocks plays HAProxy's side of _getsocks by hand on c: it checks the
// count arrives alone, records the size of every batch, checks the server
// waits for each ack, and returns the descriptors and records.
func rawGetsocks(t *testing.T, c *net.UnixConn, served <-chan error) (sizes []int, fds []int, recs []fdpass.GetsocksRecord) {
	t.Helper()
	if _, err := c.Write([]byte("_getsocks\n")); err != nil {
		t.Fatal(err)
	}
	oob := make([]byte, unix.CmsgSpace(4*253))
	var word [4]byte
	// Read the count as HAProxy does: exactly 4 bytes. Descriptors attached
	// to these bytes would be delivered here, and HAProxy would drop them.
	n, oobn, flags, _, err := c.ReadMsgUnix(word[:], oob)
	if err != nil || n != 4 {
		t.Fatalf("count: %d bytes, %v", n, err)
	}
	if oobn != 0 || flags&unix.MSG_CTRUNC != 0 {
		t.Fatalf("the count came with %d bytes of ancillary data (flags %#x): it must be sent alone", oobn, flags)
	}
	want := int(binary.NativeEndian.Uint32(word[:]))
	buf := make([]byte, 1<<17)
	for len(fds) < want {
		n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			t.Fatalf("batch after %d of %d descriptors: %d bytes, %v", len(fds), want, n, err)
		}
		if flags&unix.MSG_CTRUNC != 0 {
			t.Fatalf("batch after %d descriptors truncated", len(fds))
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			t.Fatalf("control messages: %d, %v", len(msgs), err)
		}
		got, err := unix.ParseUnixRights(&msgs[0])
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, got...)
		sizes = append(sizes, len(got))
		// The data of this message is exactly the records of its batch.
		data := buf[:n]
		for range got {
			var r fdpass.GetsocksRecord
			for _, f := range []*string{&r.Namespace, &r.Interface} {
				if len(data) < 1 || len(data) < 1+int(data[0]) {
					t.Fatalf("batch %d: records cut short", len(sizes))
				}
				*f, data = string(data[1:1+data[0]]), data[1+data[0]:]
			}
			if len(data) < 4 || !bytes.Equal(data[:4], []byte{0, 0, 0, 0}) {
				t.Fatalf("batch %d: option bytes %x, want 4 zero bytes", len(sizes), data[:min(4, len(data))])
			}
			data = data[4:]
			recs = append(recs, r)
		}
		if len(data) != 0 {
			t.Fatalf("batch %d: %d bytes beyond its %d records", len(sizes), len(data), len(got))
		}
		// Nothing more may come before the ack (HAProxy acks every batch).
		if err := peekNothing(c); err != nil {
			t.Fatalf("after batch %d, before its ack: %v", len(sizes), err)
		}
		select {
		case err := <-served:
			t.Fatalf("server returned (%v) before the ack of batch %d", err, len(sizes))
		default:
		}
		binary.NativeEndian.PutUint32(word[:], uint32(len(fds)))
		if _, err := c.Write(word[:]); err != nil {
			t.Fatal(err)
		}
	}
	return sizes, fds, recs
}

// peekNothing fails unless no byte is waiting on c.
func peekNothing(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	if err := raw.Control(func(fd uintptr) {
		var b [1]byte
		_, _, rerr = unix.Recvfrom(int(fd), b[:], unix.MSG_DONTWAIT|unix.MSG_PEEK)
	}); err != nil {
		return err
	}
	if !errors.Is(rerr, unix.EAGAIN) {
		return fmt.Errorf("data waiting (peek: %v)", rerr)
	}
	return nil
}

// The wire format HAProxy's -x client needs (notes part A1): the count
// alone, then batches of at most 252, full ones first, each acknowledged.
func TestServeGetsocksWire(t *testing.T) {
	for _, tc := range []struct {
		n     int
		sizes []int
	}{
		{0, nil},
		{1, []int{1}},
		{252, []int{252}},
		{253, []int{252, 1}},
		{300, []int{252, 48}},
		{505, []int{252, 252, 1}},
	} {
		t.Run(strconv.Itoa(tc.n), func(t *testing.T) {
			socks := listenN(t, tc.n)
			entries := entriesFor(socks)
			client, server := socketpair(t)
			served := make(chan error, 1)
			go func() { served <- fdpass.ServeGetsocks(server, entries) }()

			sizes, fds, recs := rawGetsocks(t, client, served)
			defer closeFds(fds)
			if !reflect.DeepEqual(sizes, tc.sizes) {
				t.Errorf("batch sizes %v, want %v", sizes, tc.sizes)
			}
			select {
			case err := <-served:
				if err != nil {
					t.Fatalf("ServeGetsocks: %v", err)
				}
			case <-time.After(testTimeout):
				t.Fatal("ServeGetsocks did not return after the last ack")
			}
			for i, fd := range fds {
				if fdInode(t, fd) != socks[i].Inode() {
					t.Fatalf("descriptor %d is not socket %d", i, i)
				}
			}
			if tc.n > 0 && !reflect.DeepEqual(recs, recordsOf(entries)) {
				t.Errorf("records %+v, want %+v", recs, recordsOf(entries))
			}
			// ServeGetsocks leaves c open for its caller, and sends nothing
			// more.
			if err := peekNothing(client); err != nil {
				t.Errorf("after the transfer: %v", err)
			}
		})
	}
}

func TestServeGetsocksBadRequest(t *testing.T) {
	socks := listenN(t, 1)
	for _, tc := range []struct {
		name, send, problem string
	}{
		{"other command", "show info\n", "unexpected request"},
		{"getsocks with more", "_getsocks now\n", "unexpected request"},
		{"no newline", "_getsocks", "read request"},
		{"endless line", strings.Repeat("x", 200), "read request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := socketpair(t)
			served := make(chan error, 1)
			go func() { served <- fdpass.ServeGetsocks(server, entriesFor(socks)) }()
			if _, err := client.Write([]byte(tc.send)); err != nil {
				t.Fatal(err)
			}
			client.CloseWrite()
			var err error
			select {
			case err = <-served:
			case <-time.After(testTimeout):
				t.Fatal("ServeGetsocks did not return")
			}
			if err == nil || !strings.Contains(err.Error(), tc.problem) {
				t.Fatalf("ServeGetsocks: %v, want an error about %q", err, tc.problem)
			}
			server.Close()
			// Unread request bytes make the close a reset: also nothing sent.
			if b, err := io.ReadAll(client); len(b) != 0 || err != nil && !errors.Is(err, unix.ECONNRESET) {
				t.Errorf("server sent %q (%v) in answer to a bad request", b, err)
			}
		})
	}
}

// A client that goes away without acknowledging is an error, not a hang.
func TestServeGetsocksNoAck(t *testing.T) {
	socks := listenN(t, 3)
	client, server := socketpair(t)
	served := make(chan error, 1)
	go func() { served <- fdpass.ServeGetsocks(server, entriesFor(socks)) }()
	if _, err := client.Write([]byte("_getsocks\n")); err != nil {
		t.Fatal(err)
	}
	var word [4]byte
	if _, err := io.ReadFull(client, word[:]); err != nil {
		t.Fatal(err)
	}
	client.Close()
	select {
	case err := <-served:
		// Depending on timing the batch or its ack fails.
		if err == nil || !strings.Contains(err.Error(), "batch 0-3") {
			t.Fatalf("ServeGetsocks: %v, want an error about the batch", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("ServeGetsocks did not return")
	}
}

// fakeGetsocks serves one connection on a unix path with serve, after
// reading the request line; it returns the path and a channel closed once
// the connection is closed.
func fakeGetsocks(t *testing.T, serve func(c *net.UnixConn)) (string, <-chan struct{}) {
	t.Helper()
	path := filepath.Join(shortTempDir(t), "fake.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		line, err := bufio.NewReader(io.LimitReader(c, 10)).ReadString('\n')
		if err != nil || line != "_getsocks\n" {
			t.Errorf("fake server: request %q, %v", line, err)
			return
		}
		serve(c)
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return path, done
}

func sendCount(t *testing.T, c *net.UnixConn, n int) {
	var w [4]byte
	binary.NativeEndian.PutUint32(w[:], uint32(n))
	if _, err := c.Write(w[:]); err != nil {
		t.Errorf("fake server: count: %v", err)
	}
}

func readAck(c *net.UnixConn) {
	var w [4]byte
	_, _ = io.ReadFull(c, w[:])
}

func emptyRecords(n int) []byte { return make([]byte, 6*n) }

// FetchGetsocks, on every protocol error, returns no descriptor and leaks
// none.
func TestFetchGetsocksProtocolErrors(t *testing.T) {
	socks := listenN(t, 253)
	fds := entryFds(socks)
	for _, tc := range []struct {
		name    string
		serve   func(t *testing.T, c *net.UnixConn)
		problem string
		is      error
	}{
		{"closed before the count", func(t *testing.T, c *net.UnixConn) {}, "getsocks count", nil},
		{"fewer than announced", func(t *testing.T, c *net.UnixConn) {
			sendCount(t, c, 3)
			_ = fdpass.Send(c, emptyRecords(2), fds[:2])
			readAck(c)
		}, "got 2 of 3 sockets", io.ErrUnexpectedEOF},
		{"more than announced", func(t *testing.T, c *net.UnixConn) {
			sendCount(t, c, 1)
			_ = fdpass.Send(c, emptyRecords(2), fds[:2])
			readAck(c)
		}, "got 2 sockets, announced 1", nil},
		{"records cut short", func(t *testing.T, c *net.UnixConn) {
			sendCount(t, c, 2)
			_ = fdpass.Send(c, []byte{0, 0, 0, 0, 0, 0, 3, 'a'}, fds[:2])
			readAck(c)
		}, "records shorter than announced", nil},
		{"option bytes missing", func(t *testing.T, c *net.UnixConn) {
			sendCount(t, c, 1)
			_ = fdpass.Send(c, []byte{0, 0, 0}, fds[:1])
			readAck(c)
		}, "records shorter than announced", nil},
		{"bytes after the records", func(t *testing.T, c *net.UnixConn) {
			sendCount(t, c, 1)
			_ = fdpass.Send(c, append(emptyRecords(1), 1, 2, 3), fds[:1])
			readAck(c)
		}, "3 bytes left after 1 records", nil},
		{"records without descriptors", func(t *testing.T, c *net.UnixConn) {
			sendCount(t, c, 1)
			_ = fdpass.Send(c, emptyRecords(1), nil)
			readAck(c)
		}, "got 0 of 1 sockets", io.ErrUnexpectedEOF},
		{"batch of 253", func(t *testing.T, c *net.UnixConn) {
			sendCount(t, c, 253)
			if _, _, err := c.WriteMsgUnix(emptyRecords(253), unix.UnixRights(fds...), nil); err != nil {
				t.Errorf("fake server: sendmsg 253: %v", err)
			}
			readAck(c)
		}, "got 0 of 253 sockets", fdpass.ErrTruncated},
		{"second batch lost", func(t *testing.T, c *net.UnixConn) {
			sendCount(t, c, 253)
			_ = fdpass.Send(c, emptyRecords(252), fds[:252])
			readAck(c)
		}, "got 252 of 253 sockets", io.ErrUnexpectedEOF},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, served := fakeGetsocks(t, func(c *net.UnixConn) { tc.serve(t, c) })
			base := fdCount(t)
			got, recs, err := fdpass.FetchGetsocks(path, testTimeout)
			if err == nil {
				closeFds(got)
				t.Fatalf("FetchGetsocks succeeded with %d descriptors", len(got))
			}
			if got != nil || recs != nil {
				t.Errorf("FetchGetsocks returned %v %v with its error", got, recs)
			}
			if !strings.Contains(err.Error(), tc.problem) {
				t.Errorf("error %q, want it to say %q", err, tc.problem)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %v", err, tc.is)
			}
			<-served
			checkFdCount(t, base, "failed FetchGetsocks")
		})
	}
}

func entryFds(socks []*fdpass.Socket) []int {
	fds := make([]int, len(socks))
	for i, s := range socks {
		fds[i] = s.Fd()
	}
	return fds
}

// The client is more lenient than HAProxy's: a batch larger than the first
// still arrives whole (HAProxy would lose the extra descriptors, which is
// why the server sends full batches first).
func TestFetchGetsocksGrowingBatches(t *testing.T) {
	socks := listenN(t, 300)
	fds := entryFds(socks)
	path, served := fakeGetsocks(t, func(c *net.UnixConn) {
		sendCount(t, c, 300)
		_ = fdpass.Send(c, emptyRecords(50), fds[:50])
		readAck(c)
		_ = fdpass.Send(c, emptyRecords(250), fds[50:])
		readAck(c)
	})
	got, _, err := fdpass.FetchGetsocks(path, testTimeout)
	if err != nil {
		t.Fatalf("FetchGetsocks: %v", err)
	}
	defer closeFds(got)
	<-served
	for i, fd := range got {
		if fdInode(t, fd) != socks[i].Inode() {
			t.Fatalf("descriptor %d is not socket %d", i, i)
		}
	}
}

func TestFetchGetsocksTimeout(t *testing.T) {
	release := make(chan struct{})
	path, _ := fakeGetsocks(t, func(c *net.UnixConn) { <-release })
	defer close(release)
	start := time.Now()
	_, _, err := fdpass.FetchGetsocks(path, 200*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("FetchGetsocks from a silent server: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("FetchGetsocks took %v with a 200ms timeout", d)
	}
}

func TestFetchGetsocksNoServer(t *testing.T) {
	_, _, err := fdpass.FetchGetsocks(filepath.Join(shortTempDir(t), "none.sock"), time.Second)
	if err == nil || !strings.Contains(err.Error(), "getsocks connect") || !errors.Is(err, unix.ENOENT) {
		t.Errorf("FetchGetsocks with no server: %v", err)
	}
}

func TestGetsocksServerSocket(t *testing.T) {
	dir := shortTempDir(t)
	path := filepath.Join(dir, "gs.sock")
	// A stale socket file from an earlier generation is replaced.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	srv, err := fdpass.NewGetsocksServer(path, nil, func(error) {})
	if err != nil {
		t.Fatalf("NewGetsocksServer over a stale socket: %v", err)
	}
	if srv.Path() != path {
		t.Errorf("Path() = %q, want %q", srv.Path(), path)
	}
	st, err := os.Lstat(path)
	if err != nil || st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket file %v %v, want a socket with mode 0600", st, err)
	}
	// Close without Serve ever running: the path goes away.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close: %v, want the path removed", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	if _, err := fdpass.NewGetsocksServer(filepath.Join(dir, "no", "gs.sock"), nil, func(error) {}); err == nil {
		t.Error("NewGetsocksServer in a missing directory succeeded")
	}
}

// Close while Serve waits for a connection: Serve returns, no goroutine is
// left, the path is gone.
func TestGetsocksServerCloseIdle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	socks := listenN(t, 2)
	srv := startGetsocks(t, entriesFor(socks))
	srv.Allow(os.Getpid())
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv.waitServe(t)
	if _, err := os.Lstat(srv.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Close: %v, want the path removed", err)
	}
	if _, _, err := fdpass.FetchGetsocks(srv.Path(), time.Second); err == nil {
		t.Error("FetchGetsocks after Close succeeded")
	}
	srv.noErrors(t)
}

// A connection waiting for Allow when Close comes: Serve returns and the
// client gets an error, not the sockets.
func TestGetsocksServerCloseWhileWaitingForAllow(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	socks := listenN(t, 2)
	srv := startGetsocks(t, entriesFor(socks))
	fetched := make(chan error, 1)
	go func() {
		fds, _, err := fdpass.FetchGetsocks(srv.Path(), testTimeout)
		closeFds(fds)
		fetched <- err
	}()
	waitConnected(t, srv.Path())
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	srv.waitServe(t)
	select {
	case err := <-fetched:
		if err == nil {
			t.Error("the client got the sockets although no pid was allowed")
		}
	case <-time.After(testTimeout):
		t.Fatal("the waiting client was not released by Close")
	}
}

// waitConnected waits until a client is connected to the unix socket at
// path (an St 03 entry for it in /proc/net/unix).
func waitConnected(t *testing.T, path string) {
	t.Helper()
	eventually(t, func() error {
		b, err := os.ReadFile("/proc/net/unix")
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 8 && f[7] == path && f[5] == "03" {
				return nil
			}
		}
		return fmt.Errorf("no connection to %s in /proc/net/unix", path)
	})
}

// The allowed pid may fetch again (a retry), and the first Allow wins.
func TestGetsocksServerServesSequentially(t *testing.T) {
	socks := listenN(t, 3)
	srv := startGetsocks(t, entriesFor(socks))
	srv.Allow(os.Getpid())
	srv.Allow(1) // ignored: the pid is set once
	for i := range 3 {
		fds, _, err := fdpass.FetchGetsocks(srv.Path(), testTimeout)
		if err != nil {
			t.Fatalf("fetch %d: %v", i, err)
		}
		if len(fds) != 3 || fdInode(t, fds[2]) != socks[2].Inode() {
			t.Errorf("fetch %d: %d descriptors", i, len(fds))
		}
		closeFds(fds)
	}
	srv.noErrors(t)
}

// A failed transfer with the allowed peer is reported with its pid.
func TestGetsocksServerReportsTransferError(t *testing.T) {
	socks := listenN(t, 1)
	srv := startGetsocks(t, entriesFor(socks))
	srv.Allow(os.Getpid())
	c, err := net.DialTimeout("unix", srv.Path(), testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("show fd\n")); err != nil {
		t.Fatal(err)
	}
	err = srv.nextError(t)
	if !strings.Contains(err.Error(), "unexpected request") || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("onError(%q): want the pid and the problem", err)
	}
}

// getsocksChild starts this test binary as a _getsocks client of path (see
// TestMain); the result comes on the returned channel once it exited.
func getsocksChild(t *testing.T, path string) (*exec.Cmd, *bytes.Buffer, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	// GORACE: a -race child would otherwise sleep 1 s at exit.
	cmd.Env = append(os.Environ(), childEnv+"=getsocks", childPathEnv+"="+path, "GORACE=atexit_sleep_ms=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	exited := make(chan error, 1) // the test reads it once
	waited := make(chan struct{}) // cleanup waits on it
	go func() {
		defer close(waited)
		exited <- cmd.Wait()
		cancel()
	}()
	t.Cleanup(func() {
		cancel()
		<-waited
	})
	return cmd, &out, exited
}

func waitExit(t *testing.T, exited <-chan error) error {
	t.Helper()
	select {
	case err := <-exited:
		return err
	case <-time.After(2 * testTimeout):
		t.Fatal("child did not exit")
		return nil
	}
}

// Only the pid baton started may take the sockets: another process is
// refused, gets an error, and onError names it.
func TestGetsocksServerRefusesOtherPid(t *testing.T) {
	socks := listenN(t, 3)
	srv := startGetsocks(t, entriesFor(socks))
	srv.Allow(os.Getpid())
	cmd, out, exited := getsocksChild(t, srv.Path())
	err := waitExit(t, exited)
	if err == nil || !strings.HasPrefix(out.String(), "ERR ") || strings.Contains(out.String(), "OK ") {
		t.Fatalf("refused child: exit %v, output %q; want an error and no socket", err, out)
	}
	refusal := srv.nextError(t)
	if want := "refused: pid " + strconv.Itoa(cmd.Process.Pid); !strings.Contains(refusal.Error(), want) || !errors.Is(refusal, fdpass.ErrPeerRefused) {
		t.Errorf("onError(%q) does not say %q", refusal, want)
	}
	// The server is still there for the allowed pid.
	fds, _, err := fdpass.FetchGetsocks(srv.Path(), testTimeout)
	if err != nil || len(fds) != 3 {
		t.Fatalf("allowed fetch after a refusal: %d, %v", len(fds), err)
	}
	closeFds(fds)
	srv.noErrors(t)
}

// A generation may ask before baton called Allow (it runs as soon as it is
// started): the request waits, then the allowed pid gets every socket.
func TestGetsocksServerRequestBeforeAllow(t *testing.T) {
	socks := listenN(t, 260)
	entries := entriesFor(socks)
	srv := startGetsocks(t, entries)
	cmd, out, exited := getsocksChild(t, srv.Path())
	waitConnected(t, srv.Path())
	select {
	case err := <-exited:
		t.Fatalf("child exited before Allow: %v, %q", err, out)
	default:
	}
	srv.Allow(cmd.Process.Pid)
	if err := waitExit(t, exited); err != nil {
		t.Fatalf("child: %v, output %q", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != len(socks) {
		t.Fatalf("child got %d sockets, want %d: %q", len(lines), len(socks), out)
	}
	for i, line := range lines {
		e := entries[i]
		want := fmt.Sprintf("OK %d %s %s", socks[i].Inode(), dash(e.Namespace), dash(e.Interface))
		if line != want {
			t.Fatalf("socket %d: child says %q, want %q", i, line, want)
		}
	}
	srv.noErrors(t)
}

// A record's names carry a one-byte length, and HAProxy keeps at most 15
// bytes of an interface name: longer names are refused up front instead of
// corrupting every later record.
func TestGetsocksRefusesLongNames(t *testing.T) {
	socks := listenN(t, 2)
	for _, mod := range []func(*fdpass.GetsocksEntry){
		func(e *fdpass.GetsocksEntry) { e.Namespace = strings.Repeat("n", 256) },
		func(e *fdpass.GetsocksEntry) { e.Interface = strings.Repeat("i", 16) },
	} {
		entries := entriesFor(socks)
		mod(&entries[0])
		path := filepath.Join(shortTempDir(t), "gs.sock")
		if srv, err := fdpass.NewGetsocksServer(path, entries, func(error) {}); err == nil {
			srv.Close()
			t.Errorf("NewGetsocksServer accepted namespace %d bytes, interface %d bytes", len(entries[0].Namespace), len(entries[0].Interface))
		}
	}
}
