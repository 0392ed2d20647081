package doctor

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// udpGroups groups the unconnected UDP sockets by exact address, in
// address order, each group in inode order.
func udpGroups(f *Facts) ([]netip.AddrPort, map[netip.AddrPort][]*UDPSocket) {
	by := map[netip.AddrPort][]*UDPSocket{}
	for i := range f.UDPSockets {
		u := &f.UDPSockets[i]
		by[u.Addr] = append(by[u.Addr], u)
	}
	addrs := make([]netip.AddrPort, 0, len(by))
	for a, us := range by {
		addrs = append(addrs, a)
		sort.Slice(us, func(i, j int) bool { return us[i].Inode < us[j].Inode })
	}
	sort.Slice(addrs, func(i, j int) bool { return addrs[i].Compare(addrs[j]) < 0 })
	return addrs, by
}

// udpHolders lists the processes holding any of us, in pid order.
func udpHolders(f *Facts, us []*UDPSocket) []*Process {
	var pids []int
	for _, u := range us {
		for _, p := range u.Holders {
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

// batonHeld reports whether a baton process holds u.
func batonHeld(f *Facts, u *UDPSocket) bool {
	return slices.ContainsFunc(u.Holders, func(pid int) bool { return f.proc(pid).Program == "baton" })
}

// batonOwning is a baton process (the lowest pid) that holds every socket
// of us, or nil.
func batonOwning(f *Facts, us []*UDPSocket) *Process {
	for _, p := range udpHolders(f, us) {
		if p.Program != "baton" {
			continue
		}
		if !slices.ContainsFunc(us, func(u *UDPSocket) bool { return !slices.Contains(u.Holders, p.Pid) }) {
			return p
		}
	}
	return nil
}

// describeUDP is "inode 123 (owner uid 0) held by pid 12 haproxy (started
// ...), ..." for each socket, joined by "; ".
func describeUDP(f *Facts, us []*UDPSocket) string {
	parts := make([]string, len(us))
	for i, u := range us {
		hs := udpHolders(f, []*UDPSocket{u})
		parts[i] = fmt.Sprintf("inode %d (owner uid %d) %s%s", u.Inode, u.UID, describeHolders(hs), generationsOf(hs))
	}
	return strings.Join(parts, "; ")
}

// generationsOf is " (pid 21: generation 3 of baton /run/baton.sock)"
// for the holders that belong to a baton's generation, or "".
func generationsOf(hs []*Process) string {
	var parts []string
	for _, p := range hs {
		if p.Gen != 0 {
			parts = append(parts, fmt.Sprintf("pid %d: generation %d of baton %s", p.Pid, p.Gen, p.BatonControl))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func inodesOfUDP(us []*UDPSocket) []uint64 {
	out := make([]uint64, len(us))
	for i, u := range us {
		out[i] = u.Inode
	}
	return out
}

// checkUDPReuseport: more than one unconnected UDP socket on one address is
// a SO_REUSEPORT group (QUIC listeners, for a proxy). A group one baton
// process holds entirely is the one baton creates for a QUIC address, one
// member per generation, whose packets it steers: information only. An
// address where baton holds a socket and something else holds another is
// left to checkUDPForeign. Any other group is a warning, critical when its
// holders include superseded proxy processes.
func checkUDPReuseport(f *Facts, _ Options) []Finding {
	var out []Finding
	addrs, by := udpGroups(f)
	for _, a := range addrs {
		us := by[a]
		if len(us) < 2 {
			continue
		}
		all := udpHolders(f, us)
		data := map[string]any{"address": a.String(), "inodes": inodesOfUDP(us), "holders": pidsOf(all)}
		if b := batonOwning(f, us); b != nil {
			data["baton"] = b.Pid
			out = append(out, Finding{
				Check: "udp-reuseport-group", Severity: Info, Subject: a.String(),
				Saw: fmt.Sprintf("%d unconnected UDP sockets on %s, every one held by %s: a QUIC reuseport group baton created, "+
					"one member per generation (%s)", len(us), a, b.Label(), describeUDP(f, us)),
				Why: "baton gives each proxy generation a socket of its own in the group and steers the packets of each " +
					"QUIC connection to the generation that owns it, so the group is expected",
				Fix:   "nothing; `baton status` lists the generations, and a member is closed once its generation has exited",
				Ports: []int{portOf(a)}, Pids: pidsOf(all), Data: data,
			})
			continue
		}
		if slices.ContainsFunc(us, func(u *UDPSocket) bool { return batonHeld(f, u) }) &&
			slices.ContainsFunc(us, func(u *UDPSocket) bool { return !batonHeld(f, u) }) {
			continue // udp-foreign-socket names the sockets that are not baton's
		}
		sev := Warning
		stale := staleProxies(f, all)
		if len(stale) > 0 {
			sev = Critical
		}
		fix := "keep the QUIC address in one place: run the proxy under baton (`baton run -- haproxy -f /etc/haproxy/haproxy.cfg`), " +
			"which binds the address itself and gives each generation its member of the group; do not reload with " +
			"`haproxy -sf` on QUIC listeners, and remove `reuseport` from nginx `listen ... quic` lines for this address"
		if len(stale) > 0 {
			fix = "stop the old processes gracefully now (" + gracefulStops(stale) + "), then " + fix
		}
		saw := fmt.Sprintf("%d unconnected UDP sockets on %s (a SO_REUSEPORT group; for a proxy, QUIC listeners), not baton's: %s",
			len(us), a, describeUDP(f, us))
		why := "each start of an unsupervised proxy opened its own members, and the kernel spreads new QUIC connections and " +
			"their packets over every member by a hash of the client's address, so an old process answers new clients " +
			"with the old configuration and, whenever a member comes or goes, receives packets of connections it does " +
			"not know, which then fail"
		if !slices.ContainsFunc(us, func(u *UDPSocket) bool { return !batonHeld(f, u) }) {
			saw = fmt.Sprintf("%d unconnected UDP sockets on %s (a SO_REUSEPORT group), each held by a baton but no baton holds "+
				"them all: two batons bound the same address: %s", len(us), a, describeUDP(f, us))
			why = "each baton steers packets only among its own members while the kernel spreads new QUIC connections over " +
				"the members of both, so clients reach either baton's proxies at random and lose their connections when " +
				"the other baton's members change"
			fix = "run one baton per address: stop one of them (`baton stop --control PATH`) or give it another address"
		}
		out = append(out, Finding{
			Check: "udp-reuseport-group", Severity: sev, Subject: a.String(),
			Saw: saw, Why: why, Fix: fix,
			Ports: []int{portOf(a)}, Pids: pidsOf(all), Data: data,
		})
	}
	return out
}

// checkUDPForeign: on an address where a baton process holds an
// unconnected UDP socket, an unconnected UDP socket that no baton process
// holds: another process (or a proxy generation that bound its own
// listener instead of taking baton's) receives a share of the address's
// packets. One finding per address, naming each such socket by inode and
// owner.
func checkUDPForeign(f *Facts, _ Options) []Finding {
	var out []Finding
	addrs, by := udpGroups(f)
	for _, a := range addrs {
		var batons, foreign []*UDPSocket
		for _, u := range by[a] {
			if batonHeld(f, u) {
				batons = append(batons, u)
			} else {
				foreign = append(foreign, u)
			}
		}
		if len(batons) == 0 || len(foreign) == 0 {
			continue
		}
		var owners []uint32
		for _, u := range foreign {
			if !slices.Contains(owners, u.UID) {
				owners = append(owners, u.UID)
			}
		}
		bs := udpHolders(f, batons)
		var batonPids []string
		for _, p := range bs {
			if p.Program == "baton" {
				batonPids = append(batonPids, p.Label())
			}
		}
		what := "a foreign UDP socket"
		if len(foreign) > 1 {
			what = fmt.Sprintf("%d foreign UDP sockets", len(foreign))
		}
		all := udpHolders(f, foreign)
		out = append(out, Finding{
			Check: "udp-foreign-socket", Severity: Warning, Subject: a.String(),
			Saw: fmt.Sprintf("%s on a baton address: %s, held by no baton; %s holds the other unconnected UDP socket(s) on %s (inodes %s)",
				what, describeUDP(f, foreign), strings.Join(batonPids, ", "), a, joinInodes(inodesOfUDP(batons))),
			Why: "the kernel gives a datagram to the first best-matching socket bound to the address, and a socket outside " +
				"baton's group can be that socket: then it receives the packets, new connections included, outside baton's " +
				"steering, and its clients lose their connections when it closes",
			Fix: fmt.Sprintf("find who bound it (as root: `ss -uapn 'sport = :%d'`) and stop it, or move it to another address; "+
				"a proxy under baton must take its QUIC listener from baton (HAProxy `bind quic4@ADDR`, nginx `listen ADDR quic` "+
				"without `reuseport`) instead of binding its own", a.Port()),
			Ports: []int{portOf(a)}, Pids: pidsOf(all),
			Data: map[string]any{"address": a.String(), "inodes": inodesOfUDP(foreign), "owners": owners,
				"holders": pidsOf(all), "baton_inodes": inodesOfUDP(batons)},
		})
	}
	return out
}

func joinInodes(in []uint64) string {
	parts := make([]string, len(in))
	for i, n := range in {
		parts[i] = fmt.Sprint(n)
	}
	return strings.Join(parts, ", ")
}
