package doctor

import (
	"fmt"
	"sort"
	"strings"

	"github.com/batonproxy/baton/internal/proc"
)

const nofileWhy = "a proxy out of file descriptors can neither accept connections nor open upstream ones, so " +
	"requests fail (nginx answers 500, \"too many open files\") and the load balancer's health check fails, taking " +
	"the backend in and out of the pool"

const nofileFix = "set the limit where the proxy is started instead of inheriting it: `baton run --rlimit " +
	"nofile=65536:65536 ...` (baton's default: the host's hard limit, at most 1048576), `LimitNOFILE=65536` in a " +
	"systemd unit, or `ulimit -n 65536` before exec in a wrapper script; nginx workers also take " +
	"`worker_rlimit_nofile 65536;`; the limit applies to processes started after the change"

// nofileTargets are the processes whose limits matter: proxies and the
// processes of baton generations, with readable limits, in pid order.
func nofileTargets(f *Facts) []*Process {
	var out []*Process
	for _, p := range f.sortedProcs() {
		if (p.Proxy() || p.Gen != 0) && p.LimitsKnown {
			out = append(out, p)
		}
	}
	return out
}

// leader is the topmost process of p's program in p's ancestry (the
// master of a worker, the leader of a baton generation).
func leader(f *Facts, p *Process) *Process {
	cur := p
	for range 64 {
		parent, ok := f.Procs[cur.PPid]
		if !ok || parent.Program != p.Program || p.Program == "" {
			return cur
		}
		cur = parent
	}
	return cur
}

func limitString(v uint64) string {
	if v == proc.Unlimited {
		return "unlimited"
	}
	return fmt.Sprint(v)
}

// checkNofileLow: a proxy whose soft NOFILE is at or below NofileCritical
// (critical) or below NofileLow (warning); one finding per leader and
// limit, listing its processes.
func checkNofileLow(f *Facts, o Options) []Finding {
	type key struct {
		leader int
		soft   uint64
	}
	groups := map[key][]*Process{}
	var keys []key
	for _, p := range nofileTargets(f) {
		if p.Nofile.Soft >= o.NofileLow {
			continue
		}
		k := key{leader(f, p).Pid, p.Nofile.Soft}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], p)
	}
	var out []Finding
	for _, k := range keys {
		ps := groups[k]
		l := f.proc(k.leader)
		sev := Warning
		if k.soft <= o.NofileCritical {
			sev = Critical
		}
		var who []string
		for _, p := range ps {
			open := "? open"
			if p.Fds >= 0 {
				open = fmt.Sprintf("%d open", p.Fds)
			}
			who = append(who, fmt.Sprintf("%s (hard %s, %s)", p.Label(), limitString(p.Nofile.Hard), open))
		}
		out = append(out, Finding{
			Check: "nofile-low", Severity: sev, Subject: l.Label(),
			Saw: fmt.Sprintf("soft NOFILE %d (below %d) in %s", k.soft, o.NofileLow, strings.Join(who, ", ")),
			Why: nofileWhy, Fix: nofileFix, Pids: pidsOf(ps), Ports: f.portsOf(ps),
			Data: map[string]any{"soft": k.soft, "pids": pidsOf(ps), "leader": k.leader},
		})
	}
	return out
}

// checkNofileMismatch: sibling proxy processes (the same program under the
// same parent, or under the same baton) with different soft NOFILE limits:
// one of them was started another way and inherited another limit.
func checkNofileMismatch(f *Facts, _ Options) []Finding {
	groups := map[string][]*Process{}
	var keys []string
	for _, p := range nofileTargets(f) {
		role := "leader"
		if leader(f, p) != p {
			role = "child"
		}
		scope := fmt.Sprintf("parent pid %d", p.PPid)
		if p.BatonControl != "" {
			scope = "baton " + p.BatonControl
		}
		name := p.Program
		if name == "" {
			name = p.Comm
		}
		k := fmt.Sprintf("%s %s processes under %s", name, role, scope)
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], p)
	}
	sort.Strings(keys)
	var out []Finding
	for _, k := range keys {
		ps := groups[k]
		limits := map[uint64][]string{}
		for _, p := range ps {
			limits[p.Nofile.Soft] = append(limits[p.Nofile.Soft], p.Label())
		}
		if len(limits) < 2 {
			continue
		}
		var softs []uint64
		for s := range limits {
			softs = append(softs, s)
		}
		sort.Slice(softs, func(i, j int) bool { return softs[i] < softs[j] })
		var parts []string
		for _, s := range softs {
			parts = append(parts, fmt.Sprintf("%s: %s", limitString(s), strings.Join(limits[s], ", ")))
		}
		out = append(out, Finding{
			Check: "nofile-mismatch", Severity: Warning, Subject: k,
			Saw: fmt.Sprintf("%d different soft NOFILE limits among %s: %s", len(softs), k, strings.Join(parts, "; ")),
			Why: "processes that should be alike are not: the one with the lower limit was started another way (a " +
				"wrapper, a manual restart) and will run out of file descriptors first, failing accepts and health checks",
			Fix:   nofileFix,
			Pids:  pidsOf(ps),
			Ports: f.portsOf(ps),
			Data:  map[string]any{"group": k, "soft_limits": softs},
		})
	}
	return out
}

// checkFdUsage: a proxy with more open descriptors than FdUsage of its
// soft limit (critical from 95 %).
func checkFdUsage(f *Facts, o Options) []Finding {
	var out []Finding
	for _, p := range nofileTargets(f) {
		if p.Fds < 0 || p.Nofile.Soft == 0 || p.Nofile.Soft == proc.Unlimited {
			continue
		}
		ratio := float64(p.Fds) / float64(p.Nofile.Soft)
		if ratio <= o.FdUsage {
			continue
		}
		sev := Warning
		if ratio >= 0.95 {
			sev = Critical
		}
		out = append(out, Finding{
			Check: "fd-usage", Severity: sev, Subject: p.Label(),
			Saw: fmt.Sprintf("%s has %d descriptors open, %.0f %% of its soft NOFILE %d", p.Label(), p.Fds, 100*ratio, p.Nofile.Soft),
			Why: nofileWhy,
			Fix: "raise the limit (" + nofileFix + "), or keep the proxy's connection limits below it (HAProxy " +
				"`maxconn` in global, nginx `worker_connections` in events)",
			Pids:  []int{p.Pid},
			Ports: f.portsOf([]*Process{p}),
			Data:  map[string]any{"pid": p.Pid, "open": p.Fds, "soft": p.Nofile.Soft, "ratio": ratio},
		})
	}
	return out
}
