package supervisor

import "github.com/batonproxy/baton/internal/proc"

// ProcFS reads what baton needs to know about its descendants from /proc
// (proc.FS).
type ProcFS interface {
	// Members lists the live processes of a generation: its cgroup's, or
	// without one (the fallback) those of its process group, every
	// descendant of its leader and the orphans of it re-parented to its
	// reaper (see proc.GenProcs).
	Members(g proc.GenProcs) ([]int, error)
	// ScanMembers is Members confirmed: without a cgroup it adds every
	// process of the group found by reading the stat of every process on
	// the host, slower, but it cannot miss one that is being re-parented
	// while the tree is walked.
	ScanMembers(g proc.GenProcs) ([]int, error)
	// SocketInodes returns the inodes of every socket pid has open.
	SocketInodes(pid int) (map[uint64]bool, error)
	// Limits returns pid's resource limits, by /proc/PID/limits row name.
	Limits(pid int) (map[string]proc.Limit, error)
	// FdCount is the number of descriptors pid has open.
	FdCount(pid int) (int, error)
	// Cmdline is pid's command line, its arguments joined by spaces (the
	// title a proxy gives its processes, "nginx: worker process").
	Cmdline(pid int) (string, error)
}

var _ ProcFS = (*proc.FS)(nil)
