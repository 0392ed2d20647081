package main

import (
	"context"
	"fmt"
)

// versionFamily runs the idle reload-latency comparison on every further
// --haproxy binary: baton + HAProxy, HAProxy's own master CLI reload and
// HAProxy's own start to first answer (the reference where the master
// answers before the new worker is ready), with ids suffixed @VERSION.
// The first binary's rows are the latency family's.
func (b *bench) versionFamily(ctx context.Context) {
	for _, p := range b.rep.Proxies.HAProxy[1:] {
		e := b.e.withHAProxy(p)
		at := "@" + p.Version
		b.latencyOf(ctx, e, "latency/baton-haproxy"+at, func(e *env) Method { return newBatonHAProxy(e) })
		b.latencyOf(ctx, e, "latency/baton-haproxy-api"+at, func(e *env) Method { return viaAPI(newBatonHAProxy(e)) })
		b.latencyOf(ctx, e, "latency/haproxy-mw"+at, func(e *env) Method { return newHAProxyMW(e) })
		b.latencyRef(ctx, e, "latency/ref-haproxy-start"+at, "HAProxy start to first answer (`haproxy -W -db`)", b.haproxyStartTimes)
	}
}

// versionRow compares baton's idle reload with the proxy's own on one
// binary: against the native reload where its ack means the new worker is
// ready (HAProxy 3.1+), else against the proxy's own start to first
// answer.
type versionRow struct {
	Proxy string   `json:"proxy"`
	Baton durStats `json:"baton_reload"`
	// API is the same reload through the control API from the bench
	// process (POST /v1/reload): no CLI process start, as the native
	// reload's master CLI command is sent from the bench process.
	API     durStats `json:"baton_reload_api"`
	Native  durStats `json:"native_reload"`
	AckKind string   `json:"native_ack_kind"`
	Start   durStats `json:"start_to_first_answer"`
	// Against names the reference of Ratio: "native reload" or "start".
	Against string  `json:"ratio_against"`
	Ratio   float64 `json:"ratio_p50"`
	// RatioAPI is API's p50 against the same reference.
	RatioAPI float64 `json:"ratio_api_p50"`
}

// versionRows pairs the latency rows by proxy version.
func versionRows(r *benchReport) []versionRow {
	type group struct{ baton, api, native, start *latencyRow }
	var order []string
	groups := map[string]*group{}
	for i := range r.Latency {
		l := &r.Latency[i]
		if l.Proxy == "" {
			continue
		}
		g := groups[l.Proxy]
		if g == nil {
			g = &group{}
			groups[l.Proxy] = g
			order = append(order, l.Proxy)
		}
		switch baseID(l.ID) {
		case "latency/baton-haproxy", "latency/baton-nginx":
			g.baton = l
		case "latency/baton-haproxy-api", "latency/baton-nginx-api":
			g.api = l
		case "latency/haproxy-mw":
			g.native = l
		case "latency/ref-haproxy-start", "latency/ref-nginx-start":
			g.start = l
		}
	}
	var out []versionRow
	for _, p := range order {
		g := groups[p]
		if g.baton == nil || (g.native == nil && g.start == nil) {
			continue
		}
		row := versionRow{Proxy: p, Baton: g.baton.Ack}
		if g.api != nil {
			row.API = g.api.Ack
		}
		if g.native != nil {
			row.Native, row.AckKind = g.native.Ack, g.native.AckKind
		}
		if g.start != nil {
			row.Start = g.start.Ack
		}
		switch {
		case g.native != nil && g.native.AckReady && row.Native.N > 0:
			row.Against, row.Ratio = "native reload", ratio(row.Baton.P50, row.Native.P50)
			row.RatioAPI = ratio(row.API.P50, row.Native.P50)
		case row.Start.N > 0:
			row.Against, row.Ratio = "start", ratio(row.Baton.P50, row.Start.P50)
			row.RatioAPI = ratio(row.API.P50, row.Start.P50)
		}
		if row.API.N == 0 {
			row.RatioAPI = 0
		}
		out = append(out, row)
	}
	return out
}

// baseID is id without its @VERSION.
func baseID(id string) string {
	for i := len(id) - 1; i >= 0; i-- {
		if id[i] == '@' {
			return id[:i]
		}
	}
	return id
}

func versionTable(r *benchReport) string {
	rows := versionRows(r)
	if len(rows) == 0 {
		return ""
	}
	t := newTable("proxy", "`baton reload` p50 / p99 ms", "control API `POST /v1/reload` p50 / p99 ms", "native reload p50 / p99 ms (its ack)", "proxy's own start to first answer p50 / p99 ms", "ratio baton / reference (p50): CLI, API")
	for _, v := range rows {
		native := "–"
		if v.Native.N > 0 {
			native = pp(v.Native) + " (" + v.AckKind + ")"
		}
		rat := "–"
		if v.Against != "" {
			rat = fmt.Sprintf("**%.2f**", v.Ratio)
			if v.RatioAPI > 0 {
				rat += fmt.Sprintf(", **%.2f**", v.RatioAPI)
			}
			rat += " (against the " + v.Against + ")"
		}
		api := "–"
		if v.API.N > 0 {
			api = pp(v.API)
		}
		t.row(v.Proxy, pp(v.Baton), api, native, pp(v.Start), rat)
	}
	return "### Idle reload latency per proxy version: baton against the proxy's own\n\n" + t.String() +
		"\nThe reference is HAProxy's own master CLI `reload` where its answer comes once the new worker is ready (3.1 and later); " +
		"before 3.1 the master answers after parse and fork (2.7–3.0) or not at all (2.6), so the reference there — and for nginx, whose `-s reload` returns before the new config serves — is the proxy's own start to first answer. " +
		"`baton reload` includes the start of the CLI process (a Go program: about 15–20 ms here before it sends its request); the control API column sends the same request from the bench process, as the native master CLI command is sent.\n"
}
