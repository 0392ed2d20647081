package doctor

import (
	"context"
	"time"
)

// check is one named check: a pure function of the facts.
type check struct {
	name string
	run  func(*Facts, Options) []Finding
}

// checks lists every check, grouped by what goes wrong.
func checks() []check {
	return []check{
		// Old answers after a reload: SO_REUSEPORT groups (TCP, then UDP/QUIC), old proxies still listening.
		{"reuseport-group", checkReuseport},
		{"old-proxy-process", checkOldProxies},
		{"udp-reuseport-group", checkUDPReuseport},
		{"udp-foreign-socket", checkUDPForeign},
		{"old-generation", checkOldGenerations},
		{"orphan-generation", checkOrphans},
		// Running out of descriptors: NOFILE.
		{"nofile-low", checkNofileLow},
		{"nofile-mismatch", checkNofileMismatch},
		{"fd-usage", checkFdUsage},
		// Dropped connections: kernel limits and queues.
		{"time-wait", checkTimeWait},
		{"backlog-capped", checkBacklog},
		{"accept-queue", checkAcceptQueue},
		{"listen-drops", checkListenDrops},
		// Drains that cut clients off or never end.
		{"haproxy-keepalive", checkHAProxyKeepAlive},
		{"haproxy-hard-stop", checkHAProxyHardStop},
		{"nginx-shutdown-timeout", checkNginxShutdown},
		{"nginx-keepalive", checkNginxKeepAlive},
		// Re-created listeners.
		{"listener-churn", checkListenerChurn},
	}
}

// CheckNames lists the names of every check, in report order.
func CheckNames() []string {
	var out []string
	for _, c := range checks() {
		out = append(out, c.name)
	}
	return out
}

// Run gathers the host's facts and runs every check.
func Run(ctx context.Context, o Options) (Report, error) {
	start := time.Now()
	o = o.WithDefaults()
	f, err := Gather(ctx, o)
	if err != nil {
		return Report{}, err
	}
	r := Evaluate(f, o)
	r.Took = time.Since(start)
	r.TookMs = float64(r.Took.Microseconds()) / 1000
	return r, nil
}

// Evaluate runs every check on f and keeps the findings in the scope of
// o.Ports and o.Pids, most urgent first.
func Evaluate(f *Facts, o Options) Report {
	o = o.WithDefaults()
	r := Report{Findings: []Finding{}, Notes: f.Notes, Host: summary(f)}
	for _, c := range checks() {
		r.Checked = append(r.Checked, c.name)
		for _, fd := range c.run(f, o) {
			if o.selected(fd) {
				r.Findings = append(r.Findings, fd)
			}
		}
	}
	sortFindings(r.Findings)
	return r
}

func summary(f *Facts) HostSummary {
	h := HostSummary{
		Somaxconn: f.Sys.Somaxconn, MaxSynBacklog: f.Sys.MaxSynBacklog, Syncookies: f.Sys.Syncookies,
		MaxTWBuckets: f.Sys.MaxTWBuckets, TimeWait: f.TimeWait, Listeners: len(f.Listeners), Processes: f.Scanned,
		UDPSockets: len(f.UDPSockets), ListenOverflows: f.Drops.Overflows[1], ListenDrops: f.Drops.Drops[1],
		Batons: []string{},
	}
	for _, b := range f.Batons {
		h.Batons = append(h.Batons, b.Control)
	}
	return h
}
