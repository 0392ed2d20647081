package doctor

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"
)

// sameGeneration is how close two start times must be for processes to
// belong to one start (a master and the workers it forks at once).
const sameGeneration = time.Second

// addrGroups groups the listening sockets by exact address, in address
// order.
func addrGroups(f *Facts) ([]netip.AddrPort, map[netip.AddrPort][]*Listener) {
	by := map[netip.AddrPort][]*Listener{}
	for i := range f.Listeners {
		l := &f.Listeners[i]
		by[l.Addr] = append(by[l.Addr], l)
	}
	addrs := make([]netip.AddrPort, 0, len(by))
	for a := range by {
		addrs = append(addrs, a)
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Compare(addrs[j]) < 0 })
	return addrs, by
}

// holders lists the processes holding any of ls, in pid order.
func holders(f *Facts, ls []*Listener) []*Process {
	var pids []int
	for _, l := range ls {
		for _, p := range l.Holders {
			if !slices.Contains(pids, p) {
				pids = append(pids, p)
			}
		}
	}
	sort.Ints(pids)
	out := make([]*Process, len(pids))
	for i, p := range pids {
		out[i] = f.proc(p)
	}
	return out
}

// staleProxies finds, among the holders of one address, the proxy
// processes that a newer start of the same program has superseded: a
// holder Q of the same program, neither its ancestor nor its descendant,
// started more than sameGeneration after it. For each it returns the
// newest such Q.
func staleProxies(f *Facts, hs []*Process) map[*Process]*Process {
	out := map[*Process]*Process{}
	for _, p := range hs {
		if !p.Proxy() {
			continue
		}
		for _, q := range hs {
			if q.Program != p.Program || q.Start.Sub(p.Start) <= sameGeneration ||
				f.ancestorOf(p, q) || f.ancestorOf(q, p) {
				continue
			}
			if cur, ok := out[p]; !ok || q.Start.After(cur.Start) {
				out[p] = q
			}
		}
	}
	return out
}

// describeHolders is "pid 12 haproxy (started 2026-01-02 15:04:05), ...".
func describeHolders(hs []*Process) string {
	if len(hs) == 0 {
		return "holders unknown (their /proc entries are not readable: run as root)"
	}
	parts := make([]string, len(hs))
	for i, p := range hs {
		if p.Start.IsZero() {
			parts[i] = p.Label()
		} else {
			parts[i] = fmt.Sprintf("%s (started %s)", p.Label(), clock(p.Start))
		}
	}
	return "held by " + strings.Join(parts, ", ")
}

func pidsOf(hs []*Process) []int {
	out := make([]int, len(hs))
	for i, p := range hs {
		out[i] = p.Pid
	}
	return out
}

// checkReuseport: more than one listening socket on one address is a
// SO_REUSEPORT group. The kernel spreads new connections over them; a
// socket held by an old process answers with the old config, and the
// connections queued on a socket are reset when it closes.
func checkReuseport(f *Facts, _ Options) []Finding {
	var out []Finding
	addrs, by := addrGroups(f)
	for _, a := range addrs {
		ls := by[a]
		if len(ls) < 2 {
			continue
		}
		var lines []string
		var inodes []uint64
		for _, l := range ls {
			hs := holders(f, []*Listener{l})
			lines = append(lines, fmt.Sprintf("inode %d %s", l.Inode, describeHolders(hs)))
			inodes = append(inodes, l.Inode)
		}
		all := holders(f, ls)
		sev := Warning
		stale := staleProxies(f, all)
		if len(stale) > 0 {
			sev = Critical
		}
		fix := "keep one socket per address: run the proxy under baton (`baton run -- haproxy -f /etc/haproxy/haproxy.cfg`), " +
			"which binds each address once and hands that same socket to every new proxy process; do not reload with " +
			"`haproxy -sf` on SO_REUSEPORT sockets, and remove `reuseport` from nginx `listen` lines for this address"
		if len(stale) > 0 {
			fix = "stop the old processes gracefully now (" + gracefulStops(stale) + "), then " + fix
		}
		out = append(out, Finding{
			Check: "reuseport-group", Severity: sev, Subject: a.String(),
			Saw: fmt.Sprintf("%d listening sockets on %s (a SO_REUSEPORT group): %s", len(ls), a, strings.Join(lines, "; ")),
			Why: "the kernel spreads new connections over every socket of the group, so a socket held by an old process " +
				"answers with the old configuration, and the connections waiting on a socket are reset when its holder closes it",
			Fix:   fix,
			Ports: []int{portOf(a)}, Pids: pidsOf(all),
			Data: map[string]any{"address": a.String(), "inodes": inodes, "holders": pidsOf(all)},
		})
	}
	return out
}

// gracefulStop is the command that stops proxy process p gracefully:
// SIGUSR1 for HAProxy (soft stop), SIGQUIT for nginx.
func gracefulStop(p *Process) string {
	switch p.Program {
	case "nginx":
		return fmt.Sprintf("`kill -QUIT %d`", p.Pid)
	case "haproxy":
		return fmt.Sprintf("`kill -USR1 %d`", p.Pid)
	}
	return fmt.Sprintf("`kill -TERM %d`", p.Pid)
}

// gracefulStops joins gracefulStop for the old processes of stale, in pid
// order.
func gracefulStops(stale map[*Process]*Process) string {
	var old []*Process
	for p := range stale {
		old = append(old, p)
	}
	sort.Slice(old, func(i, j int) bool { return old[i].Pid < old[j].Pid })
	parts := make([]string, len(old))
	for i, p := range old {
		parts[i] = gracefulStop(p)
	}
	return strings.Join(parts, ", ")
}

// checkOldProxies: an HAProxy or nginx process that still holds a
// listening socket for an address where a newer start of the same program
// listens too, for longer than OldAfter.
func checkOldProxies(f *Facts, o Options) []Finding {
	type hit struct {
		newer *Process
		addrs []netip.AddrPort
	}
	hits := map[*Process]*hit{}
	addrs, by := addrGroups(f)
	for _, a := range addrs {
		for p, q := range staleProxies(f, holders(f, by[a])) {
			if f.Now.Sub(q.Start) < o.OldAfter {
				continue // a reload in progress: the old one may still be closing
			}
			h := hits[p]
			if h == nil {
				h = &hit{newer: q}
				hits[p] = h
			}
			h.addrs = append(h.addrs, a)
		}
	}
	var out []Finding
	for p, h := range hits {
		var as []string
		var ports []int
		for _, a := range h.addrs {
			as = append(as, a.String())
			if !slices.Contains(ports, portOf(a)) {
				ports = append(ports, portOf(a))
			}
		}
		out = append(out, Finding{
			Check: "old-proxy-process", Severity: Critical, Subject: p.Label(),
			Saw: fmt.Sprintf("%s, started %s (%s ago), still holds the listening socket for %s; %s, started %s (%s ago), listens there too",
				p.Label(), clock(p.Start), human(f.Now.Sub(p.Start)), strings.Join(as, ", "),
				h.newer.Label(), clock(h.newer.Start), human(f.Now.Sub(h.newer.Start))),
			Why: "an old proxy process that still listens takes its share of new connections and answers them with the " +
				"configuration it started with, so some clients get old answers (a 503 for a backend added since, say)",
			Fix: fmt.Sprintf("stop it gracefully now: %s; then make your reload signal every old process, not only the "+
				"pid in the pid file, or run the proxy under baton: `baton reload` returns only once no old process "+
				"holds a listening socket", gracefulStop(p)),
			Ports: ports, Pids: []int{p.Pid, h.newer.Pid},
			Data: map[string]any{"pid": p.Pid, "program": p.Program, "started": p.Start, "newer_pid": h.newer.Pid,
				"newer_started": h.newer.Start, "addresses": as},
		})
	}
	return out
}
