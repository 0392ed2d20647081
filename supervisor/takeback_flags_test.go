package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Taking a socket back never changes the shared description's flags. An
// upgrade's handover, the take-back of a crashed baton's sockets
// (pidfd_getfd) and --adopt-listeners each give baton a descriptor of the
// very open file description the serving processes use: O_NONBLOCK set
// there is set for them. A server that had made its socket blocking then got
// EAGAIN from accept and exited. Checked for a blocking and a non-blocking
// server: F_GETFL of the description the same before and after, and the
// server still accepting afterwards.
func TestTakeBackKeepsSharedFlags(t *testing.T) {
	servers := []struct {
		name, mode string
		nonblock   bool
	}{{"blocking", "blocking", false}, {"nonblocking", "", true}}
	for _, srv := range servers {
		for _, way := range []string{"upgrade", "crash", "adopt-listeners"} {
			t.Run(srv.name+"/"+way, func(t *testing.T) {
				testTakeBack(t, srv.mode, srv.nonblock, way)
			})
		}
	}
}

func testTakeBack(t *testing.T, mode string, nonblock bool, way string) {
	foreign := way == "adopt-listeners"
	if foreign {
		mode = strings.TrimPrefix(mode+",bindown", ",")
	}
	h := newHarness(t, harnessOpts{modes: []string{mode}, adoptForeign: foreign})
	// Read before Run: with --adopt-listeners the loop adds to the set.
	sock := h.ls.Sockets()[0]
	addr, inode := sock.Addr(), sock.Inode()
	h.start()
	pid := h.drv.pid(1)
	var before int
	if !foreign {
		before = descFlags(t, pid, inode)
	}
	switch way {
	case "upgrade":
		ls := upgradeHandover(t, sock)
		defer ls.CloseAll()
		checkSameDescription(t, ls, inode, pid)
	case "crash":
		ls := crashTakeBack(t, sock, pid)
		defer ls.CloseAll()
		checkSameDescription(t, ls, inode, pid)
	case "adopt-listeners":
		// The fake made its own socket as the mode says before it was
		// ready; baton takes it over once it is.
		addr, inode, before = h.waitForeignAdopted()
	}
	after := descFlags(t, pid, inode)
	t.Logf("%s: F_GETFL of the shared description %#o before, %#o after", way, before, after)
	if before&unix.O_NONBLOCK != 0 != nonblock {
		t.Fatalf("the fake's socket has flags %#o before the take-back; the test expects O_NONBLOCK=%v", before, nonblock)
	}
	if after != before {
		t.Errorf("taking the socket back changed the shared description's flags from %#o to %#o", before, after)
	}
	// The server keeps accepting: a blocking accept after an O_NONBLOCK
	// flip fails with EAGAIN and the fake exits.
	for i := range 3 {
		if got := get(t, addr); got.pid != strconv.Itoa(pid) {
			t.Fatalf("request %d served by pid %s, want the fake %d", i, got.pid, pid)
		}
	}
	if st := procState(pid); st == "" || st == "Z" {
		t.Errorf("the server (pid %d) exited after the take-back: %s", pid, strings.Join(h.proxyOutput(), "\n"))
	}
}

// upgradeHandover sends sock (borrowed) over a socketpair as an upgrade does
// and returns the receiving side's listener set.
func upgradeHandover(t *testing.T, sock *fdpass.Socket) *ListenerSet {
	t.Helper()
	a, b := unixPair(t)
	hand := Handover{Listeners: []ListenerHandover{{Spec: sock.Spec().String(), Inode: sock.Inode(), Users: []lifecycle.Gen{1}, Fd: 0}},
		ControlFd: -1, LockFd: -1, InitFd: -1, MetricsFd: -1}
	sent := make(chan error, 1)
	go func() {
		_, err := sendHandover(a, hand, []int{sock.Fd()}, shortWait)
		sent <- err
	}()
	got, fds, err := ReceiveHandover(b, shortWait)
	if err != nil {
		t.Fatal(err)
	}
	if err := AckHandover(b, os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	ls, err := AdoptListeners(got, fds)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// crashTakeBack recovers sock's listener from the generation pid as a baton
// restarted after a crash does (state file, pidfd_getfd).
func crashTakeBack(t *testing.T, sock *fdpass.Socket, pid int) *ListenerSet {
	t.Helper()
	ticks, err := proc.StartTicks(pid)
	if err != nil {
		t.Fatal(err)
	}
	hand := &Handover{BatonPid: os.Getpid(),
		Gens:      []GenHandover{{Gen: 1, Pid: pid, StartTicks: ticks, Pidfd: -1, Output: -1}},
		Listeners: []ListenerHandover{{Spec: sock.Spec().String(), Inode: sock.Inode(), Users: []lifecycle.Gen{1}, Fd: -1}}}
	pfs, err := proc.NewFS()
	if err != nil {
		t.Fatal(err)
	}
	ls, found, err := RecoverListeners(hand, []fdpass.Spec{sock.Spec()}, pfs)
	if err != nil {
		t.Fatal(err)
	}
	if found != 1 {
		ls.CloseAll()
		t.Fatalf("took back %d sockets from pid %d, want 1", found, pid)
	}
	return ls
}

// checkSameDescription: ls holds the socket inode, and F_GETFL on its
// descriptor reads what the server's descriptor reads (one description).
func checkSameDescription(t *testing.T, ls *ListenerSet, inode uint64, pid int) {
	t.Helper()
	socks := ls.Sockets()
	if len(socks) != 1 || socks[0].Inode() != inode {
		t.Fatalf("taken back %d sockets, want the one with inode %d", len(socks), inode)
	}
	fl, err := unix.FcntlInt(uintptr(socks[0].Fd()), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if srv := descFlags(t, pid, inode); fl != srv {
		t.Errorf("F_GETFL %#o on baton's descriptor, %#o on the server's: not one description?", fl, srv)
	}
}

// waitForeignAdopted waits until baton took over the socket the first
// generation bound itself, and returns its address, inode and the flags the
// generation left on it.
func (h *harness) waitForeignAdopted() (string, uint64, int) {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.drv.dir(1), ownAddrFile))
	if err != nil {
		h.t.Fatal(err)
	}
	addr, fl, _ := strings.Cut(string(data), " ")
	flags, err := strconv.ParseInt(fl, 8, 64)
	if err != nil {
		h.t.Fatalf("%s: %q", ownAddrFile, data)
	}
	var inode uint64
	waitFor(h.t, shortWait, "baton adopted the generation's own socket "+addr, func() bool {
		for _, g := range h.status().Generations {
			for _, f := range g.ForeignListeners {
				if f.Addr == addr && f.Adopted {
					inode = f.Inode
					return true
				}
			}
		}
		return false
	})
	return addr, inode, int(flags)
}

// descFlags reads the file status flags (F_GETFL) of pid's descriptor of
// the socket inode from /proc/PID/fdinfo, without touching it; the
// per-descriptor O_CLOEXEC fdinfo adds is masked out.
func descFlags(t *testing.T, pid int, inode uint64) int {
	t.Helper()
	fd := proc.FindSocketFd(pid, inode)
	if fd < 0 {
		t.Fatalf("pid %d holds no descriptor of socket %d", pid, inode)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
			if err != nil {
				t.Fatal(err)
			}
			return int(n) &^ unix.O_CLOEXEC
		}
	}
	t.Fatalf("no flags in /proc/%d/fdinfo/%d", pid, fd)
	return 0
}
