package fdpass_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

func TestBatches(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want [][2]int
	}{
		{0, nil},
		{1, [][2]int{{0, 1}}},
		{251, [][2]int{{0, 251}}},
		{252, [][2]int{{0, 252}}},
		{253, [][2]int{{0, 252}, {252, 253}}},
		{300, [][2]int{{0, 252}, {252, 300}}},
		{504, [][2]int{{0, 252}, {252, 504}}},
		{505, [][2]int{{0, 252}, {252, 504}, {504, 505}}},
		{1000, [][2]int{{0, 252}, {252, 504}, {504, 756}, {756, 1000}}},
	} {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			got := fdpass.Batches(tc.n)
			if len(got) != len(tc.want) || (len(got) > 0 && !reflect.DeepEqual(got, tc.want)) {
				t.Fatalf("Batches(%d) = %v, want %v", tc.n, got, tc.want)
			}
		})
	}
	// Properties for every n: contiguous, complete, never more than
	// MaxBatch, and every batch but the last full (HAProxy's receiver
	// cannot take a batch larger than its first).
	for n := 0; n <= 3*fdpass.MaxBatch+1; n++ {
		b := fdpass.Batches(n)
		next := 0
		for i, r := range b {
			size := r[1] - r[0]
			if r[0] != next || size <= 0 || size > fdpass.MaxBatch {
				t.Fatalf("Batches(%d)[%d] = %v after %d", n, i, r, next)
			}
			if i < len(b)-1 && size != fdpass.MaxBatch {
				t.Fatalf("Batches(%d): batch %d has %d items, not full", n, i, size)
			}
			if i > 0 && size > b[0][1]-b[0][0] {
				t.Fatalf("Batches(%d): batch %d larger than the first", n, i)
			}
			next = r[1]
		}
		if next != n {
			t.Fatalf("Batches(%d) covers %d items", n, next)
		}
	}
	if fdpass.MaxBatch != 252 {
		t.Errorf("MaxBatch = %d, want 252 (HAProxy's MAX_SEND_FD; the kernel's SCM_MAX_FD is 253)", fdpass.MaxBatch)
	}
}

// distinctSockets opens n unix datagram sockets: each has its own inode,
// so the order in which descriptors arrive can be checked.
func distinctSockets(t *testing.T, n int) ([]int, []uint64) {
	t.Helper()
	fds := make([]int, n)
	inodes := make([]uint64, n)
	for i := range fds {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds[i], inodes[i] = fd, fdInode(t, fd)
	}
	t.Cleanup(func() { closeFds(fds) })
	return fds, inodes
}

func TestSendRecv(t *testing.T) {
	for _, n := range []int{1, 2, 100, 252} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			a, b := socketpair(t)
			fds, inodes := distinctSockets(t, n)
			base := fdCount(t)
			data := []byte(strings.Repeat("r", 3*n))
			if err := fdpass.Send(a, data, fds); err != nil {
				t.Fatalf("Send: %v", err)
			}
			buf := make([]byte, 4*n)
			got, rfds, err := fdpass.Recv(b, buf, fdpass.MaxBatch)
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			if got != len(data) || string(buf[:got]) != string(data) {
				t.Errorf("Recv data %q, want %q", buf[:got], data)
			}
			if len(rfds) != n {
				t.Fatalf("Recv got %d descriptors, want %d", len(rfds), n)
			}
			for i, fd := range rfds {
				if ino := fdInode(t, fd); ino != inodes[i] {
					t.Errorf("descriptor %d: inode %d, want %d (order kept)", i, ino, inodes[i])
				}
				if !isCloexec(t, fd) {
					t.Errorf("received descriptor %d is not close-on-exec", fd)
				}
			}
			if fdCount(t) != base+n {
				t.Errorf("%d descriptors more after Recv, want %d", fdCount(t)-base, n)
			}
			closeFds(rfds)
			checkFdCount(t, base, "after closing received descriptors")
		})
	}
}

func TestSendRecvNoFds(t *testing.T) {
	a, b := socketpair(t)
	if err := fdpass.Send(a, []byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	n, fds, err := fdpass.Recv(b, buf, fdpass.MaxBatch)
	if err != nil || n != 5 || string(buf[:n]) != "hello" || len(fds) != 0 {
		t.Fatalf("Recv = %d %v %v (%q), want 5 bytes and no descriptors", n, fds, err, buf[:n])
	}
}

func TestRecvTooManyFds(t *testing.T) {
	for _, tc := range []struct {
		name          string
		sent, maxFds  int
		wantTruncated bool
	}{
		// The control buffer for 3 holds 4 (CMSG alignment); 10 do not fit:
		// the kernel drops the rest and flags MSG_CTRUNC.
		{"truncated", 10, 3, true},
		{"252 into 100", 252, 100, true},
		{"maxFds 0", 5, 0, true},
		// 2 fit in the aligned buffer for 1: no MSG_CTRUNC, but more than
		// asked for.
		{"over max", 2, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := socketpair(t)
			fds, _ := distinctSockets(t, tc.sent)
			marker, _ := distinctSockets(t, 1)
			base := fdCount(t)
			if err := fdpass.Send(a, []byte("batch"), fds); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			n, got, err := fdpass.Recv(b, buf, tc.maxFds)
			if err == nil {
				closeFds(got)
				t.Fatalf("Recv of %d descriptors with maxFds %d succeeded (%d)", tc.sent, tc.maxFds, len(got))
			}
			if n != 0 || got != nil {
				t.Errorf("Recv returned %d bytes and %v with its error", n, got)
			}
			if errors.Is(err, fdpass.ErrTruncated) != tc.wantTruncated {
				t.Errorf("error %v: ErrTruncated = %v, want %v", err, !tc.wantTruncated, tc.wantTruncated)
			}
			checkFdCount(t, base, "failed Recv")
			// The stream is still usable and nothing of the failed message
			// is left in it.
			if err := fdpass.Send(a, []byte("next"), marker); err != nil {
				t.Fatal(err)
			}
			n, got, err = fdpass.Recv(b, buf, fdpass.MaxBatch)
			if err != nil || string(buf[:n]) != "next" || len(got) != 1 {
				t.Fatalf("next Recv = %q %v %v", buf[:n], got, err)
			}
			closeFds(got)
		})
	}
}

// The kernel takes 253 descriptors, but HAProxy and musl stop at 252:
// Send refuses, and sends nothing.
func TestSendRefusesMoreThanMaxBatch(t *testing.T) {
	a, b := socketpair(t)
	fds, _ := distinctSockets(t, fdpass.MaxBatch+1)
	err := fdpass.Send(a, []byte("too many"), fds)
	if err == nil {
		t.Fatal("Send of 253 descriptors succeeded")
	}
	if !strings.Contains(err.Error(), "253") {
		t.Errorf("error %q does not give the count", err)
	}
	if err := fdpass.Send(a, []byte("next"), fds[:1]); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, got, err := fdpass.Recv(b, buf, fdpass.MaxBatch)
	if err != nil || string(buf[:n]) != "next" || len(got) != 1 {
		t.Fatalf("Recv = %q %v %v, want only the next message", buf[:n], got, err)
	}
	closeFds(got)
}

func TestRecvEOF(t *testing.T) {
	a, b := socketpair(t)
	a.Close()
	n, fds, err := fdpass.Recv(b, make([]byte, 8), 1)
	if n != 0 || fds != nil || err != nil {
		t.Errorf("Recv at EOF = %d %v %v, want 0 bytes, no descriptors, no error", n, fds, err)
	}
}

func TestSendRecvClosed(t *testing.T) {
	a, b := socketpair(t)
	a.Close()
	if err := fdpass.Send(a, []byte("x"), nil); err == nil {
		t.Error("Send on a closed conn succeeded")
	}
	b.Close()
	if _, _, err := fdpass.Recv(b, make([]byte, 8), 1); err == nil {
		t.Error("Recv on a closed conn succeeded")
	}
}

func TestPeerCred(t *testing.T) {
	a, _ := socketpair(t)
	cred, err := fdpass.PeerCred(a)
	if err != nil {
		t.Fatal(err)
	}
	if int(cred.Pid) != unix.Getpid() || int(cred.Uid) != unix.Getuid() {
		t.Errorf("PeerCred = %+v, want pid %d uid %d", cred, unix.Getpid(), unix.Getuid())
	}
}
