package fdpass_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

// These tests run the real HAProxy (2.6 on Debian 12) against fdpass's
// _getsocks server: every claim fdpass makes about HAProxy is checked here
// at kernel level (sock_diag, /proc/PID/fd, fdinfo flags).

func requireHAProxy(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("haproxy")
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("haproxy not found and CI is set: %v", err)
	}
	t.Skipf("haproxy not installed: %v", err)
	return ""
}

// haproxyConfig returns a config with one frontend per bind line, each
// answering 200 "ok" itself. The resolvers and httpclient lines keep 2.6
// from depending on the host's resolv.conf and CA bundle.
func haproxyConfig(binds ...string) string {
	var b strings.Builder
	b.WriteString(`global
    httpclient.ssl.verify none

resolvers default
    nameserver local 127.0.0.1:53

defaults
    mode http
    timeout connect 1s
    timeout client 2s
    timeout server 2s
`)
	for i, bind := range binds {
		fmt.Fprintf(&b, "\nfrontend f%d\n    bind %s\n    http-request return status 200 content-type text/plain string ok\n", i, bind)
	}
	return b.String()
}

type haproxyProc struct {
	cmd     *exec.Cmd
	log     string        // stdout and stderr
	exited  chan struct{} // closed once the master exited and was reaped
	exitErr error         // valid after exited is closed
	worker  int
	shown   bool // the output is already in the test log
}

func (h *haproxyProc) output() string {
	b, _ := os.ReadFile(h.log)
	return string(b)
}

// startHAProxy runs `haproxy -W -db -x SOCK -dR -f CFG` in its own process
// group, allows its pid on srv right after Start, and kills the group (and
// the worker by pid) at cleanup.
func startHAProxy(t *testing.T, bin, dir, cfg string, srv *testServer) *haproxyProc {
	t.Helper()
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	h := &haproxyProc{log: filepath.Join(dir, "haproxy.log"), exited: make(chan struct{})}
	logf, err := os.Create(h.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// A file, not a pipe: Wait then returns when the master exits even if
	// a worker still holds the output.
	h.cmd = exec.Command(bin, "-W", "-db", "-x", srv.Path(), "-dR", "-f", cfgPath)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	srv.Allow(h.cmd.Process.Pid)
	go func() {
		defer close(h.exited)
		h.exitErr = h.cmd.Wait()
	}()
	t.Cleanup(func() {
		pid := h.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		if h.worker > 0 {
			_ = syscall.Kill(h.worker, syscall.SIGKILL)
		}
		select {
		case <-h.exited:
		case <-time.After(testTimeout):
			t.Errorf("haproxy %d not reaped %v after SIGKILL", pid, testTimeout)
		}
		if t.Failed() && !h.shown {
			t.Logf("haproxy output:\n%s", h.output())
		}
	})
	return h
}

// alive fails the test when haproxy exited.
func (h *haproxyProc) alive(t *testing.T) {
	t.Helper()
	select {
	case <-h.exited:
		h.shown = true
		t.Fatalf("haproxy exited (%v):\n%s", h.exitErr, h.output())
	default:
	}
}

// children lists the pids of pid's children, from /proc/PID/task/*/children.
func children(pid int) []int {
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var out []int
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// findWorker waits for the master's child that holds every inode.
func (h *haproxyProc) findWorker(t *testing.T, inodes []uint64) int {
	t.Helper()
	eventually(t, func() error {
		h.alive(t)
		kids := children(h.cmd.Process.Pid)
		for _, k := range kids {
			held := procSocketInodes(k)
			ok := true
			for _, ino := range inodes {
				if len(held[ino]) == 0 {
					ok = false
				}
			}
			if ok {
				h.worker = k
				return nil
			}
		}
		return fmt.Errorf("no child of haproxy master %d (children %v) holds inodes %v", h.cmd.Process.Pid, kids, inodes)
	})
	return h.worker
}

// httpGet is curl: one GET on a fresh connection, closed before it
// returns (no transport goroutine or descriptor outlives it, which keeps the
// descriptor counts of later tests exact).
func httpGet(addr string) (int, string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return 0, "", err
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitHTTP200 waits until GET http://addr/ answers 200 "ok".
func waitHTTP200(t *testing.T, h *haproxyProc, addr string) {
	t.Helper()
	eventually(t, func() error {
		h.alive(t)
		code, body, err := httpGet(addr)
		if err != nil {
			return err
		}
		if code != 200 || body != "ok" {
			return fmt.Errorf("GET %s: %d %q", addr, code, body)
		}
		return nil
	})
}

// listeningByAddr indexes sock_diag's LISTEN sockets by address.
func listeningByAddr(t *testing.T) map[netip.AddrPort][]fdpass.ListenInfo {
	t.Helper()
	all, err := fdpass.ListeningTCP()
	if err != nil {
		t.Fatal(err)
	}
	out := map[netip.AddrPort][]fdpass.ListenInfo{}
	for _, li := range all {
		out[li.Addr] = append(out[li.Addr], li)
	}
	return out
}

// checkOneSocket: exactly one LISTEN socket on s's address, ours, with the
// backlog we gave it (nobody called listen() on it again).
func checkOneSocket(t *testing.T, byAddr map[netip.AddrPort][]fdpass.ListenInfo, s *fdpass.Socket) {
	t.Helper()
	got := byAddr[netip.MustParseAddrPort(s.Addr())]
	if len(got) != 1 || got[0].Inode != s.Inode() || int(got[0].Backlog) != s.Spec().Backlog {
		t.Errorf("%s: LISTEN sockets %+v, want exactly ours (inode %d, backlog %d)", s.Addr(), got, s.Inode(), s.Spec().Backlog)
	}
}

// listenBacklog creates n listeners on 127.0.0.1 with kernel-chosen ports
// and a backlog of 100 (HAProxy would use another if it re-listened).
func listenBacklog(t *testing.T, n int) []*fdpass.Socket {
	t.Helper()
	socks := make([]*fdpass.Socket, n)
	sp := mustSpec(t, "tcp://127.0.0.1:0?backlog=100")
	for i := range socks {
		s, err := fdpass.Listen(sp)
		if err != nil {
			t.Fatal(err)
		}
		socks[i] = s
	}
	t.Cleanup(func() {
		for _, s := range socks {
			s.Close()
		}
	})
	return socks
}

// fdinfoFlags returns the flags line of /proc/PID/fdinfo/FD (octal).
func fdinfoFlags(t *testing.T, pid, fd int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n)
		}
	}
	t.Fatalf("no flags in /proc/%d/fdinfo/%d", pid, fd)
	return 0
}

// HAProxy takes 3 of 300 passed sockets through _getsocks (one from each
// batch, one with an "interface lo" record), serves on them, and shares
// them: one LISTEN socket per address, ours, held by the worker; the other
// 297 are not kept by haproxy.
func TestHAProxyAdoptsPassedSockets(t *testing.T) {
	bin := requireHAProxy(t)
	socks := listenBacklog(t, 300)
	entries := make([]fdpass.GetsocksEntry, len(socks))
	for i, s := range socks {
		entries[i] = fdpass.GetsocksEntry{Fd: s.Fd()}
	}
	used := []int{0, 260, 299} // first batch, second batch, last
	entries[260].Interface = "lo"
	srv := startGetsocks(t, entries)
	dir := shortTempDir(t)
	cfg := haproxyConfig(
		socks[0].Addr(),
		socks[260].Addr()+" interface lo",
		socks[299].Addr(),
	)
	h := startHAProxy(t, bin, dir, cfg, srv)

	for _, i := range used {
		waitHTTP200(t, h, socks[i].Addr())
	}
	var usedInodes []uint64
	isUsed := map[uint64]bool{}
	for _, i := range used {
		usedInodes = append(usedInodes, socks[i].Inode())
		isUsed[socks[i].Inode()] = true
	}
	worker := h.findWorker(t, usedInodes)
	master := h.cmd.Process.Pid

	byAddr := listeningByAddr(t)
	for _, s := range socks {
		checkOneSocket(t, byAddr, s)
	}

	// The unused sockets were closed by haproxy (sock_drop_unused_old_sockets)
	// before the worker was forked: neither process holds one.
	for _, pid := range []int{master, worker} {
		held := procSocketInodes(pid)
		for i, s := range socks {
			if !isUsed[s.Inode()] && len(held[s.Inode()]) > 0 {
				t.Errorf("haproxy pid %d holds unused socket %d (%s) as fd %v", pid, i, s.Addr(), held[s.Inode()])
			}
		}
	}
	// The master re-executes itself into wait mode after forking the
	// worker and closes its listeners: then only the worker holds them.
	eventually(t, func() error {
		held := procSocketInodes(master)
		for _, s := range socks {
			if len(held[s.Inode()]) > 0 {
				return fmt.Errorf("haproxy master %d still holds %s", master, s.Addr())
			}
		}
		return nil
	})
	// O_NONBLOCK stays set on the shared open file description, as seen by
	// us and by the worker.
	wfds := procSocketInodes(worker)
	for _, i := range used {
		s := socks[i]
		if !isNonblock(t, s.Fd()) {
			t.Errorf("%s: O_NONBLOCK cleared on the shared socket", s.Addr())
		}
		fds := wfds[s.Inode()]
		if len(fds) != 1 {
			t.Errorf("worker holds %s as fds %v, want one", s.Addr(), fds)
			continue
		}
		if fl := fdinfoFlags(t, worker, fds[0]); fl&unix.O_NONBLOCK == 0 {
			t.Errorf("worker fd %d (%s): flags %o without O_NONBLOCK", fds[0], s.Addr(), fl)
		}
	}
	srv.noErrors(t)
	h.alive(t)
}

// A bind line on an address baton did not pass: HAProxy makes that socket
// itself (expected: fdpass only passes declared listeners), and the passed
// one is still shared, not duplicated.
func TestHAProxyBindsUnpassedAddressItself(t *testing.T) {
	bin := requireHAProxy(t)
	socks := listenBacklog(t, 2)
	free := listen(t, "tcp://127.0.0.1:0")
	freeAddr := free.Addr()
	if err := free.Close(); err != nil {
		t.Fatal(err)
	}
	srv := startGetsocks(t, []fdpass.GetsocksEntry{{Fd: socks[0].Fd()}, {Fd: socks[1].Fd()}})
	h := startHAProxy(t, bin, shortTempDir(t), haproxyConfig(socks[0].Addr(), freeAddr), srv)
	waitHTTP200(t, h, socks[0].Addr())
	waitHTTP200(t, h, freeAddr)
	worker := h.findWorker(t, []uint64{socks[0].Inode()})

	byAddr := listeningByAddr(t)
	checkOneSocket(t, byAddr, socks[0])
	checkOneSocket(t, byAddr, socks[1])
	own := byAddr[netip.MustParseAddrPort(freeAddr)]
	if len(own) != 1 {
		t.Fatalf("%s: %d LISTEN sockets, want the one haproxy made", freeAddr, len(own))
	}
	if own[0].Inode == socks[0].Inode() || own[0].Inode == socks[1].Inode() {
		t.Errorf("%s: inode %d is one of ours", freeAddr, own[0].Inode)
	}
	eventually(t, func() error {
		if len(procSocketInodes(worker)[own[0].Inode]) == 0 {
			return fmt.Errorf("worker %d does not hold %s (inode %d)", worker, freeAddr, own[0].Inode)
		}
		return nil
	})
	srv.noErrors(t)
}

// With -dR, a bind line that does not match the passed socket on its
// address (`transparent` on the line, or a record saying interface "lo"
// for a line without `interface lo`) makes HAProxy try its own socket,
// which fails with "Address already in use" (no SO_REUSEPORT anywhere):
// haproxy exits non-zero instead of silently running a second socket, and
// our sockets are untouched.
func TestHAProxyMismatchFailsLoudly(t *testing.T) {
	bin := requireHAProxy(t)
	for _, tc := range []struct {
		name, bindOpts, iface string
	}{
		{"transparent", " transparent", ""},
		{"interface record", "", "lo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			socks := listenBacklog(t, 2)
			srv := startGetsocks(t, []fdpass.GetsocksEntry{
				{Fd: socks[0].Fd()},
				{Fd: socks[1].Fd(), Interface: tc.iface},
			})
			h := startHAProxy(t, bin, shortTempDir(t),
				haproxyConfig(socks[0].Addr(), socks[1].Addr()+tc.bindOpts), srv)
			select {
			case <-h.exited:
			case <-time.After(testTimeout):
				t.Fatalf("haproxy still running %v with a mismatched bind:\n%s", testTimeout, h.output())
			}
			var ee *exec.ExitError
			if !errors.As(h.exitErr, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("haproxy exit: %v, want a non-zero status", h.exitErr)
			}
			out := h.output()
			if !strings.Contains(out, "Address already in use") || !strings.Contains(out, socks[1].Addr()) {
				t.Errorf("haproxy output does not report the address in use:\n%s", out)
			}
			byAddr := listeningByAddr(t)
			checkOneSocket(t, byAddr, socks[0])
			checkOneSocket(t, byAddr, socks[1])
			// Still listening (nobody shut them down): connections queue.
			for _, s := range socks {
				c, err := net.DialTimeout("tcp", s.Addr(), testTimeout)
				if err != nil {
					t.Errorf("%s after haproxy failed: %v", s.Addr(), err)
					continue
				}
				c.Close()
			}
			srv.noErrors(t)
		})
	}
}
