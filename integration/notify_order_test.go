package integration

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/batontest"
)

// TestSdNotifyOrder checks README's systemd notifications with a real
// NOTIFY_SOCKET: READY=1 once the first generation serves; for every
// reload RELOADING=1 (with MONOTONIC_USEC) and then READY=1 with the
// generation now serving, or with the failure; STOPPING=1 on stop. The
// proxy's processes never see NOTIFY_SOCKET.
func TestSdNotifyOrder(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	sock := newNotifySocket(t)
	port := batontest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
	write := func(text string) {
		t.Helper()
		if err := batontest.WriteFileAtomic(cfg, []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	write(batontest.HAProxyConfig(port, 1, nil, nil))
	b := batontest.StartBaton(t, []string{"-l", "tcp://" + addr, "--drain-timeout", "30s", "--", haproxy, "-f", cfg},
		batontest.StartOptions{Shell: "export NOTIFY_SOCKET=" + sock.path})
	st, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	gen1, pid1 := st.Active()
	sock.waitFor(t, 1)

	// What baton's children got: no NOTIFY_SOCKET, while baton has it.
	if env := procEnviron(t, b.Pid()); env["NOTIFY_SOCKET"] != sock.path {
		t.Fatalf("baton's own NOTIFY_SOCKET is %q, want %q (the test did not set it up)", env["NOTIFY_SOCKET"], sock.path)
	}
	children := batontest.Descendants(b.Pid())
	if len(children) < 2 {
		t.Fatalf("baton's descendants %v: want haproxy's master and worker", children)
	}
	for _, pid := range children {
		if v, ok := procEnviron(t, pid)["NOTIFY_SOCKET"]; ok {
			t.Errorf("pid %d (%s) has NOTIFY_SOCKET=%s", pid, procComm(pid), v)
		}
	}

	reload := func(v int, wantCode int) (gen, pid int) {
		t.Helper()
		res := b.CLI("reload", "--json")
		if res.Code != wantCode {
			t.Fatalf("reload to version %d: exit %d, want %d: %s", v, res.Code, wantCode, res.Stderr)
		}
		st, err := b.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Active()
	}
	write(batontest.HAProxyConfig(port, 2, nil, nil))
	gen2, pid2 := reload(2, 0)
	write(batontest.HAProxyConfig(port, 3, nil, nil) + "    bogus_keyword on\n")
	reload(3, 1)
	write(batontest.HAProxyConfig(port, 4, nil, nil))
	gen4, pid4 := reload(4, 0)
	for _, pid := range batontest.Descendants(b.Pid()) {
		if v, ok := procEnviron(t, pid)["NOTIFY_SOCKET"]; ok {
			t.Errorf("pid %d (%s) after the reloads has NOTIFY_SOCKET=%s", pid, procComm(pid), v)
		}
	}
	if res := b.CLI("stop"); res.Code != 0 {
		t.Fatalf("baton stop: exit %d: %s", res.Code, res.Stderr)
	}
	if code, err := b.ExitCode(30 * time.Second); code != 0 || err != nil {
		t.Fatalf("baton after stop: exit %d, %v", code, err)
	}
	msgs := sock.close()
	for i, m := range msgs {
		t.Logf("notify %d: %q", i+1, m.text)
	}

	failedGen := gen2 + 1
	want := []*regexp.Regexp{
		regexp.MustCompile(fmt.Sprintf(`^READY=1\nSTATUS=serving generation %d \(pid %d\)$`, gen1, pid1)),
		regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=(\d+)\nSTATUS=reloading: .*$`),
		regexp.MustCompile(fmt.Sprintf(`^READY=1\nSTATUS=serving generation %d \(pid %d\)$`, gen2, pid2)),
		regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=(\d+)\nSTATUS=reloading: .*$`),
		regexp.MustCompile(fmt.Sprintf(`^READY=1\nSTATUS=reload to generation %d failed; serving generation %d \(pid %d\)$`, failedGen, gen2, pid2)),
		regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=(\d+)\nSTATUS=reloading: .*$`),
		regexp.MustCompile(fmt.Sprintf(`^READY=1\nSTATUS=serving generation %d \(pid %d\)$`, gen4, pid4)),
		regexp.MustCompile(`^STOPPING=1\n`),
	}
	if len(msgs) != len(want) {
		t.Errorf("%d notifications, want %d", len(msgs), len(want))
	}
	var lastUsec int64
	for i := range min(len(msgs), len(want)) {
		m := want[i].FindStringSubmatch(msgs[i].text)
		if m == nil {
			t.Errorf("notification %d is %q, want %s", i+1, msgs[i].text, want[i])
			continue
		}
		if len(m) < 2 {
			continue
		}
		usec, _ := strconv.ParseInt(m[1], 10, 64)
		// MONOTONIC_USEC is CLOCK_MONOTONIC when the reload began: between
		// the previous reload's and the datagram's arrival.
		if usec <= lastUsec || usec > msgs[i].monoUsec {
			t.Errorf("notification %d: MONOTONIC_USEC=%d, want after %d and not after its arrival (%d)", i+1, usec, lastUsec, msgs[i].monoUsec)
		}
		lastUsec = usec
	}
}

// notifySocket is a service manager's NOTIFY_SOCKET: a unixgram socket
// that records every datagram with its CLOCK_MONOTONIC arrival.
type notifySocket struct {
	path string
	conn *net.UnixConn
	done chan struct{}
	mu   sync.Mutex
	msgs []notifyMsg
}

type notifyMsg struct {
	text     string
	monoUsec int64
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	dir, err := os.MkdirTemp("", "n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &notifySocket{path: filepath.Join(dir, "s"), done: make(chan struct{})}
	s.conn, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	go s.read()
	t.Cleanup(func() { s.close() })
	return s
}

func (s *notifySocket) read() {
	defer close(s.done)
	buf := make([]byte, 64<<10)
	for {
		n, _, err := s.conn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		var ts unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		s.mu.Lock()
		s.msgs = append(s.msgs, notifyMsg{text: string(bytes.TrimRight(buf[:n], "\n")), monoUsec: ts.Nano() / 1000})
		s.mu.Unlock()
	}
}

// waitFor waits until at least n datagrams arrived.
func (s *notifySocket) waitFor(t *testing.T, n int) {
	t.Helper()
	batontest.Eventually(t, 10*time.Second, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.msgs) < n {
			return fmt.Errorf("%d notifications, waiting for %d: %+v", len(s.msgs), n, s.msgs)
		}
		return nil
	})
}

// close stops reading and returns every datagram received.
func (s *notifySocket) close() []notifyMsg {
	_ = s.conn.Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]notifyMsg(nil), s.msgs...)
}

// procEnviron reads /proc/PID/environ; a process that is gone (an old
// generation exiting meanwhile) has none.
func procEnviron(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		// ESRCH: a zombie (exited, not yet reaped) has no environment.
		if batontest.Alive(pid) && !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("environment of pid %d: %v", pid, err)
		}
		return nil
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}
