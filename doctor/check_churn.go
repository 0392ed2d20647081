package doctor

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/batonproxy/baton/api"
)

// checkListenerChurn: an address whose socket baton re-created (a new inode
// in CONTROL.listeners) within ChurnWindow. Older re-creations are history:
// a reboot or a planned restart months ago must not fail doctor forever.
// Only a socket that served counts as closed: a failed first start (its
// records still pending) closed a socket no generation ever accepted on.
func checkListenerChurn(f *Facts, o Options) []Finding {
	var out []Finding
	for _, b := range f.Batons {
		var keys []string
		byKey := map[string][]api.ListenerRecord{}
		for _, r := range b.History {
			if _, ok := byKey[r.Key]; !ok {
				keys = append(keys, r.Key)
			}
			byKey[r.Key] = append(byKey[r.Key], r)
		}
		for _, k := range keys {
			if fd, ok := churn(f, o, b, byKey[k]); ok {
				out = append(out, fd)
			}
		}
	}
	return out
}

// churn reports the re-creations among one address's records (each record
// after the first is one: the history only grows when the inode changes),
// leaving out those that replaced a socket that never served.
func churn(f *Facts, o Options, b Baton, recs []api.ListenerRecord) (Finding, bool) {
	var steps []string
	var pids []int
	restarted := false
	n := 0
	for i := 1; i < len(recs); i++ {
		prev, r := recs[i-1], recs[i]
		if r.Inode == prev.Inode || prev.Pending || f.Now.Sub(r.At) > o.ChurnWindow {
			continue
		}
		n++
		if r.BatonPid != prev.BatonPid {
			restarted = true
		}
		for _, p := range []int{prev.BatonPid, r.BatonPid} {
			if !slices.Contains(pids, p) {
				pids = append(pids, p)
			}
		}
		steps = append(steps, fmt.Sprintf("inode %d (baton pid %d, %s) → inode %d (baton pid %d, %s)",
			prev.Inode, prev.BatonPid, clock(prev.At), r.Inode, r.BatonPid, clock(r.At)))
	}
	if n == 0 {
		return Finding{}, false
	}
	last := recs[len(recs)-1]
	sev := Warning
	if n > 1 {
		sev = Critical
	}
	fix := fmt.Sprintf("apply configuration changes with `baton reload -c %[1]s` and install a new baton binary with "+
		"`baton upgrade -c %[1]s`: both keep every socket; after a crash start baton again with the same `--control %[1]s`: "+
		"it takes the sockets back from the running proxies; do not stop and start baton (or `systemctl restart` its "+
		"unit) to apply a change", b.Control)
	if !restarted {
		fix = fmt.Sprintf("one baton process closed and re-created the socket of an address that stayed in the "+
			"configuration, which it must never do: report it as a bug in baton, with the output of "+
			"`baton status --json -c %[1]s` and the file %[1]s.listeners", b.Control)
	}
	var ports []int
	if ap, err := netip.ParseAddrPort(last.Addr); err == nil {
		ports = []int{int(ap.Port())}
	}
	return Finding{
		Check: "listener-churn", Severity: sev, Subject: fmt.Sprintf("%s (baton %s)", last.Addr, b.Control),
		Saw: fmt.Sprintf("the listening socket for %s was closed and re-created %d time(s) in the last %s: %s",
			last.Addr, n, human(o.ChurnWindow), strings.Join(steps, "; ")),
		Why: "closing a listening socket resets the connections waiting on it and refuses new ones until a new socket " +
			"listens, so an address that stays in the configuration must keep its socket",
		Fix:   fix,
		Ports: ports, Pids: pids,
		Data: map[string]any{"control": b.Control, "address": last.Addr, "key": last.Key, "recreated": n,
			"history": b.Control + ".listeners"},
	}, true
}
