package supervisor

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWaitCgroupEmpty: the wait for a generation's cgroup to empty ends on
// the cgroup.events change when its last process exits, and when its
// context ends while a process lives.
func TestWaitCgroupEmpty(t *testing.T) {
	if err := cgroupUsable(); err != nil {
		t.Skipf("no writable cgroup v2 here: %v", err)
	}
	tree := newCgroupTree(newTrackID(), false)
	dir, fd, _, err := tree.create(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tree.remove(dir); _ = tree.close() })
	pid, err := syscall.ForkExec("/bin/sleep", []string{"sleep", "300"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd},
	})
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
	}()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- waitCgroupEmpty(ctx, dir) }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("wait with a live process, context cancelled: %v, want context.Canceled", err)
		}
	case <-time.After(shortWait):
		t.Fatal("the wait did not end with its context")
	}

	go func() { done <- waitCgroupEmpty(context.Background(), dir) }()
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
	case <-time.After(shortWait):
		t.Fatal("the wait did not end when the cgroup's last process was killed")
	}
	if populated, err := cgroupPopulated(dir); err != nil || populated {
		t.Errorf("after the wait: populated %v (%v)", populated, err)
	}
}
