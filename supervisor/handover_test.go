package supervisor

import (
	"encoding/binary"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// unixPair returns both ends of a SOCK_STREAM socketpair as UnixConns.
func unixPair(t *testing.T) (a, b *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b = conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func statInode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestHandoverRoundTrip sends a state and 300 descriptors (two batches: 252
// then 48) and gets the same state and the same open files back, then the
// receiver's "ready PID".
func TestHandoverRoundTrip(t *testing.T) {
	old, nu := unixPair(t)
	const n = 300
	var fds []int
	for range n / 2 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		fds = append(fds, p[0], p[1])
	}
	defer closeFds(fds)
	h := Handover{
		BatonPid: 4242,
		Machine:  lifecycle.MachineState{LastGen: 7},
		Listeners: []ListenerHandover{
			{Spec: "tcp://127.0.0.1:8080", Inode: 99, Users: []lifecycle.Gen{6, 7}, Fd: 0},
		},
		Gens:      []GenHandover{{Gen: 7, Pid: 1234, StartTicks: 5, Dir: "/run/g7", Pidfd: 1, Output: -1}},
		LastGood:  map[string]string{"/etc/haproxy/haproxy.cfg": "/run/g7/haproxy.cfg"},
		ControlFd: 2, LockFd: 3, InitFd: -1, MetricsFd: -1,
	}

	type result struct {
		h   Handover
		fds []int
		err error
	}
	got := make(chan result, 1)
	go func() {
		rh, rfds, err := ReceiveHandover(nu, 5*time.Second)
		if err == nil {
			err = AckHandover(nu, 777)
		}
		got <- result{rh, rfds, err}
	}()
	pid, err := sendHandover(old, h, fds, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer closeFds(r.fds)
	if pid != 777 {
		t.Errorf("sendHandover returned pid %d, want the receiver's 777", pid)
	}
	if len(r.fds) != n || r.h.NumFds != n {
		t.Fatalf("received %d descriptors (NumFds %d), want %d", len(r.fds), r.h.NumFds, n)
	}
	for i := range fds {
		if a, b := statInode(t, fds[i]), statInode(t, r.fds[i]); a != b {
			t.Fatalf("descriptor %d: inode %d sent, %d received (order lost)", i, a, b)
		}
	}
	if r.h.BatonPid != 4242 || r.h.Machine.LastGen != 7 || len(r.h.Gens) != 1 || r.h.Gens[0].Pid != 1234 ||
		r.h.Listeners[0].Spec != "tcp://127.0.0.1:8080" || len(r.h.Listeners[0].Users) != 2 ||
		r.h.LastGood["/etc/haproxy/haproxy.cfg"] != "/run/g7/haproxy.cfg" || r.h.InitFd != -1 {
		t.Errorf("state changed on the way: %+v", r.h)
	}
	if fd := fdAt(r.fds, 2); fd < 0 || fdAt(r.fds, 2) != -1 || fdAt(r.fds, -1) != -1 || fdAt(r.fds, n) != -1 {
		t.Error("fdAt does not take each descriptor once")
	} else {
		unix.Close(fd)
	}
}

// TestReceiveHandoverRefusesBadInput: a truncated state, an oversized one,
// bad JSON and missing descriptors are errors that leave no descriptor
// open.
func TestReceiveHandoverRefusesBadInput(t *testing.T) {
	frame := func(body string) []byte {
		var n [4]byte
		binary.LittleEndian.PutUint32(n[:], uint32(len(body)))
		return append(n[:], body...)
	}
	cases := map[string]struct {
		data  []byte
		close bool
		want  string
	}{
		"truncated":              {data: frame(`{"baton_pid":1}`)[:8], close: true, want: "read state"},
		"oversized":              {data: []byte{0xff, 0xff, 0xff, 0x7f}, want: "too large"},
		"bad json":               {data: frame(`{"baton_pid":`), want: "decode state"},
		"missing fds":            {data: frame(`{"num_fds":3}`), close: true, want: "receive descriptors (0 of 3)"},
		"announced but not sent": {data: []byte{0xff, 0xff, 0xff, 0x00, '{'}, close: true, want: "read state: unexpected EOF"},
		"too many fds":           {data: frame(`{"num_fds":100000}`), want: "100000 descriptors announced"},
		"index out of range": {data: frame(`{"num_fds":0,"control_fd":5,"lock_fd":-1,"init_fd":-1,"metrics_fd":-1}`),
			want: "control socket: descriptor 5 of 0"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			a, b := unixPair(t)
			if _, err := a.Write(c.data); err != nil {
				t.Fatal(err)
			}
			if c.close {
				a.CloseWrite()
			}
			_, fds, err := ReceiveHandover(b, 2*time.Second)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one saying %q", err, c.want)
			}
			if fds != nil {
				t.Errorf("descriptors returned with an error: %v", fds)
			}
		})
	}
}

// TestSendHandoverNeedsReady: a receiver that goes away without saying
// "ready PID" fails the handover with the reason.
func TestSendHandoverNeedsReady(t *testing.T) {
	old, nu := unixPair(t)
	go func() {
		_, fds, _ := ReceiveHandover(nu, 5*time.Second)
		closeFds(fds)
		nu.Write([]byte("exiting\n"))
		nu.Close()
	}()
	_, err := sendHandover(old, Handover{}, nil, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), `new baton said "exiting\n"`) {
		t.Fatalf("error %v, want the receiver's words", err)
	}
}

// TestOpenPidfdChecksStartTime: the recorded start time must match (a pid
// reused by another process is refused); a pidfd sees the exit.
func TestOpenPidfdChecksStartTime(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	defer func() { cmd.Process.Kill(); <-done }()
	pid := cmd.Process.Pid
	ticks, err := proc.StartTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	if fd, err := proc.OpenPidfd(pid, ticks+1); err == nil {
		unix.Close(fd)
		t.Fatal("proc.OpenPidfd accepted another start time")
	} else if !strings.Contains(err.Error(), "another process") {
		t.Errorf("error %v, want it to say the pid is another process", err)
	}
	fd, err := proc.OpenPidfd(pid, ticks)
	if err != nil {
		t.Fatal(err)
	}
	p := proc.Adopt(proc.Handover{Pid: pid, Pidfd: fd, Output: -1}, nil)
	cmd.Process.Kill()
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("adopted process: exit not seen through its pidfd")
	}
	if st := p.Status(); st.Code != proc.StatusUnknown {
		t.Errorf("adopted process exit status %d, want proc.StatusUnknown", st.Code)
	}
}

// TestTakeFdFindsTheSocket: proc.FindSocketFd finds a listening socket by inode
// in a process's fd table and proc.TakeFd duplicates that very socket.
func TestTakeFdFindsTheSocket(t *testing.T) {
	sp, err := fdpass.ParseSpec("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := fdpass.Listen(sp)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	num := proc.FindSocketFd(os.Getpid(), s.Inode())
	if num != s.Fd() {
		t.Fatalf("proc.FindSocketFd = %d, want %d", num, s.Fd())
	}
	if proc.FindSocketFd(os.Getpid(), 1) != -1 {
		t.Error("proc.FindSocketFd found inode 1")
	}
	pidfd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	fd, err := proc.TakeFd(pidfd, num)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if statInode(t, fd) != s.Inode() {
		t.Errorf("proc.TakeFd: inode %d, want %d", statInode(t, fd), s.Inode())
	}
	if flags, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); flags&unix.FD_CLOEXEC == 0 {
		t.Error("proc.TakeFd's descriptor is not close-on-exec")
	}
}

// TestAdoptedReleaseWakesWatcher: releasing an adopted process that still
// runs ends its watcher at once (it sleeps in poll without a timeout).
func TestAdoptedReleaseWakesWatcher(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	ticks, err := proc.StartTicks(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := proc.OpenPidfd(cmd.Process.Pid, ticks)
	if err != nil {
		t.Fatal(err)
	}
	p := proc.Adopt(proc.Handover{Pid: cmd.Process.Pid, Pidfd: fd, Output: -1}, nil)
	released := make(chan struct{})
	go func() { p.Release(); close(released) }()
	select {
	case <-released:
	case <-time.After(5 * time.Second):
		t.Fatal("Release of a live adopted process did not return")
	}
	if err := p.Signal(unix.Signal(0)); err != proc.ErrDone {
		t.Errorf("signal after release: %v, want proc.ErrDone", err)
	}
}
