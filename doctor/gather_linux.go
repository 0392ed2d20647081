package doctor

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor"
)

// Gather reads the host's facts once: the listen counters, the listening
// TCP sockets and the unconnected UDP sockets (sock_diag), every process
// (/proc), the sysctls, the TIME_WAIT count, each baton's status and
// history, the proxies' configurations, and the listen counters again
// DropsInterval after the first reading.
func Gather(ctx context.Context, o Options) (*Facts, error) {
	o = o.WithDefaults()
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return nil, fmt.Errorf("open /proc: %w", err)
	}
	f := &Facts{Now: time.Now(), TimeWait: -1}
	o0, d0, countersErr := listenCounters(fs)
	firstAt := time.Now()

	socks, err := fdpass.ListeningTCP()
	if err != nil {
		return nil, fmt.Errorf("list listening sockets: %w", err)
	}
	f.Listeners = make([]Listener, len(socks))
	byInode := make(map[uint64]*Listener, len(socks))
	for i, s := range socks {
		f.Listeners[i] = Listener{Addr: s.Addr, Inode: s.Inode, Queue: s.Queue, Backlog: s.Backlog}
		byInode[s.Inode] = &f.Listeners[i]
	}

	f.UDPSockets = udpSockets(fs, f)
	udpByInode := make(map[uint64]*UDPSocket, len(f.UDPSockets))
	for i := range f.UDPSockets {
		udpByInode[f.UDPSockets[i].Inode] = &f.UDPSockets[i]
	}

	limits, err := proc.NewFS()
	if err != nil {
		return nil, fmt.Errorf("open /proc: %w", err)
	}
	st, err := fs.Stat()
	if err != nil {
		return nil, fmt.Errorf("read /proc/stat: %w", err)
	}
	scan := &procScan{fs: fs, limits: limits, boot: time.Unix(int64(st.BootTime), 0)}
	f.Procs, f.Scanned, f.Unreadable, err = scan.scan(byInode, udpByInode)
	if err != nil {
		return nil, fmt.Errorf("read processes: %w", err)
	}
	if f.Unreadable > 0 {
		f.note("the descriptor tables of %d processes could not be read (run as root to see every holder of a listening socket)", f.Unreadable)
	}
	f.Sys = readSysctls(fs, f)
	f.TimeWait = timeWait(fs, f)
	f.Batons = gatherBatons(ctx, fs, f, o, scan)
	f.Configs = gatherConfigs(fs, f)

	if countersErr != nil {
		f.note("listen counters (/proc/net/netstat): %v", countersErr)
		return f, nil
	}
	t := time.NewTimer(time.Until(firstAt.Add(o.DropsInterval)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	o1, d1, err := listenCounters(fs)
	if err != nil {
		f.note("listen counters (/proc/net/netstat): %v", err)
		return f, nil
	}
	f.Drops = DropCounters{Known: true, Interval: time.Since(firstAt), Overflows: [2]uint64{o0, o1}, Drops: [2]uint64{d0, d1}}
	return f, nil
}

// udpSockets lists the bound, unconnected UDP sockets through sock_diag
// (the kernel filters by state: the connected sockets of a busy QUIC
// listener cost nothing), or from /proc/net/udp and udp6 where the kernel
// has no udp_diag.
func udpSockets(fs procfs.FS, f *Facts) []UDPSocket {
	var out []UDPSocket
	socks, err := fdpass.DiagUDP(1 << fdpass.TCPClose)
	if err == nil {
		for _, s := range socks {
			out = append(out, UDPSocket{Addr: s.Addr, Inode: s.Inode, UID: s.UID})
		}
		return out
	}
	return udpFromProcNet(fs, f, err)
}

// udpFromProcNet reads the unconnected UDP sockets from /proc/net/udp and
// udp6 (state 07; a connected socket is 01), noting why sock_diag could
// not (diagErr).
func udpFromProcNet(fs procfs.FS, f *Facts, diagErr error) []UDPSocket {
	var out []UDPSocket
	for _, v6 := range []bool{false, true} {
		read, name := fs.NetUDP, "/proc/net/udp"
		if v6 {
			read, name = fs.NetUDP6, "/proc/net/udp6"
		}
		lines, rerr := read()
		if rerr != nil {
			f.note("UDP sockets not checked: sock_diag: %v; %s: %v", diagErr, name, rerr)
			continue
		}
		for _, l := range lines {
			if l.St != fdpass.TCPClose || l.Inode == 0 {
				continue
			}
			var ip netip.Addr
			var ok bool
			if v6 {
				ip, ok = netip.AddrFromSlice(l.LocalAddr.To16())
			} else {
				ip, ok = netip.AddrFromSlice(l.LocalAddr.To4())
			}
			if !ok {
				continue
			}
			out = append(out, UDPSocket{Addr: netip.AddrPortFrom(ip, uint16(l.LocalPort)), Inode: l.Inode, UID: uint32(l.UID)})
		}
	}
	return out
}

func (f *Facts) note(format string, args ...any) {
	f.Notes = append(f.Notes, fmt.Sprintf(format, args...))
}

// listenCounters reads TcpExt ListenOverflows and ListenDrops of this
// network namespace (/proc/self/net/netstat).
func listenCounters(fs procfs.FS) (overflows, drops uint64, err error) {
	self, err := fs.Self()
	if err != nil {
		return 0, 0, err
	}
	ns, err := self.Netstat()
	if err != nil {
		return 0, 0, err
	}
	if ns.ListenOverflows == nil || ns.ListenDrops == nil {
		return 0, 0, fmt.Errorf("no ListenOverflows/ListenDrops in TcpExt")
	}
	return uint64(*ns.ListenOverflows), uint64(*ns.ListenDrops), nil
}

func readSysctls(fs procfs.FS, f *Facts) Sysctls {
	var s Sysctls
	for _, x := range []struct {
		name string
		to   *int
	}{
		{"net.core.somaxconn", &s.Somaxconn},
		{"net.ipv4.tcp_max_syn_backlog", &s.MaxSynBacklog},
		{"net.ipv4.tcp_syncookies", &s.Syncookies},
		{"net.ipv4.tcp_max_tw_buckets", &s.MaxTWBuckets},
	} {
		v, err := fs.SysctlInts(x.name)
		if err != nil || len(v) != 1 {
			f.note("sysctl %s unreadable: %v", x.name, err)
			if x.name == "net.ipv4.tcp_syncookies" {
				s.Syncookies = -1 // unknown: do not assume they are off
			}
			continue
		}
		*x.to = v[0]
	}
	return s
}

// timeWait is the host's TIME_WAIT count from /proc/net/sockstat: the very
// number the kernel compares with tcp_max_tw_buckets (IPv4 and IPv6), read
// in constant time however many such sockets exist.
func timeWait(fs procfs.FS, f *Facts) int {
	st, err := fs.NetSockstat()
	if err != nil {
		f.note("/proc/net/sockstat: %v", err)
		return -1
	}
	for _, p := range st.Protocols {
		if p.Protocol == "TCP" && p.TW != nil {
			return *p.TW
		}
	}
	f.note("/proc/net/sockstat: no TCP tw count")
	return -1
}

// gatherBatons queries every baton named in o.ControlPaths, or found
// running, at once.
func gatherBatons(ctx context.Context, fs procfs.FS, f *Facts, o Options, scan *procScan) []Baton {
	pidOf := map[string]int{}
	paths := o.ControlPaths
	if len(paths) == 0 {
		pidOf = discoverBatons(f.Procs, func(pid int) procInfo {
			info := procInfo{env: func() []string { return nil }}
			p, err := fs.Proc(pid)
			if err != nil {
				return info
			}
			info.cwd, _ = p.Cwd()
			info.env = func() []string {
				env, _ := p.Environ()
				return env
			}
			return info
		})
		for p := range pidOf {
			paths = append(paths, p)
		}
		sort.Strings(paths)
	}
	out := make([]Baton, len(paths))
	var wg sync.WaitGroup
	for i, path := range paths {
		out[i] = Baton{Control: path, Pid: pidOf[path]}
		wg.Add(1)
		go func(b *Baton) {
			defer wg.Done()
			st, err := queryStatus(ctx, b.Control, o.StatusTimeout)
			if err != nil {
				b.Err = err.Error()
				return
			}
			b.Status, b.Pid = st, st.Pid
		}(&out[i])
	}
	wg.Wait()
	for i := range out {
		b := &out[i]
		owner := stateOwner(fs, b.Pid, b.Control)
		if b.Status == nil {
			f.note("no baton answers on %s: %s", b.Control, b.Err)
			var h *supervisor.Handover
			ok, err := checkRegular(b.Control+".state", maxBatonState)
			if ok {
				h, err = supervisor.ReadStateOwnedBy(b.Control+".state", owner)
			}
			if err != nil {
				f.note("%s.state: %v", b.Control, err)
			}
			b.Orphans = orphans(h, f.Procs)
		}
		var hist []api.ListenerRecord
		ok, err := checkRegular(b.Control+".listeners", maxBatonState)
		if ok {
			hist, err = supervisor.ReadListenerHistoryOwnedBy(b.Control+".listeners", owner)
		}
		if err != nil {
			f.note("%s.listeners: %v", b.Control, err)
		}
		b.History = hist
		markGenerations(b, f.Procs)
	}
	for _, p := range f.Procs {
		if p.Gen != 0 {
			scan.details(p)
		}
	}
	return out
}

// stateOwner is the uid a baton's state and history files must belong to:
// the baton's, not doctor's (root, to see every process): the effective
// uid of the baton process pid; with none known (a baton that died), the
// owner of its lock file CONTROL.lock, which that baton created; else
// doctor's own.
func stateOwner(fs procfs.FS, pid int, control string) int {
	if pid > 0 {
		if p, err := fs.Proc(pid); err == nil {
			if st, err := p.NewStatus(); err == nil {
				return int(st.UIDs[1])
			}
		}
	}
	var st unix.Stat_t
	if unix.Lstat(control+".lock", &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		return int(st.Uid)
	}
	return os.Geteuid()
}

// gatherConfigs reads the configuration of every baton-supervised proxy
// (from baton's command, the files the next reload reads) and of every
// other HAProxy or nginx leader process (from its command line).
func gatherConfigs(fs procfs.FS, f *Facts) []ProxyConfig {
	cwdOf := func(pid int) string {
		p, err := fs.Proc(pid)
		if err != nil {
			return ""
		}
		cwd, _ := p.Cwd()
		return cwd
	}
	var all []ProxyConfig
	for _, b := range f.Batons {
		if b.Status == nil || len(b.Status.Command) == 0 {
			continue
		}
		pids := []int{b.Status.Pid}
		for _, g := range b.Status.Generations {
			if g.Pid != 0 {
				pids = append(pids, g.Pid)
			}
		}
		if c, ok := readConfig(f, b.Status.Proxy, b.Status.Command, cwdOf(b.Status.Pid), pids); ok {
			c.Baton, c.Ports = b.Control, batonPorts(b.Status)
			all = append(all, c)
		}
	}
	for _, p := range f.sortedProcs() {
		if !p.Proxy() || p.Gen != 0 || leader(f, p) != p || len(p.Cmdline) == 0 {
			continue
		}
		if c, ok := readConfig(f, p.Program, p.Cmdline, cwdOf(p.Pid), []int{p.Pid}); ok {
			var tree []*Process
			for _, q := range f.Procs {
				if q.Program == p.Program && leader(f, q) == p {
					tree = append(tree, q)
				}
			}
			c.Ports = f.portsOf(tree)
			all = append(all, c)
		}
	}
	return mergeConfigs(all)
}

// readConfig reads the configuration files a proxy command line names.
func readConfig(f *Facts, program string, cmdline []string, cwd string, pids []int) (ProxyConfig, bool) {
	c := ProxyConfig{Program: program, Pids: pids}
	var err error
	switch program {
	case "haproxy":
		paths := haproxyPaths(cmdline[1:], cwd)
		if len(paths) == 0 {
			return c, false
		}
		for _, p := range paths {
			if !filepath.IsAbs(p) {
				f.note("haproxy pid %d: configuration not checked: relative path %s and its working directory is unreadable (run as root)", pids[0], p)
				return c, false
			}
		}
		c.Files, err = readHAProxy(paths, configReader())
	case "nginx":
		conf, globals, ok := nginxArgs(cmdline)
		if !ok {
			f.note("nginx pid %d: relative -c %s without -p: configuration not checked", pids[0], conf)
			return c, false
		}
		c.Globals = globals
		c.Files, err = readNginx(conf, configReader())
		c.Version = nginxExeVersion(pids)
	default:
		return c, false
	}
	if err != nil {
		f.note("%s pid %d: configuration not checked: %v", program, pids[0], err)
		return c, false
	}
	return c, true
}
