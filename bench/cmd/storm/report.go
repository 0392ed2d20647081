package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"
)

// benchReport is every number of a bench run (the --json output).
type benchReport struct {
	Quick   bool         `json:"quick"`
	Only    string       `json:"only,omitempty"`
	Started time.Time    `json:"started"`
	WallS   float64      `json:"wall_s"`
	BuildS  float64      `json:"build_s"`
	Machine machine      `json:"machine"`
	Proxies proxyChoice  `json:"proxies"`
	Plan    plan         `json:"plan"`
	Latency []latencyRow `json:"reload_latency"`
	Big     []bigRow     `json:"big_configs"`
	During  []duringRow  `json:"during_reloads"`
	Storms  []stormRow   `json:"storms"`
	Kills   []killRow    `json:"kill9"`
	Steady  []steadyRow  `json:"steady_state"`
	Scale   scaleReport  `json:"scale"`
	// H3Storms are the HTTP/3 storms (--h3 only).
	H3Storms []stormRow `json:"h3_storms,omitempty"`
	Errors   []string   `json:"errors"`
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// table builds a Markdown table.
type table struct {
	b strings.Builder
}

func newTable(head ...string) *table {
	t := &table{}
	t.row(head...)
	seps := make([]string, len(head))
	for i := range seps {
		seps[i] = "---"
	}
	t.row(seps...)
	return t
}

func (t *table) row(cells ...string) {
	t.b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
}

func (t *table) String() string { return t.b.String() }

// failures is "N" or "N (class n, class n)".
func failures(n int, classes map[string]int) string {
	if n == 0 || len(classes) == 0 {
		return num(n)
	}
	names := make([]string, 0, len(classes))
	for c := range classes {
		names = append(names, c)
	}
	sort.Slice(names, func(i, j int) bool { return classes[names[i]] > classes[names[j]] })
	parts := make([]string, len(names))
	for i, c := range names {
		parts[i] = strings.ReplaceAll(c, "_", " ") + " " + num(classes[c])
	}
	return num(n) + " (" + strings.Join(parts, ", ") + ")"
}

// num writes n with thousands separators.
func num(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + num(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// pp is "p50 / p99" in ms, "–" without data.
func pp(d durStats) string {
	if d.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s", msText(d.P50), msText(d.P99))
}

func msText(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func interval(ms int) string { return (time.Duration(ms) * time.Millisecond).String() }

// modeName is the table's word for a load mode.
func modeName(m string) string {
	if m == "keepalive" {
		return "keep-alive"
	}
	return "new connection"
}

// renderTables is the "one table" per scenario family the bench prints.
func renderTables(r *benchReport) string {
	var b strings.Builder
	sections := []func(*benchReport) string{headlineTable, stormTable, latencyTable, versionTable, bigTable, duringTable, killTable, steadyTable, scaleTables, h3Table}
	for _, f := range sections {
		if s := f(r); s != "" {
			b.WriteString(s + "\n")
		}
	}
	if len(r.Errors) > 0 {
		b.WriteString("### Errors\n\n")
		for _, e := range r.Errors {
			b.WriteString("- " + strings.ReplaceAll(e, "\n", " ") + "\n")
		}
		b.WriteString("\n")
	}
	return b.String()
}

// headlineTable: failed and stale at a reload every 100 ms, both modes.
func headlineTable(r *benchReport) string {
	type cell struct{ nc, ka *stormRow }
	var order []string
	cells := map[string]*cell{}
	for i := range r.Storms {
		s := &r.Storms[i]
		if s.IntervalMs != 100 {
			continue
		}
		c := cells[s.MethodName]
		if c == nil {
			c = &cell{}
			cells[s.MethodName] = c
			order = append(order, s.MethodName)
		}
		if s.Mode == "keepalive" {
			c.ka = s
		} else {
			c.nc = s
		}
	}
	if len(order) == 0 {
		return ""
	}
	t := newTable("method", "new connection: failed / stale", "keep-alive: failed / stale", "reloads acked (new conn. / keep-alive)")
	fs := func(s *stormRow) string {
		if s == nil {
			return "–"
		}
		return fmt.Sprintf("%s / %s of %s", num(s.Failed), num(s.Stale), num(s.Requests))
	}
	acked := func(s *stormRow) string {
		if s == nil {
			return "–"
		}
		return num(s.Reloads)
	}
	for _, m := range order {
		c := cells[m]
		t.row(m, fs(c.nc), fs(c.ka), acked(c.nc)+" / "+acked(c.ka))
	}
	return "### Headline: a reload due every 100 ms under load\n\n" + t.String()
}

func stormTable(r *benchReport) string {
	if len(r.Storms) == 0 {
		return ""
	}
	t := newTable("method", "mode", "every", "reloads acked (due)", "reload ack p50 / p99 ms", "requests", "OK/s", "failed (by class)", "stale", "old-conn. answers")
	for _, s := range r.Storms {
		t.row(s.MethodName, modeName(s.Mode), interval(s.IntervalMs),
			fmt.Sprintf("%s (%s)", num(s.Reloads), num(s.Due)), pp(s.Reload), num(s.Requests),
			num(int(s.OKPerS)), failures(s.Failed, s.Classes), num(s.Stale), num(s.OldConnAnswers))
	}
	return "### Reload storms\n\n" + t.String() +
		"\nHAProxy configs carry `option idle-close-on-response` (baton's recommended keep-alive setting) in every HAProxy method and mode. " +
		"A reload due while one runs starts when it ends; later due ones fold into it (\"due\" counts them all).\n"
}

func latencyTable(r *benchReport) string {
	if len(r.Latency) == 0 {
		return ""
	}
	t := newTable("reload method, or the proxy's own step", "ack (or step) p50 / p99 ms", "first answer from the new version p50 / p99 ms", "baton's own account p50 / p99 ms", "errors")
	for _, l := range r.Latency {
		if baseID(l.ID) != l.ID {
			continue // another --haproxy: in the per-version table
		}
		t.row(l.What, pp(l.Ack), pp(l.Switch), pp(l.Server), num(l.Errors))
	}
	return fmt.Sprintf("### Reload latency, idle machine (%d sequential reloads each)\n\n", r.Plan.LatencyReloads) + t.String()
}

func killTable(r *benchReport) string {
	if len(r.Kills) == 0 {
		return ""
	}
	t := newTable("method", "kills", "requests", "failed (by class)", "refused", "longest gap without an answer ms", "recovery after each kill ms", "service at the end")
	for _, k := range r.Kills {
		rec := make([]string, len(k.RecoveryMs))
		for i, v := range k.RecoveryMs {
			rec[i] = "never"
			if v >= 0 {
				rec[i] = msText(v)
			}
		}
		state := "serving"
		if k.ServiceGone {
			state = "**gone**"
		}
		t.row(k.MethodName, num(len(k.Kills)), num(k.Requests), failures(k.Failed, k.Classes), num(k.Refused),
			msText(k.LongestGapMs), strings.Join(rec, ", "), state)
	}
	return fmt.Sprintf("### kill -9 of the serving proxy every %s (new connections, %s)\n\n", r.Plan.KillEvery.D(), r.Plan.Kill.D()) + t.String() +
		"\nHAProxy: the worker is killed (the master then exits — 2.6 and 3.2 alike: without a supervisor the service is gone). nginx: the master and its workers.\n"
}

func steadyTable(r *benchReport) string {
	if len(r.Steady) == 0 {
		return ""
	}
	t := newTable("proxy", "bare OK/s: median (runs)", "under baton OK/s: median (runs)", "ratio baton / bare", "latency p50 / p99 ms bare", "under baton", "baton CPU during its runs", "failed")
	for _, s := range r.Steady {
		t.row(s.Proxy, rates(s.Bare), rates(s.Baton), fmt.Sprintf("**%.3f**", s.Ratio),
			pp(s.BareLatency), pp(s.BatonLatency), fmt.Sprintf("%.0f ms", s.BatonCPUms), num(s.Failed))
	}
	return fmt.Sprintf("### Steady state, no reloads (keep-alive, %d clients, no rate cap, %s per run, median run of each; latencies of the best run)\n\n", r.Plan.Workers, r.Plan.Steady.D()) + t.String()
}

// rates renders the median run, then every run in order.
func rates(rs []float64) string {
	parts := make([]string, len(rs))
	for i, v := range rs {
		parts[i] = num(int(v))
	}
	return fmt.Sprintf("%s (%s)", num(int(median(rs))), strings.Join(parts, ", "))
}

func scaleTables(r *benchReport) string {
	var b strings.Builder
	sc := r.Scale
	if sc.Reloads != nil || sc.Activated != nil {
		t := newTable("child", "reloads", "took", "reload p50 / p99 ms", "baton RSS start → end (peak)", "baton fds start → end", "errors")
		for _, rs := range []*reloadScale{sc.Reloads, sc.Activated} {
			if rs == nil {
				continue
			}
			t.row(rs.Child, num(rs.Reloads), fmt.Sprintf("%.0f s", rs.TotalS), pp(rs.Reload),
				fmt.Sprintf("%s → %s kB (%s)", num(rs.Start.RSSKB), num(rs.End.RSSKB), num(rs.PeakRSS)),
				fmt.Sprintf("%d → %d", rs.Start.Fds, rs.End.Fds), num(rs.Errors))
		}
		b.WriteString("### Scale: baton across many reloads (control API, one at a time)\n\n" + t.String() + "\n")
	}
	if l := sc.Listeners; l != nil {
		t := newTable("listeners", "`baton run` to active generation", "to first answer", "reload p50 / p99 ms (baton's own)", "ports answering the new version", "baton fds", "baton RSS", "NOFILE baton / HAProxy worker")
		t.row(num(l.Listeners), msText(l.ActiveMs)+" ms", msText(l.ServingMs)+" ms", pp(l.Reload)+" ("+pp(l.Server)+")",
			num(l.Answering), num(l.Baton.Fds), num(l.Baton.RSSKB)+" kB", l.NofileBaton+" / "+l.NofileWorker)
		b.WriteString("### Scale: listeners handed to one HAProxy generation (one frontend, a `bind` per port)\n\n" + t.String() + "\n")
	}
	if d := sc.Draining; d != nil {
		t := newTable("draining generations", "processes", "baton RSS 1 gen. → all draining", "baton fds", "`baton status` p50 (CLI / API) ms", "reload with all draining p50 / p99 ms", "held requests answered", "all old generations gone after")
		t.row(num(d.Draining), num(d.Procs), fmt.Sprintf("%s → %s kB", num(d.Start.RSSKB), num(d.Held.RSSKB)),
			fmt.Sprintf("%d → %d (after: %d)", d.Start.Fds, d.Held.Fds, d.After.Fds),
			msText(d.StatusCLI.P50)+" / "+msText(d.StatusAPI.P50), pp(d.Reload),
			fmt.Sprintf("%d of %d", d.Answered, d.Draining), msText(d.ExitedMs)+" ms")
		b.WriteString("### Scale: generations draining at once (baton + HAProxy, one request held in each)\n\n" + t.String() + "\n")
	}
	return b.String()
}
