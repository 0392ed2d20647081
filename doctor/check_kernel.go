package doctor

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/batonproxy/baton/fdpass"
)

// checkTimeWait: TIME_WAIT sockets near net.ipv4.tcp_max_tw_buckets.
func checkTimeWait(f *Facts, o Options) []Finding {
	max := f.Sys.MaxTWBuckets
	if max <= 0 || f.TimeWait < 0 {
		return nil
	}
	ratio := float64(f.TimeWait) / float64(max)
	if ratio <= o.TimeWaitRatio {
		return nil
	}
	sev := Warning
	if ratio >= 1 {
		sev = Critical
	}
	return []Finding{{
		Check: "time-wait", Severity: sev, Subject: "host",
		Saw: fmt.Sprintf("%d sockets in TIME_WAIT, %.0f %% of net.ipv4.tcp_max_tw_buckets (%d)", f.TimeWait, 100*ratio, max),
		Why: "past the limit the kernel skips TIME_WAIT (\"time wait bucket table overflow\" in the kernel log), so late " +
			"packets can corrupt a new connection, and the TIME_WAIT sockets also hold local ports, so connections to " +
			"upstreams start failing with EADDRNOTAVAIL",
		Fix: "reuse connections to upstreams (HAProxy `http-reuse safe` in the backend, nginx `keepalive 32;` in the " +
			"upstream block with `proxy_http_version 1.1;`), then `sysctl -w net.ipv4.tcp_tw_reuse=1`, a wider " +
			"`sysctl -w net.ipv4.ip_local_port_range=\"1024 65000\"`, or a higher " +
			"`sysctl -w net.ipv4.tcp_max_tw_buckets=N`; put the same settings in /etc/sysctl.d/ to keep them",
		Data: map[string]any{"time_wait": f.TimeWait, "tcp_max_tw_buckets": max, "ratio": ratio},
	}}
}

// checkBacklog: a listen backlog the kernel silently lowers. listen()
// caps the backlog at net.core.somaxconn, so sock_diag shows the capped
// value: the requested one is only known for baton's listeners (their
// spec's backlog=). Without SYN cookies, net.ipv4.tcp_max_syn_backlog
// below a listener's backlog drops SYNs before its accept queue is full.
func checkBacklog(f *Facts, _ Options) []Finding {
	var out []Finding
	for _, b := range f.Batons {
		if b.Status == nil || f.Sys.Somaxconn <= 0 {
			continue
		}
		for _, l := range b.Status.Listeners {
			sp, err := fdpass.ParseSpec(l.Spec)
			if err != nil || sp.Backlog <= f.Sys.Somaxconn {
				continue
			}
			var ports []int
			if ap, err := netip.ParseAddrPort(l.Addr); err == nil {
				ports = []int{int(ap.Port())}
			}
			out = append(out, Finding{
				Check: "backlog-capped", Severity: Warning, Subject: l.Addr,
				Saw: fmt.Sprintf("baton's listener %s asks for backlog=%d; net.core.somaxconn is %d, so its accept queue holds %d",
					l.Spec, sp.Backlog, f.Sys.Somaxconn, l.Backlog),
				Why: "the kernel silently caps a listen backlog at net.core.somaxconn, so the accept queue is shorter than " +
					"configured and connection bursts are dropped",
				Fix: fmt.Sprintf("`sysctl -w net.core.somaxconn=%d`, and `net.core.somaxconn = %d` in a file in "+
					"/etc/sysctl.d/ to keep it; the socket keeps its short queue until it is created again: stop and "+
					"start baton once at a quiet time (a reload or `baton upgrade` keeps the socket as it is)", sp.Backlog, sp.Backlog),
				Ports: ports, Pids: []int{b.Status.Pid},
				Data: map[string]any{"spec": l.Spec, "requested": sp.Backlog, "somaxconn": f.Sys.Somaxconn, "backlog": l.Backlog},
			})
		}
	}
	out = append(out, nginxBacklogs(f)...)
	if f.Sys.Syncookies != 0 || f.Sys.MaxSynBacklog <= 0 {
		return out
	}
	var over []string
	var ports []int
	for _, l := range f.Listeners {
		if int(l.Backlog) > f.Sys.MaxSynBacklog {
			over = append(over, fmt.Sprintf("%s (backlog %d)", l.Addr, l.Backlog))
			ports = append(ports, portOf(l.Addr))
		}
	}
	if len(over) > 0 {
		out = append(out, Finding{
			Check: "backlog-capped", Severity: Warning, Subject: "host",
			Saw: fmt.Sprintf("net.ipv4.tcp_syncookies is 0 and net.ipv4.tcp_max_syn_backlog (%d) is below the backlog of %s",
				f.Sys.MaxSynBacklog, strings.Join(over, ", ")),
			Why: "with SYN cookies off the kernel drops new connection attempts once the half-open queue nears " +
				"tcp_max_syn_backlog, before the accept queue is full, so connection bursts are dropped",
			Fix: fmt.Sprintf("`sysctl -w net.ipv4.tcp_syncookies=1` (the kernel's default), or "+
				"`sysctl -w net.ipv4.tcp_max_syn_backlog=%d`; put the setting in /etc/sysctl.d/ to keep it", maxBacklog(f)),
			Ports: ports,
			Data:  map[string]any{"tcp_max_syn_backlog": f.Sys.MaxSynBacklog, "listeners": over},
		})
	}
	return out
}

// nginxBacklogs: nginx `listen ... backlog=N` above somaxconn, in the
// configurations of running nginx masters.
func nginxBacklogs(f *Facts) []Finding {
	var out []Finding
	if f.Sys.Somaxconn <= 0 {
		return nil
	}
	for _, c := range configsOf(f, "nginx") {
		for _, cf := range c.Files {
			ds, err := nginxDirectives(cf.Text)
			if err != nil {
				continue
			}
			for _, d := range ds {
				if d.Name != "listen" || len(d.Args) == 0 {
					continue
				}
				for _, a := range d.Args[1:] {
					v, ok := strings.CutPrefix(a, "backlog=")
					n, err := strconv.Atoi(v)
					if !ok || err != nil || n <= f.Sys.Somaxconn {
						continue
					}
					where := fmt.Sprintf("%s:%d", cf.Path, d.Line)
					out = append(out, Finding{
						Check: "backlog-capped", Severity: Warning, Subject: where,
						Saw: fmt.Sprintf("nginx `listen %s backlog=%d` (%s) is above net.core.somaxconn (%d); run by %s",
							d.Args[0], n, where, f.Sys.Somaxconn, runBy(c)),
						Why: "the kernel silently caps a listen backlog at net.core.somaxconn, so the accept queue is " +
							"shorter than configured and connection bursts are dropped",
						Fix: fmt.Sprintf("`sysctl -w net.core.somaxconn=%d`, and `net.core.somaxconn = %d` in a file in "+
							"/etc/sysctl.d/ to keep it, then restart nginx; or lower it to `backlog=%d` on that listen line",
							n, n, f.Sys.Somaxconn),
						Pids:  c.Pids,
						Ports: c.Ports,
						Data:  map[string]any{"config": where, "requested": n, "somaxconn": f.Sys.Somaxconn},
					})
				}
			}
		}
	}
	return out
}

// checkAcceptQueue: a listener whose accept queue is above QueueRatio of
// its backlog now (full: critical).
func checkAcceptQueue(f *Facts, o Options) []Finding {
	var out []Finding
	for i := range f.Listeners {
		l := &f.Listeners[i]
		if l.Backlog == 0 || float64(l.Queue) <= o.QueueRatio*float64(l.Backlog) {
			continue
		}
		sev := Warning
		if l.Queue >= l.Backlog {
			sev = Critical
		}
		hs := holders(f, []*Listener{l})
		out = append(out, Finding{
			Check: "accept-queue", Severity: sev, Subject: l.Addr.String(),
			Saw: fmt.Sprintf("%d connections wait to be accepted on %s (inode %d), backlog %d; %s",
				l.Queue, l.Addr, l.Inode, l.Backlog, describeHolders(hs)),
			Why: "these connections are established but no process accepts them, and once the queue is full the kernel " +
				"drops new ones and clients time out",
			Fix: fmt.Sprintf("find why the holders do not accept: stopped (`ps -o stat,pid,args -p %s` shows T), "+
				"overloaded, or out of file descriptors; under baton, `baton status` shows a generation that never "+
				"became ready; raise the backlog (`backlog=` on the listener and net.core.somaxconn) only to absorb bursts",
				pidList(pidsOf(hs))),
			Ports: []int{portOf(l.Addr)}, Pids: pidsOf(hs),
			Data: map[string]any{"address": l.Addr.String(), "inode": l.Inode, "queue": l.Queue, "backlog": l.Backlog},
		})
	}
	return out
}

// checkListenDrops: the TcpExt ListenOverflows and ListenDrops counters.
// Growth between the two readings is critical: connections are being
// dropped now. A non-zero total without growth is info only: the counters
// count since boot, and a burst long past says nothing about now (reporting
// it as a warning would make doctor fail forever on that host).
func checkListenDrops(f *Facts, o Options) []Finding {
	d := f.Drops
	if !d.Known {
		return nil
	}
	grewO, grewD := growth(d.Overflows), growth(d.Drops)
	data := map[string]any{"listen_overflows": d.Overflows[1], "listen_drops": d.Drops[1],
		"overflows_growth": grewO, "drops_growth": grewD, "interval_ms": d.Interval.Milliseconds()}
	why := "a full accept queue (ListenOverflows) or a failure to set up an accepted connection (ListenDrops) drops a " +
		"connection attempt, and the client retries after 1 s, 3 s, 7 s or gives up"
	fix := "find the listener whose queue overflows: `ss -ltn` (Recv-Q close to Send-Q) or the accept-queue findings; " +
		"make its proxy accept faster (CPU, file descriptors, more workers) and give it a longer queue " +
		"(`sysctl -w net.core.somaxconn=4096` and `backlog=` on the listener)"
	switch {
	case grewO > 0 || grewD > 0:
		return []Finding{{
			Check: "listen-drops", Severity: Critical, Subject: "host",
			Saw: fmt.Sprintf("TcpExt ListenOverflows grew by %d and ListenDrops by %d in %s (totals since boot: %d and %d)",
				grewO, grewD, human(d.Interval), d.Overflows[1], d.Drops[1]),
			Why: why, Fix: fix, Data: data,
		}}
	case d.Overflows[1] > 0 || d.Drops[1] > 0:
		return []Finding{{
			Check: "listen-drops", Severity: Info, Subject: "host",
			Saw: fmt.Sprintf("since boot, TcpExt ListenOverflows is %d and ListenDrops %d; neither grew in %s",
				d.Overflows[1], d.Drops[1], human(d.Interval)),
			Why:  why + ", but totals alone do not say when that happened",
			Fix:  "nothing now; run `baton doctor` again under load, or graph the counters (node_exporter: node_netstat_TcpExt_ListenDrops)",
			Data: data,
		}}
	}
	return nil
}

// growth is the increase between two readings of a counter.
func growth(v [2]uint64) uint64 {
	if v[1] < v[0] {
		return 0
	}
	return v[1] - v[0]
}

// maxBacklog is the largest backlog among the listening sockets.
func maxBacklog(f *Facts) int {
	n := 0
	for _, l := range f.Listeners {
		n = max(n, int(l.Backlog))
	}
	return n
}

// pidList is "12,34" (ps -p takes a comma-separated list), or "PID".
func pidList(pids []int) string {
	if len(pids) == 0 {
		return "PID"
	}
	parts := make([]string, len(pids))
	for i, p := range pids {
		parts[i] = strconv.Itoa(p)
	}
	return strings.Join(parts, ",")
}
