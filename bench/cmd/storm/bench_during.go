package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// duringRow is the request latency of the serving generation while the
// big-certificates config is reloaded under a keep-alive load (or, for
// the baseline, not reloaded).
type duringRow struct {
	ID        string `json:"id"`
	What      string `json:"what"`
	Proxy     string `json:"proxy"`
	Reloading bool   `json:"reloads"`
	// Skipped says why the variant did not run.
	Skipped string `json:"skipped,omitempty"`

	Requests int            `json:"requests"`
	Failed   int            `json:"failed"`
	Classes  map[string]int `json:"failures_by_class"`
	// Latency is every OK request's; P999 its 99.9th percentile.
	Latency durStats `json:"request_latency"`
	P999    float64  `json:"request_latency_p999_ms"`
	// InReload is the latency of the OK requests that were under way
	// while a reload ran (from its trigger to its ack).
	InReload durStats `json:"request_latency_in_reloads"`
	// Reloads acked, their errors and ack times.
	Reloads      int      `json:"reloads_acked"`
	ReloadErrors int      `json:"reload_errors"`
	FirstError   string   `json:"first_reload_error,omitempty"`
	Reload       durStats `json:"reload_ack_latency"`
}

// duringVariant is one way of running (and reloading) the
// big-certificates config under load.
type duringVariant struct {
	id, what string
	reload   bool
	// global is added to the config's global section.
	global []string
	// batonRun, for a baton variant, are more `baton run` flags; nil for
	// HAProxy's own master-worker mode.
	batonRun []string
	baton    bool
	// needs says why the variant cannot run here ("" when it can).
	needs func(b *bench) string
}

// startNice is the nice level of a starting generation in the nice
// variants (HAProxy's tune.renice.startup, baton's --start-nice).
const startNice = "10"

// duringVariants are the rows of the during-reload table, in order. A
// variant with a baton option for starting generations is one more line
// here, e.g. {id: "during/baton-haproxy-cpus", baton: true, reload: true,
// batonRun: []string{"--start-cpus", "1"}, needs: needsBatonFlag("--start-cpus"), ...}.
var duringVariants = []duringVariant{
	{id: "during/no-reload", what: "no reload (HAProxy -W)"},
	{id: "during/haproxy-mw", what: "HAProxy's own master CLI `reload`", reload: true},
	{id: "during/haproxy-mw-renice", what: "HAProxy's own reload, `tune.renice.startup " + startNice + "` + `tune.renice.runtime 0`", reload: true,
		global: []string{"tune.renice.startup " + startNice, "tune.renice.runtime 0"},
		needs: func(b *bench) string {
			if !b.rep.Proxies.Big.hasRenice() {
				return "tune.renice.* needs HAProxy 3.1 or later"
			}
			return ""
		}},
	{id: "during/baton-haproxy", what: "`baton reload`", reload: true, baton: true},
	{id: "during/baton-haproxy-nice", what: "`baton reload`, `baton run --start-nice " + startNice + "`", reload: true, baton: true,
		batonRun: []string{"--start-nice", startNice}, needs: needsBatonFlag("--start-nice")},
}

// needsBatonFlag skips a variant when `baton run --help` does not list
// flag.
func needsBatonFlag(flag string) func(b *bench) string {
	return func(b *bench) string {
		if !strings.Contains(commandOutput(context.Background(), b.e.baton, "run", "--help"), flag+" ") {
			return "this baton has no `run " + flag + "`"
		}
		return ""
	}
}

// duringFamily runs every variant on the HAProxy of the big scenarios.
func (b *bench) duringFamily(ctx context.Context) {
	if b.plan.During == 0 || b.plan.BigCerts == 0 {
		return
	}
	e := b.e.withHAProxy(b.rep.Proxies.Big)
	for _, v := range duringVariants {
		if !b.want(v.id) || ctx.Err() != nil {
			continue
		}
		row := duringRow{ID: v.id, What: v.what, Reloading: v.reload}
		row.Proxy, _ = e.proxyOf("haproxy")
		if v.needs != nil {
			row.Skipped = v.needs(b)
		}
		if row.Skipped != "" {
			b.rep.During = append(b.rep.During, row)
			b.logf("%s: skipped: %s", v.id, row.Skipped)
			continue
		}
		c := bigConfig{Name: "big-certs", Certs: b.plan.BigCerts, Global: v.global}
		if _, err := b.certsFor(&c); err != nil {
			b.fail(v.id, err)
			continue
		}
		ports, err := freePorts(2)
		if err != nil {
			b.fail(v.id, err)
			continue
		}
		render := func(ver int) string { return c.render(ports, ver) }
		var m Method
		if v.baton {
			bm := newBatonHAProxy(e.withBatonRun(v.batonRun...))
			bm.ports, bm.render = ports, render
			m = bm
		} else {
			mw := newHAProxyMW(e)
			mw.render = render
			m = mw
		}
		b.runMethod(ctx, v.id, m, ports[0], func(m Method, port int) error {
			if err := b.during(ctx, m, port, v.reload, &row); err != nil {
				return err
			}
			b.rep.During = append(b.rep.During, row)
			b.logf("%s: %d reloads; requests %d, failed %d; latency p50 %.1f p99 %.1f p99.9 %.1f max %.1f ms; in reloads p99 %.1f ms",
				v.id, row.Reloads, row.Requests, row.Failed, row.Latency.P50, row.Latency.P99, row.P999, row.Latency.Max, row.InReload.P99)
			return nil
		})
	}
}

// during runs the keep-alive load on a started method, reloading it every
// DuringEvery when reload is set, and fills row.
func (b *bench) during(ctx context.Context, m Method, port int, reload bool, row *duringRow) error {
	cfg := load.Config{Addr: addr(port), Workers: b.plan.Workers, Mode: load.KeepAlive,
		Duration: b.plan.During.D(), Rate: b.plan.DuringRate}
	var res *load.Result
	var reloads []reloadRecord
	if reload {
		version := 1
		out, err := driveStorm(ctx, stormSpec{
			load: cfg, interval: b.plan.DuringEvery.D(), warmup: b.plan.Warmup.D(), tail: b.plan.Tail.D(), policy: waitBusy,
			reload: func(ctx context.Context, _ int) (int, reloadInfo, error) {
				version++
				info, err := m.Reload(ctx, version)
				return version, info, err
			},
		})
		if err != nil {
			return err
		}
		res, reloads = out.res, out.reloads
	} else {
		var err error
		if res, err = load.Run(ctx, cfg); err != nil {
			return err
		}
	}
	row.Requests, row.Failed, row.Classes = res.Total, res.Failed, failureClasses(res)
	row.Latency = latencyOf(res)
	row.Latency.Max = ms(res.Percentile(100))
	row.P999 = ms(res.Percentile(99.9))
	var acks []time.Duration
	for _, r := range reloads {
		if r.Err != nil {
			row.ReloadErrors++
			if row.FirstError == "" {
				row.FirstError = r.Err.Error()
			}
			continue
		}
		row.Reloads++
		acks = append(acks, r.End.Sub(r.Start))
	}
	row.Reload, row.InReload = summarize(acks), summarize(inReloads(res.Samples, reloads))
	if reload && row.Reloads == 0 {
		return fmt.Errorf("no reload acked: %s", row.FirstError)
	}
	return nil
}

// inReloads are the latencies of the OK samples that were under way while
// a reload ran (from its start to its end).
func inReloads(samples []load.Sample, reloads []reloadRecord) []time.Duration {
	var in []time.Duration
	for _, s := range samples {
		if s.Class == load.OK && slices.ContainsFunc(reloads, func(r reloadRecord) bool {
			return s.Start.Before(r.End) && s.Start.Add(s.Latency).After(r.Start)
		}) {
			in = append(in, s.Latency)
		}
	}
	return in
}
