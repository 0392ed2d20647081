package supervisor

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
)

// docs/design.md's invariant 4 at the ProcFS level: a generation whose leader has exited but
// was not reaped yet (a zombie) still holds the listener through its
// orphaned worker, which the kernel has handed to baton, the subreaper.
// Members must find the worker, or the release watch acknowledges a reload
// while the old generation still accepts.
//
// No Reaper runs here: the test waits for its own two children by pid.
func TestMembersFindsOrphanOfUnreapedLeader(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	ls := bindSpecs(t, "tcp://127.0.0.1:0")
	t.Cleanup(func() { _ = ls.CloseAll() })
	sock := ls.Sockets()[0]
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	// Fd on our private pipe only; the listener goes as its raw number.
	leader, _, err := syscall.StartProcess(exe, []string{exe, roleSpawnOrphan}, &syscall.ProcAttr{
		Env:   childTestEnv(),
		Files: []uintptr{wr.Fd(), wr.Fd(), wr.Fd(), uintptr(sock.Fd())},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	wr.Close()
	if err != nil {
		t.Fatal(err)
	}
	var orphan int
	t.Cleanup(func() { reapTestChildren(t, leader, orphan) })
	line, err := bufio.NewReader(rd).ReadString('\n')
	if err != nil {
		t.Fatalf("spawn-orphan: %v", err)
	}
	if orphan, err = strconv.Atoi(strings.TrimSpace(line)); err != nil {
		t.Fatalf("spawn-orphan said %q: %v", line, err)
	}
	waitFor(t, shortWait, "leader a zombie, its orphan handed to us", func() bool {
		return procState(leader) == "Z" && proc.ParentPid(orphan) == os.Getpid()
	})
	if !holds(orphan, sock.Inode()) {
		t.Fatalf("orphan %d does not hold the listener", orphan)
	}
	pfs, err := proc.NewFS()
	if err != nil {
		t.Fatal(err)
	}
	g := proc.GenProcs{Pgid: leader, Leader: leader, Reaper: os.Getpid()}
	members, _ := pfs.Members(g)
	if len(members) != 1 || members[0] != orphan {
		t.Errorf("Members(%+v) = %v with the leader a zombie, want its orphan [%d]", g, members, orphan)
	}
	s := &Supervisor{procfs: pfs}
	if !s.holdsAny(g, map[uint64]bool{sock.Inode(): true}) {
		t.Errorf("holdsAny says generation %d released the listener its orphan %d holds", leader, orphan)
	}
}

// reapTestChildren stops and waits for children the test started itself.
func reapTestChildren(t *testing.T, pids ...int) {
	for _, pid := range pids {
		if pid <= 0 {
			continue
		}
		_ = unix.Kill(pid, unix.SIGKILL)
		deadline := time.Now().Add(shortWait)
		for {
			var ws unix.WaitStatus
			got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if got == pid || err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("child %d not reaped", pid)
				break
			}
			<-time.After(5 * time.Millisecond)
		}
	}
}
