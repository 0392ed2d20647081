package supervisor

// The fake proxy's blocking server (FAKE_MODE blocking) and its own socket
// (FAKE_MODE bindown): a server that made its listening sockets blocking and
// calls accept(2) in blocking mode. If anyone sets O_NONBLOCK on the shared
// open file description under it, its next accept fails with EAGAIN and it
// exits 6, as such servers do.

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ownAddrFile, in FAKE_DIR, holds the address of the socket a bindown fake
// bound itself and the flags (F_GETFL, octal) it left on it: "ADDR FLAGS".
const ownAddrFile = "own-addr"

// serveBlocking clears O_NONBLOCK on each fd (owned by the fake from now
// on) and accepts on it with blocking accept(2) on a goroutine of its own,
// answering each connection with one HTTP response.
func serveBlocking(gen string, fds []int, logf func(string, ...any)) error {
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, false); err != nil {
			return fmt.Errorf("fd %d: clear O_NONBLOCK: %w", fd, err)
		}
	}
	for _, fd := range fds {
		go acceptBlocking(gen, fd, logf)
	}
	return nil
}

// acceptBlocking is the blocking accept loop; an accept error other than
// EINTR ends the process with exit status 6.
func acceptBlocking(gen string, fd int, logf func(string, ...any)) {
	for {
		c, _, err := unix.Accept4(fd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
			continue
		}
		if err != nil {
			logf("accept on fd %d: %v", fd, err)
			os.Exit(6)
		}
		answerBlocking(gen, c)
		unix.Close(c)
	}
}

// answerBlocking reads a request head (at most 8 KiB) and answers it as
// serveListeners' handler does.
func answerBlocking(gen string, c int) {
	var req []byte
	buf := make([]byte, 1024)
	for len(req) < 8<<10 && !bytes.Contains(req, []byte("\r\n\r\n")) {
		n, err := unix.Read(c, buf)
		if err != nil || n <= 0 {
			return
		}
		req = append(req, buf[:n]...)
	}
	var lim unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	body := "generation " + gen + "\n"
	resp := fmt.Sprintf("HTTP/1.1 200 OK\r\nX-Baton-Gen: %s\r\nX-Pid: %d\r\nX-Nofile: %d:%d\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		gen, os.Getpid(), lim.Cur, lim.Max, len(body), body)
	_, _ = unix.Write(c, []byte(resp))
}

// bindOwn binds a TCP socket on 127.0.0.1 itself (one baton did not hand
// over), serves it (blocking or through Go's runtime) and writes its
// address and flags to FAKE_DIR/own-addr.
func bindOwn(gen, dir string, blocking bool, srv *http.Server, logf func(string, ...any)) error {
	var addr string
	var flags int
	if blocking {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(fd, 64); err != nil {
			return err
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			return err
		}
		addr = "127.0.0.1:" + strconv.Itoa(sa.(*unix.SockaddrInet4).Port)
		if err := serveBlocking(gen, []int{fd}, logf); err != nil {
			return err
		}
		if flags, err = unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil {
			return err
		}
	} else {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = ln.Addr().String()
		raw, err := ln.(*net.TCPListener).SyscallConn()
		if err != nil {
			return err
		}
		var ferr error
		if err := raw.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil {
			return err
		}
		if ferr != nil {
			return ferr
		}
		go func() { _ = srv.Serve(ln) }()
	}
	return os.WriteFile(filepath.Join(dir, ownAddrFile), []byte(fmt.Sprintf("%s %o", addr, flags)), 0o644)
}
