package doctor

import (
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/batonproxy/baton/internal/proc"
)

// userHZ is the unit of /proc/PID/stat's start time (USER_HZ, 100 on
// every Linux architecture baton runs on).
const userHZ = 100

// procScan is one pass over /proc.
type procScan struct {
	fs     procfs.FS
	limits *proc.FS
	boot   time.Time
}

// scanned is what one process's entry gave.
type scanned struct {
	proc       *Process
	listening  []uint64
	udp        []uint64
	unreadable bool
}

// scan reads every process once: its stat (comm, parent, group, start) and
// its descriptor table, keeping the inodes of the listening sockets it
// holds and of the unconnected UDP sockets (udp). Processes are read by a few goroutines: on a host with many
// sockets the readlinks of /proc/PID/fd/N are the whole cost.
func (s *procScan) scan(listening map[uint64]*Listener, udp map[uint64]*UDPSocket) (map[int]*Process, int, int, error) {
	all, err := s.fs.AllProcs()
	if err != nil {
		return nil, 0, 0, err
	}
	results := make([]scanned, len(all))
	workers := min(runtime.NumCPU(), 8, len(all))
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i] = s.one(all[i], listening, udp)
			}
		}()
	}
	for i := range all {
		next <- i
	}
	close(next)
	wg.Wait()

	procs := make(map[int]*Process, len(all))
	unreadable := 0
	for _, r := range results {
		if r.proc == nil {
			continue // exited meanwhile
		}
		if r.unreadable {
			unreadable++
		}
		procs[r.proc.Pid] = r.proc
		for _, inode := range r.listening {
			l := listening[inode]
			l.Holders = append(l.Holders, r.proc.Pid)
		}
		for _, inode := range r.udp {
			u := udp[inode]
			u.Holders = append(u.Holders, r.proc.Pid)
		}
	}
	for _, l := range listening {
		sort.Ints(l.Holders)
	}
	for _, u := range udp {
		sort.Ints(u.Holders)
	}
	return procs, len(procs), unreadable, nil
}

// one reads one process; listening and udp are only read here (Holders are
// filled by the caller).
func (s *procScan) one(p procfs.Proc, listening map[uint64]*Listener, udp map[uint64]*UDPSocket) scanned {
	st, err := p.Stat()
	if err != nil || st.State == "Z" {
		return scanned{}
	}
	proc := &Process{
		Pid: p.PID, PPid: st.PPID, Pgrp: st.PGRP, Comm: st.Comm,
		Start: s.boot.Add(time.Duration(st.Starttime) * time.Second / userHZ), StartTicks: st.Starttime,
	}
	out := scanned{proc: proc}
	targets, err := p.FileDescriptorTargets()
	if err != nil {
		out.unreadable = true
		proc.Fds = -1
	} else {
		proc.Fds = len(targets)
		for _, t := range targets {
			if inode, ok := socketInode(t); ok {
				if _, ok := listening[inode]; ok {
					out.listening = append(out.listening, inode)
				} else if _, ok := udp[inode]; ok {
					out.udp = append(out.udp, inode)
				}
			}
		}
		proc.Listening, proc.UDP = out.listening, out.udp
	}
	proc.Program = programOf(proc.Comm, nil)
	if proc.Program != "" || len(proc.Listening) > 0 || len(proc.UDP) > 0 {
		s.details(proc)
	}
	return out
}

// details reads what only the processes worth checking need: the command
// line and the NOFILE limits.
func (s *procScan) details(proc *Process) {
	if proc.Cmdline != nil || proc.LimitsKnown {
		return
	}
	p, err := s.fs.Proc(proc.Pid)
	if err != nil {
		return
	}
	if cl, err := p.CmdLine(); err == nil {
		proc.Cmdline = cl
		if proc.Program == "" {
			proc.Program = programOf(proc.Comm, cl)
		}
	}
	if lim, err := s.limits.Limits(proc.Pid); err == nil {
		if n, ok := lim["nofile"]; ok {
			proc.Nofile, proc.LimitsKnown = n, true
		}
	}
}

// socketInode parses a "socket:[12345]" descriptor target.
func socketInode(target string) (uint64, bool) {
	s, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return n, err == nil
}
