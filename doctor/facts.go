package doctor

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/internal/proc"
)

// Facts is everything the checks look at, read once per run.
type Facts struct {
	Now time.Time
	// Listeners are the TCP sockets in LISTEN state (this network
	// namespace), with the processes that hold each.
	Listeners []Listener
	// UDPSockets are the bound, unconnected UDP sockets (IPv4 and IPv6,
	// this network namespace): QUIC listeners among them. Connected UDP
	// sockets (HAProxy opens one per QUIC connection on the listener's
	// address) are left out.
	UDPSockets []UDPSocket
	// Procs are the processes worth checking, by pid: proxies, batons,
	// baton generations' processes and every holder of a listening socket.
	Procs map[int]*Process
	// Scanned counts the processes read; Unreadable those whose descriptor
	// table could not be read (another user's, when not root).
	Scanned, Unreadable int
	Sys                 Sysctls
	// TimeWait is the host's TIME_WAIT socket count (-1: unknown).
	TimeWait int
	// Drops are the TcpExt ListenOverflows and ListenDrops counters read
	// twice, Interval apart (Known false: unreadable).
	Drops DropCounters
	// Batons are the supervisors found or named, with their status and
	// listener history.
	Batons []Baton
	// Configs are the proxy configurations in use.
	Configs []ProxyConfig
	// Notes say what could not be read.
	Notes []string
}

// Listener is one TCP socket in LISTEN state.
type Listener struct {
	Addr    netip.AddrPort
	Inode   uint64
	Queue   uint32 // accept queue now
	Backlog uint32 // its limit (the listen() backlog, capped at somaxconn)
	Holders []int  // pids holding it, sorted
}

// UDPSocket is one bound, unconnected UDP socket.
type UDPSocket struct {
	Addr    netip.AddrPort
	Inode   uint64
	UID     uint32 // its owner (the effective uid of the process that created it)
	Holders []int  // pids holding it, sorted
}

// Process is one process, as /proc shows it.
type Process struct {
	Pid, PPid, Pgrp int
	Comm            string
	Cmdline         []string
	Start           time.Time
	StartTicks      uint64 // /proc/PID/stat field 22, to tell pid reuse
	// Program is "haproxy", "nginx", "baton" or "" (anything else).
	Program string
	// Listening are the inodes of the listening sockets it holds.
	Listening []uint64
	// UDP are the inodes of the unconnected UDP sockets it holds.
	UDP []uint64
	// Fds is its open descriptor count; Nofile its RLIMIT_NOFILE
	// (LimitsKnown false: unreadable).
	Fds         int
	Nofile      proc.Limit
	LimitsKnown bool
	// Gen and BatonControl are set when it belongs to a generation of a
	// baton doctor asked.
	Gen          int
	BatonControl string
}

// Label is "pid 1234 haproxy".
func (p *Process) Label() string {
	name := p.Comm
	if name == "" {
		name = "?"
	}
	return fmt.Sprintf("pid %d %s", p.Pid, name)
}

// Proxy reports whether p is an HAProxy or nginx process.
func (p *Process) Proxy() bool { return p.Program == "haproxy" || p.Program == "nginx" }

// Sysctls are the kernel settings the checks compare with (0: unknown).
type Sysctls struct {
	Somaxconn, MaxSynBacklog, Syncookies, MaxTWBuckets int
}

// DropCounters are two readings of the listen queue counters.
type DropCounters struct {
	Known     bool
	Interval  time.Duration
	Overflows [2]uint64
	Drops     [2]uint64
}

// Baton is one supervisor: its control socket, its status when it answered
// and its listener history (CONTROL.listeners).
type Baton struct {
	Control string
	Pid     int // from the status, or the process found; 0 unknown
	Status  *api.Status
	Err     string // why there is no status
	History []api.ListenerRecord
	// Orphans are generations listed in CONTROL.state whose processes live
	// on while no baton answers.
	Orphans []Orphan
}

// Orphan is a generation a dead baton left behind.
type Orphan struct {
	Gen, Pid int
	Start    time.Time
	Ports    []int // of the listeners the state file lists
}

// ProxyConfig is one proxy configuration in use: the files the proxy reads
// (text by path, in reading order) and who runs it.
type ProxyConfig struct {
	Program string // haproxy | nginx
	Files   []ConfigFile
	// Globals are nginx -g directives.
	Globals string
	Pids    []int
	// Ports are the TCP ports its processes (or its baton) listen on.
	Ports []int
	// Baton is the control socket of the baton that runs it ("" if none).
	Baton string
	// Version is the running nginx's version ("1.22.1"), read from its
	// executable; "" when unknown or not nginx.
	Version string
}

// ConfigFile is one file of a configuration.
type ConfigFile struct {
	Path, Text string
}

// Main is the first file's path.
func (c ProxyConfig) Main() string {
	if len(c.Files) == 0 {
		return "(no file)"
	}
	return c.Files[0].Path
}

// programOf names the program a process runs, from its comm or argv[0].
func programOf(comm string, cmdline []string) string {
	for _, p := range []string{"haproxy", "nginx", "baton"} {
		if comm == p {
			return p
		}
	}
	switch {
	case len(cmdline) > 1 && filepath.Base(cmdline[0]) == "baton":
		return "baton"
	case len(cmdline) == 1 && strings.HasPrefix(cmdline[0], "nginx: "): // a master's or worker's title
		return "nginx"
	}
	return ""
}

// proc returns the process with pid, or a placeholder.
func (f *Facts) proc(pid int) *Process {
	if p, ok := f.Procs[pid]; ok {
		return p
	}
	return &Process{Pid: pid}
}

// sortedProcs returns the processes in pid order.
func (f *Facts) sortedProcs() []*Process {
	out := make([]*Process, 0, len(f.Procs))
	for _, p := range f.Procs {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out
}

// ancestorOf reports whether a is an ancestor of p among the known processes.
func (f *Facts) ancestorOf(a, p *Process) bool {
	seen := 0
	for cur := p; cur != nil && seen < 64; seen++ {
		parent, ok := f.Procs[cur.PPid]
		if !ok {
			return false
		}
		if parent.Pid == a.Pid {
			return true
		}
		cur = parent
	}
	return false
}

// portOf is an address's port as an int.
func portOf(a netip.AddrPort) int { return int(a.Port()) }

// clock formats a time for findings.
func clock(t time.Time) string { return t.Format("2006-01-02 15:04:05") }

// human rounds a duration for findings: "24h", "1h30m", "5m", "2s", "200ms".
func human(d time.Duration) string {
	switch {
	case d >= time.Hour:
		d = d.Round(time.Minute)
	case d >= time.Second:
		d = d.Round(time.Second)
	default:
		return d.Round(time.Millisecond).String()
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// portsOf lists the TCP ports the processes listen on, and those of the
// baton whose generations they belong to.
func (f *Facts) portsOf(procs []*Process) []int {
	var out []int
	add := func(p int) {
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	inodes := map[uint64]netip.AddrPort{}
	for _, l := range f.Listeners {
		inodes[l.Inode] = l.Addr
	}
	for _, p := range procs {
		for _, in := range p.Listening {
			if a, ok := inodes[in]; ok {
				add(portOf(a))
			}
		}
		if p.BatonControl == "" {
			continue
		}
		for _, b := range f.Batons {
			if b.Control == p.BatonControl {
				for _, port := range batonPorts(b.Status) {
					add(port)
				}
			}
		}
	}
	sort.Ints(out)
	return out
}
