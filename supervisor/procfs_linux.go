package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proctree"
)

// ProcFS reads what baton needs to know about its descendants from /proc.
type ProcFS interface {
	// Members lists the live processes of a generation: its cgroup's, or
	// without one (the fallback) those of its process group, every
	// descendant of its leader and the orphans of it re-parented to its
	// reaper (see GenProcs).
	Members(g GenProcs) ([]int, error)
	// ScanMembers is Members confirmed: without a cgroup it adds every
	// process of the group found by reading the stat of every process on
	// the host, slower, but it cannot miss one that is being re-parented
	// while the tree is walked.
	ScanMembers(g GenProcs) ([]int, error)
	// SocketInodes returns the inodes of every socket pid has open.
	SocketInodes(pid int) (map[uint64]bool, error)
	// Limits returns pid's resource limits, by /proc/PID/limits row name.
	Limits(pid int) (map[string]Limit, error)
	// CPUTicks returns user+system clock ticks pid has used.
	CPUTicks(pid int) (uint64, error)
	// FdCount is the number of descriptors pid has open.
	FdCount(pid int) (int, error)
	// Cmdline is pid's command line, its arguments joined by spaces (the
	// title a proxy gives its processes, "nginx: worker process").
	Cmdline(pid int) (string, error)
}

// Limit is one row of /proc/PID/limits; Unlimited for "unlimited".
type Limit struct {
	Soft uint64 `json:"soft"`
	Hard uint64 `json:"hard"`
}

// NewProcFS returns a ProcFS over the real /proc.
func NewProcFS() (ProcFS, error) {
	fs, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return nil, err
	}
	return &realProcFS{fs: fs, markers: map[int]markerSeen{}}, nil
}

type realProcFS struct {
	fs procfs.FS

	// markers caches what readMarker found in a process's environment,
	// by pid and start time: the release watch reads the reaper's
	// children every few milliseconds, and an environment is read once.
	mu      sync.Mutex
	markers map[int]markerSeen
}

// markerSeen is the marker found in the environment of the process that
// started at start.
type markerSeen struct {
	start  uint64
	marker string
}

// markersCached bounds the cache; it is emptied when full.
const markersCached = 4096

// Members reads the generation's cgroup.procs when it has a cgroup (and
// the cgroup can be read), else walks the tree (see walk).
func (r *realProcFS) Members(g GenProcs) ([]int, error) {
	if g.Cgroup != "" {
		if pids, err := cgroupProcs(g.Cgroup); err == nil {
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
func (r *realProcFS) walk(g GenProcs) []int {
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
			st, err := readStat(pid)
			if err != nil {
				continue // exited meanwhile
			}
			if st.state != 'Z' {
				out = append(out, pid)
			}
			queue = append(queue, proctree.Children(pid)...)
		}
	}
	if g.Leader > 0 {
		tree([]int{g.Leader})
	}
	if g.Reaper <= 0 {
		return out
	}
	for _, pid := range proctree.MainChildren(g.Reaper) {
		if seen[pid] {
			continue
		}
		st, err := readStat(pid)
		if err == nil && (st.pgrp == g.Pgid || r.marked(pid, st.start, g.Marker)) {
			tree([]int{pid})
		}
	}
	return out
}

func (r *realProcFS) ScanMembers(g GenProcs) ([]int, error) {
	if g.Cgroup != "" {
		if pids, err := cgroupProcs(g.Cgroup); err == nil {
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
		if st, err := readStat(pid); err == nil && st.pgrp == g.Pgid && st.state != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// marked reports whether the process pid, started at start, carries the
// marker; its environment is read once.
func (r *realProcFS) marked(pid int, start uint64, marker string) bool {
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

// procStat is what membership needs of /proc/PID/stat.
type procStat struct {
	state byte
	ppid  int
	pgrp  int
	start uint64 // clock ticks after boot: with the pid, the process's identity
}

// readStat reads the state, parent and process group of pid with one
// read(2).
func readStat(pid int) (procStat, error) {
	var buf [512]byte
	n, err := readProcFile(pid, "stat", buf[:])
	if err != nil {
		return procStat{}, err
	}
	b := buf[:n]
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("bad /proc stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("short /proc stat")
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, err
	}
	return procStat{state: f[0][0], ppid: ppid, pgrp: pgrp, start: start}, nil
}

// environLimit bounds what readMarker reads of an environment; baton puts
// the marker first.
const environLimit = 64 << 10

// readMarker returns the BATON_GENERATION value in pid's environment (as
// it was at exec, unless the process overwrote it), "" for none. It reads
// at most environLimit bytes.
func readMarker(pid int) string {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/environ", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	prefix := []byte(markerVar + "=")
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

// readProcFile reads up to len(buf) bytes of /proc/PID/name.
func readProcFile(pid int, name string, buf []byte) (int, error) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
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

func (r *realProcFS) Cmdline(pid int) (string, error) {
	p, err := r.fs.Proc(pid)
	if err != nil {
		return "", err
	}
	args, err := p.CmdLine()
	return strings.Join(args, " "), err
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
