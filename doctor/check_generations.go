package doctor

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/batonproxy/baton/api"
)

// oldStates are the states of a generation that was told to go.
var oldStates = map[string]bool{"draining": true, "stopping": true, "killed": true}

// batonPorts are the TCP ports of a baton's listeners.
func batonPorts(st *api.Status) []int {
	var out []int
	if st == nil {
		return nil
	}
	for _, l := range st.Listeners {
		if ap, err := netip.ParseAddrPort(l.Addr); err == nil && !slices.Contains(out, int(ap.Port())) {
			out = append(out, int(ap.Port()))
		}
	}
	return out
}

// checkOldGenerations: a baton generation that has been draining (or
// stopping) for longer than OldAfter.
func checkOldGenerations(f *Facts, o Options) []Finding {
	var out []Finding
	for _, b := range f.Batons {
		if b.Status == nil {
			continue
		}
		for _, g := range b.Status.Generations {
			if !oldStates[g.State] {
				continue
			}
			since := g.DrainedAt
			if since == nil {
				since = g.StartedAt
			}
			if since == nil || f.Now.Sub(*since) < o.OldAfter {
				continue
			}
			out = append(out, oldGeneration(f, b, g, *since))
		}
	}
	return out
}

func oldGeneration(f *Facts, b Baton, g api.GenStatus, start time.Time) Finding {
	pids := []int{g.Pid, b.Status.Pid}
	var listening []string
	for _, ps := range g.Processes {
		if !slices.Contains(pids, ps.Pid) {
			pids = append(pids, ps.Pid)
		}
		if p, ok := f.Procs[ps.Pid]; ok && len(p.Listening) > 0 {
			listening = append(listening, p.Label())
		}
	}
	saw := fmt.Sprintf("generation %d (pid %d) of the baton on %s has been %s for %s (since %s), with %d connections and %d processes",
		g.Gen, g.Pid, b.Control, g.State, human(f.Now.Sub(start)), clock(start), g.Connections, len(g.Processes))
	if g.Deadline != nil {
		saw += fmt.Sprintf("; next: %s at %s", g.DeadlineAction, clock(*g.Deadline))
	}
	sev := Warning
	if len(listening) > 0 {
		sev = Critical
		saw += "; it still holds listening sockets: " + strings.Join(listening, ", ")
	}
	return Finding{
		Check: "old-generation", Severity: sev,
		Subject: fmt.Sprintf("baton %s generation %d (pid %d)", b.Control, g.Gen, g.Pid),
		Saw:     saw,
		Why: "a generation that does not finish its drain keeps its clients (long-lived and idle keep-alive connections) " +
			"on the old configuration and holds its memory and descriptors",
		Fix: fmt.Sprintf("`baton status -c %s` shows its connections; give the proxy a drain limit of its own, below "+
			"baton's --drain-timeout: `hard-stop-after 4m` in HAProxy's global section (and `timeout http-keep-alive 10s` "+
			"in defaults), or `worker_shutdown_timeout 4m;` in nginx's main context; or start baton with a shorter "+
			"`--drain-timeout`", b.Control),
		Ports: batonPorts(b.Status), Pids: pids,
		Data: map[string]any{"control": b.Control, "generation": g.Gen, "pid": g.Pid, "state": g.State,
			"since": start, "connections": g.Connections, "deadline": g.Deadline},
	}
}

// checkOrphans: generations a dead baton left (CONTROL.state lists them,
// they still run, nobody answers on the control socket).
func checkOrphans(f *Facts, _ Options) []Finding {
	var out []Finding
	for _, b := range f.Batons {
		for _, g := range b.Orphans {
			out = append(out, Finding{
				Check: "orphan-generation", Severity: Warning,
				Subject: fmt.Sprintf("baton %s generation %d (pid %d)", b.Control, g.Gen, g.Pid),
				Saw: fmt.Sprintf("no baton answers on %s (%s), but generation %d (pid %d, started %s) it recorded in %s.state still runs",
					b.Control, b.Err, g.Gen, g.Pid, clock(g.Start), b.Control),
				Why: "nothing supervises it: a reload cannot replace it, its drain has no deadline, and if it crashes " +
					"nothing starts a replacement",
				Fix: fmt.Sprintf("start baton again with the same control socket (the same `baton run --control %s ...` "+
					"command, or `systemctl start` of its unit): it adopts the running generations and takes their "+
					"listening sockets back without closing them", b.Control),
				Pids: []int{g.Pid}, Ports: g.Ports,
				Data: map[string]any{"control": b.Control, "generation": g.Gen, "pid": g.Pid},
			})
		}
	}
	return out
}
