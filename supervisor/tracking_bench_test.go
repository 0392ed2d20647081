package supervisor

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// BenchmarkMembers times one membership read of a generation while n
// generations (see startSleepers) are this process's orphans: what the
// release watch does every 1-4 ms during a reload.
//
//	go test -run '^$' -bench Members ./supervisor/
func BenchmarkMembers(b *testing.B) {
	pfs, err := proc.NewFS()
	if err != nil {
		b.Fatal(err)
	}
	for _, cg := range []bool{true, false} {
		for _, n := range []int{1, 64} {
			name := map[bool]string{true: "cgroup", false: "fallback"}[cg] + "/gens=" + strconv.Itoa(n)
			b.Run(name, func(b *testing.B) {
				if cg && cgroupUsable() != nil {
					b.Skip("no writable cgroup v2 here")
				}
				gens := startSleepers(b, n, cg)
				g := gens[len(gens)-1]
				b.Run("Members", func(b *testing.B) {
					for b.Loop() {
						if pids, _ := pfs.Members(g); len(pids) != 1 {
							b.Fatalf("members %v", pids)
						}
					}
				})
				b.Run("ScanMembers", func(b *testing.B) {
					for b.Loop() {
						if pids, _ := pfs.ScanMembers(g); len(pids) != 1 {
							b.Fatalf("members %v", pids)
						}
					}
				})
			})
		}
	}
}

// startSleepers starts n generations, each a sleeping daemon (setsid,
// re-parented to this process, the subreaper, as its parent shell exits)
// with its marker, and its cgroup with cg: the fallback's worst case, where
// every one of baton's orphans is read. They are killed and reaped at
// cleanup.
func startSleepers(b *testing.B, n int, cg bool) []proc.GenProcs {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		b.Fatal(err)
	}
	tree := newCgroupTree(newTrackID(), !cg)
	var gens []proc.GenProcs
	b.Cleanup(func() {
		for _, g := range gens {
			_ = unix.Kill(g.Pgid, unix.SIGKILL)
			var ws unix.WaitStatus
			_, _ = unix.Wait4(g.Pgid, &ws, 0, nil)
			if g.Cgroup != "" {
				_ = tree.remove(g.Cgroup)
			}
		}
		_ = tree.close()
	})
	for i := range n {
		marker := fmt.Sprintf("%s.%d", tree.id, i)
		sys := &syscall.SysProcAttr{}
		dir := ""
		if cg {
			d, fd, _, err := tree.create(lifecycle.Gen(i))
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			dir, sys.UseCgroupFD, sys.CgroupFD = d, true, fd
		}
		rd, wr, err := os.Pipe()
		if err != nil {
			b.Fatal(err)
		}
		sh, _, err := syscall.StartProcess("/bin/sh", []string{"sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!"}, &syscall.ProcAttr{
			Env: []string{markerVar + "=" + marker, "PATH=/usr/bin:/bin"}, Files: []uintptr{0, wr.Fd(), 2}, Sys: sys,
		})
		wr.Close()
		if err != nil {
			rd.Close()
			b.Fatal(err)
		}
		out, _ := io.ReadAll(rd)
		rd.Close()
		var ws unix.WaitStatus
		_, _ = unix.Wait4(sh, &ws, 0, nil)
		pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			b.Fatalf("sh said %q", out)
		}
		// The daemon leads its own group; its generation's leader (the
		// shell) is gone.
		gens = append(gens, proc.GenProcs{Pgid: pid, Cgroup: dir, Marker: marker, Reaper: os.Getpid()})
	}
	if !pollUntil(shortWait, func() bool { return len(proc.MainChildren(os.Getpid())) >= n }) {
		b.Fatalf("%d daemons not re-parented to this process", n)
	}
	return gens
}
