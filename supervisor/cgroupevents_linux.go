package supervisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// waitCgroupEmpty waits until the cgroup dir holds no process any more
// ("populated 0" in its cgroup.events), woken by inotify: the kernel
// signals a modification of cgroup.events each time a value in it
// changes. It returns nil once the cgroup is empty, ctx's error when ctx
// ended first, and another error when the file cannot be watched or read
// (the caller then polls).
func waitCgroupEmpty(ctx context.Context, dir string) error {
	events := filepath.Join(dir, "cgroup.events")
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	f := os.NewFile(uintptr(fd), "inotify") // not a shared socket: the netpoller may have it
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, events, unix.IN_MODIFY); err != nil {
		return fmt.Errorf("watch %s: %w", events, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 4096)
	for {
		// Read after the watch was added: a change in between is seen.
		populated, err := cgroupPopulated(dir)
		if err != nil {
			return err
		}
		if !populated {
			return nil
		}
		if _, err := f.Read(buf); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read inotify: %w", err)
		}
	}
}

// waitGone waits until no process of rt is left: woken by its cgroup's
// events when it has a cgroup, else (or when they cannot be watched) by
// polling alive. false when the loop ended first.
func (s *Supervisor) waitGone(rt *genRuntime) bool {
	if rt.track.cgroup != "" {
		err := waitCgroupEmpty(s.loopCtx, rt.track.cgroup)
		if err == nil {
			return true
		}
		if s.loopCtx.Err() != nil {
			return false
		}
		rt.log.Debug("cgroup events not watched: polling", zap.Error(err))
	}
	return s.pollUntil(s.loopCtx, func() bool { return !s.alive(rt) })
}
