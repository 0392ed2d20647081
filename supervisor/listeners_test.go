package supervisor

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

func parseSpecs(t *testing.T, specs ...string) []fdpass.Spec {
	t.Helper()
	var out []fdpass.Spec
	for _, s := range specs {
		sp, err := fdpass.ParseSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sp)
	}
	return out
}

// fdInode is the socket inode fd refers to in this process, 0 if none.
func fdInode(fd int) uint64 {
	m, _ := fdInodes(os.Getpid())
	return m[fd]
}

func TestBindListenersAllOrNothing(t *testing.T) {
	dir := shortDir(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0") // also warms the poller
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	before := selfFdCount(t)
	path := filepath.Join(dir, "a.sock")
	specs := parseSpecs(t, "tcp://127.0.0.1:0", "unix://"+path, "tcp://"+busy.Addr().String())
	ls, err := BindListeners(specs)
	if err == nil {
		ls.CloseAll()
		t.Fatal("BindListeners bound an address in use")
	}
	if !errors.Is(err, unix.EADDRINUSE) || !strings.Contains(err.Error(), busy.Addr().String()) {
		t.Errorf("error %v, want EADDRINUSE naming %s", err, busy.Addr())
	}
	if n := selfFdCount(t); n != before {
		t.Errorf("fd count %d after the failed bind, %d before: the sockets bound first leaked\n%s", n, before, fdList(t))
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unix socket %s left behind (%v)", path, err)
	}
}

func TestBindListenersRejectsDuplicates(t *testing.T) {
	dir := shortDir(t)
	for _, tc := range []struct {
		name  string
		specs []string
		want  string
	}{
		{"address", []string{"unix://" + filepath.Join(dir, "a.sock"), "other=unix://" + filepath.Join(dir, "a.sock")}, "given twice"},
		{"name", []string{"web=tcp://127.0.0.1:0", "web=unix://" + filepath.Join(dir, "b.sock")}, `name "web" given twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warmPoller(t)
			before := selfFdCount(t)
			ls, err := BindListeners(parseSpecs(t, tc.specs...))
			if err == nil {
				ls.CloseAll()
				t.Fatal("duplicate accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
			if n := selfFdCount(t); n != before {
				t.Errorf("fd count %d, %d before: the first socket leaked", n, before)
			}
		})
	}
}

func TestListenerSetRefcounts(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, "c.sock")
	ls := bindSpecs(t, "tcp://127.0.0.1:0", "unix://"+path)
	socks := ls.Sockets()
	if ls.Len() != 2 || len(socks) != 2 {
		t.Fatalf("Len %d, %d sockets; want 2", ls.Len(), len(socks))
	}
	got, _ := ls.acquire(1)
	if len(got) != 2 {
		t.Fatalf("Acquire returned %d listeners, want 2", len(got))
	}
	for i, l := range got {
		if l.Fd != socks[i].Fd() || l.Addr != socks[i].Addr() || l.Inode != socks[i].Inode() || l.Spec != socks[i].Spec() {
			t.Errorf("listener %d: %+v does not describe socket %s (fd %d)", i, l, socks[i].Addr(), socks[i].Fd())
		}
	}
	_, _ = ls.acquire(2)
	if err := ls.Release(1); err != nil {
		t.Errorf("release 1: %v", err)
	}
	if err := ls.Release(1); err == nil {
		t.Error("a second release of generation 1 succeeded: counting mistakes would not show")
	}
	if err := ls.Release(7); err == nil {
		t.Error("release of generation 7, which never acquired, succeeded")
	}
	if err := ls.Release(2); err != nil {
		t.Errorf("release 2: %v", err)
	}
	// Nobody uses them now, but they are in the configuration: still open.
	for _, s := range socks {
		if fdInode(s.Fd()) != s.Inode() {
			t.Errorf("socket %s closed after its users were released", s.Addr())
		}
	}
	if in := ls.inodes(); len(in) != 2 || !in[socks[0].Inode()] || !in[socks[1].Inode()] {
		t.Errorf("Inodes %v", in)
	}
	if in := currentInodes(ls); len(in) != 2 {
		t.Errorf("current inodes %v", in)
	}

	fds := []int{socks[0].Fd(), socks[1].Fd()}
	if err := ls.CloseAll(); err != nil {
		t.Fatalf("CloseAll: %v", err)
	}
	for i, fd := range fds {
		if fdInode(fd) == socks[i].Inode() {
			t.Errorf("fd %d still open after CloseAll", fd)
		}
	}
	if ls.Len() != 0 || len(ls.Sockets()) != 0 || len(ls.inodes()) != 0 {
		t.Errorf("set not empty after CloseAll: Len %d", ls.Len())
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unix socket path %s not removed by CloseAll (%v)", path, err)
	}
	if err := ls.CloseAll(); err != nil {
		t.Errorf("second CloseAll: %v", err)
	}
	// A generation forgotten after the stop closed everything.
	if err := ls.Release(2); err != nil {
		t.Errorf("release after CloseAll: %v", err)
	}
}

// currentInodes is the inodes of the set's current (not removed) sockets.
func currentInodes(ls *ListenerSet) map[uint64]bool {
	out := map[uint64]bool{}
	for _, s := range ls.Sockets() {
		out[s.Inode()] = true
	}
	return out
}

// usedBy is how many listeners gen uses.
func usedBy(ls *ListenerSet, gen lifecycle.Gen) int {
	n := 0
	for _, e := range ls.items {
		if e.users[gen] {
			n++
		}
	}
	return n
}
