package supervisor

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/prometheus/procfs"

	"github.com/batonproxy/baton/internal/proctree"
)

// ProcFS reads what baton needs to know about its descendants from /proc.
type ProcFS interface {
	// Members lists the live processes of process group pgid among baton's
	// descendants (a generation's master, workers and orphans alike). The
	// group leader's pid is pgid.
	Members(pgid int) ([]int, error)
	// ScanGroup lists every live process of group pgid by reading the stat
	// of every process on the host: slower than Members, but it cannot miss
	// a process that is being re-parented while the tree is walked.
	ScanGroup(pgid int) ([]int, error)
	// SocketInodes returns the inodes of every socket pid has open.
	SocketInodes(pid int) (map[uint64]bool, error)
	// Limits returns pid's resource limits, by /proc/PID/limits row name.
	Limits(pid int) (map[string]Limit, error)
	// CPUTicks returns user+system clock ticks pid has used.
	CPUTicks(pid int) (uint64, error)
	// FdCount is the number of descriptors pid has open.
	FdCount(pid int) (int, error)
}

// Limit is one row of /proc/PID/limits; Unlimited for "unlimited".
type Limit struct {
	Soft, Hard uint64
}

// NewProcFS returns a ProcFS over the real /proc, seen from baton's own pid.
func NewProcFS() (ProcFS, error) {
	fs, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return nil, err
	}
	return &realProcFS{fs: fs, self: os.Getpid()}, nil
}

type realProcFS struct {
	fs   procfs.FS
	self int
}

// Members walks the process tree below the group leader (pid pgid) through
// /proc/PID/task/TID/children and keeps the processes of group pgid, then
// baton's own children of that group: a process whose parent exited (the
// leader included, reaped or still a zombie, which has no children left)
// was handed to baton, the subreaper. Reading baton's children last finds a
// process that moved while the leader's tree was read.
func (r *realProcFS) Members(pgid int) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	walk := func(queue []int, all bool) {
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			if seen[pid] {
				continue
			}
			seen[pid] = true
			p, err := r.fs.Proc(pid)
			if err != nil {
				continue // exited meanwhile
			}
			st, err := p.Stat()
			if err != nil {
				continue
			}
			mine := st.PGRP == pgid
			if mine && st.State != "Z" {
				out = append(out, pid)
			}
			if mine || all {
				queue = append(queue, proctree.Children(pid)...)
			}
		}
	}
	walk([]int{pgid}, true)
	// Other generations' leaders are baton's children too: skip their trees.
	walk(proctree.Children(r.self), false)
	return out, nil
}

func (r *realProcFS) ScanGroup(pgid int) ([]int, error) {
	procs, err := r.fs.AllProcs()
	if err != nil {
		return nil, err
	}
	var out []int
	for _, p := range procs {
		st, err := p.Stat()
		if err == nil && st.PGRP == pgid && st.State != "Z" {
			out = append(out, p.PID)
		}
	}
	return out, nil
}

func (r *realProcFS) SocketInodes(pid int) (map[uint64]bool, error) {
	p, err := r.fs.Proc(pid)
	if err != nil {
		return nil, err
	}
	targets, err := p.FileDescriptorTargets()
	if err != nil {
		return nil, err
	}
	out := map[uint64]bool{}
	for _, t := range targets {
		if s, ok := strings.CutPrefix(t, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[n] = true
			}
		}
	}
	return out, nil
}

func (r *realProcFS) FdCount(pid int) (int, error) {
	p, err := r.fs.Proc(pid)
	if err != nil {
		return 0, err
	}
	return p.FileDescriptorsLen()
}

func (r *realProcFS) CPUTicks(pid int) (uint64, error) {
	p, err := r.fs.Proc(pid)
	if err != nil {
		return 0, err
	}
	st, err := p.Stat()
	if err != nil {
		return 0, err
	}
	return uint64(st.UTime + st.STime), nil
}

// Limits parses /proc/PID/limits. procfs only exposes soft limits, and baton
// reports both.
func (r *realProcFS) Limits(pid int) (map[string]Limit, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseLimits(f)
}

// limitRows maps /proc/PID/limits row names to --rlimit names.
var limitRows = map[string]string{
	"Max cpu time": "cpu", "Max file size": "fsize", "Max data size": "data",
	"Max stack size": "stack", "Max core file size": "core", "Max resident set": "rss",
	"Max processes": "nproc", "Max open files": "nofile", "Max locked memory": "memlock",
	"Max address space": "as", "Max file locks": "locks", "Max pending signals": "sigpending",
	"Max msgqueue size": "msgqueue", "Max nice priority": "nice",
	"Max realtime priority": "rtprio", "Max realtime timeout": "rttime",
}

func parseLimits(f *os.File) (map[string]Limit, error) {
	out := map[string]Limit{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if len(line) < 26 {
			continue
		}
		name, ok := limitRows[strings.TrimSpace(line[:25])]
		fields := strings.Fields(line[25:])
		if !ok || len(fields) < 2 {
			continue
		}
		soft, err1 := parseLimit(fields[0])
		hard, err2 := parseLimit(fields[1])
		if err1 == nil && err2 == nil {
			out[name] = Limit{Soft: soft, Hard: hard}
		}
	}
	return out, sc.Err()
}
