package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// GenProcs names the processes of one generation for FS.Members.
type GenProcs struct {
	Pgid   int    // the process group baton started it in (its leader's pid)
	Leader int    // the leader's pid while it was not reaped (its tree is walked); 0 after
	Cgroup string // its cgroup v2 directory; "" when it has none
	Marker string // the MarkerVar value of its environment; "" for none
	Reaper int    // who its orphans are re-parented to: baton, or for an adopted generation its leader's parent then; 0: not searched
}

// MarkerVar is the environment variable that names a process's
// generation.
const MarkerVar = "BATON_GENERATION"

// Limit is one row of /proc/PID/limits; Unlimited for "unlimited".
type Limit struct {
	Soft, Hard uint64
}

// FS reads what baton needs to know about its descendants from /proc.
type FS struct {
	fs procfs.FS

	// markers caches what readMarker found in a process's environment,
	// by pid and start time: the release watch reads the reaper's
	// children every few milliseconds, and an environment is read once.
	mu      sync.Mutex
	markers map[int]markerSeen
}

// NewFS returns an FS over the real /proc.
func NewFS() (*FS, error) {
	fs, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return nil, err
	}
	return &FS{fs: fs, markers: map[int]markerSeen{}}, nil
}

// markerSeen is the marker found in the environment of the process that
// started at start.
type markerSeen struct {
	start  uint64
	marker string
}

// markersCached bounds the cache; it is emptied when full.
const markersCached = 4096

// Members lists the live processes of a generation: its cgroup's, or
// without one (the fallback) those of its process group, every descendant
// of its leader and the orphans of it re-parented to its reaper. It reads
// the generation's cgroup.procs when it has a cgroup (and the cgroup can be
// read), else walks the tree (see walk).
func (r *FS) Members(g GenProcs) ([]int, error) {
	if g.Cgroup != "" {
		if pids, err := CgroupProcs(g.Cgroup); err == nil {
			return pids, nil
		}
	}
	return r.walk(g), nil
}

// walk is the fallback's membership: the tree below the leader (every
// descendant, whatever its group or session), then the reaper's children
// that are in the generation's process group or carry its marker, with
// their trees. Other generations' leaders are the reaper's children too:
// their trees are skipped. Reading the reaper's children last finds a
// process that moved while the leader's tree was read.
func (r *FS) walk(g GenProcs) []int {
	var out []int
	seen := map[int]bool{}
	tree := func(queue []int) {
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			if seen[pid] {
				continue
			}
			seen[pid] = true
			st, err := ReadStat(pid)
			if err != nil {
				continue // exited meanwhile
			}
			if st.State != 'Z' {
				out = append(out, pid)
			}
			queue = append(queue, Children(pid)...)
		}
	}
	if g.Leader > 0 {
		tree([]int{g.Leader})
	}
	if g.Reaper <= 0 {
		return out
	}
	for _, pid := range MainChildren(g.Reaper) {
		if seen[pid] {
			continue
		}
		st, err := ReadStat(pid)
		if err == nil && (st.Pgrp == g.Pgid || r.marked(pid, st.StartTicks, g.Marker)) {
			tree([]int{pid})
		}
	}
	return out
}

// ScanMembers is Members confirmed: without a cgroup it adds every process
// of the group found by reading the stat of every process on the host,
// slower, but it cannot miss one that is being re-parented while the tree
// is walked.
func (r *FS) ScanMembers(g GenProcs) ([]int, error) {
	if g.Cgroup != "" {
		if pids, err := CgroupProcs(g.Cgroup); err == nil {
			return pids, nil
		}
	}
	pids := r.walk(g)
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	have := map[int]bool{}
	for _, p := range pids {
		have[p] = true
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || have[pid] {
			continue
		}
		if st, err := ReadStat(pid); err == nil && st.Pgrp == g.Pgid && st.State != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// marked reports whether the process pid, started at start, carries the
// marker; its environment is read once.
func (r *FS) marked(pid int, start uint64, marker string) bool {
	if marker == "" {
		return false
	}
	r.mu.Lock()
	seen, ok := r.markers[pid]
	r.mu.Unlock()
	if !ok || seen.start != start {
		seen = markerSeen{start: start, marker: readMarker(pid)}
		r.mu.Lock()
		if len(r.markers) >= markersCached {
			clear(r.markers)
		}
		r.markers[pid] = seen
		r.mu.Unlock()
	}
	return seen.marker == marker
}

// environLimit bounds what readMarker reads of an environment; baton puts
// the marker first.
const environLimit = 64 << 10

// readMarker returns the MarkerVar value in pid's environment (as
// it was at exec, unless the process overwrote it), "" for none. It reads
// at most environLimit bytes.
func readMarker(pid int) string {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/environ", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	prefix := []byte(MarkerVar + "=")
	var env []byte
	buf := make([]byte, 4096)
	for len(env) < environLimit {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		env = append(env, buf[:n]...)
	}
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, prefix); ok {
			return string(v)
		}
	}
	return ""
}

// SocketInodes returns the inodes of every socket pid has open.
func (r *FS) SocketInodes(pid int) (map[uint64]bool, error) {
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

// FdCount is the number of descriptors pid has open.
func (r *FS) FdCount(pid int) (int, error) {
	p, err := r.fs.Proc(pid)
	if err != nil {
		return 0, err
	}
	return p.FileDescriptorsLen()
}

// Cmdline is pid's command line, its arguments joined by spaces (the
// title a proxy gives its processes, "nginx: worker process").
func (r *FS) Cmdline(pid int) (string, error) {
	p, err := r.fs.Proc(pid)
	if err != nil {
		return "", err
	}
	args, err := p.CmdLine()
	return strings.Join(args, " "), err
}

// Limits parses /proc/PID/limits. procfs only exposes soft limits, and baton
// reports both.
func (r *FS) Limits(pid int) (map[string]Limit, error) {
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

// CgroupProcs lists the processes in the cgroup dir (zombies are not
// listed: a process leaves its cgroup when it exits).
func CgroupProcs(dir string) ([]int, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}
