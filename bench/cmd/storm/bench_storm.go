package main

import (
	"context"
	"fmt"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// stormRow is one storm: a method, a mode, an interval.
type stormRow struct {
	Method     string  `json:"method"`
	MethodName string  `json:"method_name"`
	Mode       string  `json:"mode"`
	IntervalMs int     `json:"interval_ms"`
	DurationS  float64 `json:"duration_s"`
	Workers    int     `json:"workers"`

	Requests int            `json:"requests"`
	OK       int            `json:"ok"`
	Failed   int            `json:"failed"`
	Classes  map[string]int `json:"failures_by_class"`
	// Stale: answers from a version older than the last reload
	// acknowledged before the connection was dialed (load.Stale).
	Stale        int    `json:"stale"`
	StaleExample string `json:"stale_example,omitempty"`
	// OldConnAnswers: keep-alive answers from an older version on a
	// connection dialed before the reload (informational).
	OldConnAnswers int      `json:"old_conn_answers"`
	OKPerS         float64  `json:"ok_per_s"`
	Latency        durStats `json:"request_latency"`

	Due          int      `json:"reloads_due"`
	Skipped      int      `json:"reloads_folded"`
	Reloads      int      `json:"reloads_acked"`
	ReloadErrors int      `json:"reload_errors"`
	FirstError   string   `json:"first_reload_error,omitempty"`
	ReloadsPerS  float64  `json:"reloads_per_s"`
	Reload       durStats `json:"reload_ack_latency"`
	ServerReload durStats `json:"reload_server_latency"`

	Series []bucket  `json:"series_250ms"`
	Acks   []float64 `json:"acks_s"`

	// ClosedIdle (HTTP/3 keep-alive) counts connections found closed
	// between requests, by why (load.Result.ClosedIdle); not failures.
	ClosedIdle map[string]int `json:"closed_idle,omitempty"`
	// Resent (HTTP/3) counts requests the server did not process (RFC
	// 9114: H3_REQUEST_REJECTED, or at or above its GOAWAY's stream ID)
	// and that the client sent once more (load.Result.Resent); not
	// failures unless the second attempt failed.
	Resent map[string]int `json:"resent,omitempty"`
	// FailureExamples: the first failed request of each class (HTTP/3
	// storms).
	FailureExamples []string `json:"failure_examples,omitempty"`
	// Refusal is why the method did not start (the HTTP/3 storm of baton
	// as it is); the row has no figures then.
	Refusal string `json:"refusal,omitempty"`
}

// seriesWidth is the slice width of the storms' time series.
const seriesWidth = 250 * time.Millisecond

func stormID(interval time.Duration, mode load.Mode, method string) string {
	return fmt.Sprintf("storm/%s/%s/%s", interval, mode, method)
}

// stormFamily runs every storm, one method instance per method for all of
// its storms (the versions go on increasing from one storm to the next).
func (b *bench) stormFamily(ctx context.Context) {
	for _, mm := range stormMethods {
		var ids []string
		for _, iv := range stormIntervals {
			for _, mode := range stormModes {
				if id := stormID(iv, mode, mm.id); b.plan.stormDuration(iv) > 0 && b.want(id) {
					ids = append(ids, id)
				}
			}
		}
		if len(ids) == 0 || ctx.Err() != nil {
			continue
		}
		b.withMethod(ctx, "storm/"+mm.id, mm.make, func(m Method, port int) error {
			version := 1
			for _, iv := range stormIntervals {
				for _, mode := range stormModes {
					id := stormID(iv, mode, mm.id)
					if b.plan.stormDuration(iv) == 0 || !b.want(id) || ctx.Err() != nil {
						continue
					}
					row, err := b.storm(ctx, m, port, &version, iv, mode)
					if err != nil {
						b.fail(id, err)
						continue
					}
					b.rep.Storms = append(b.rep.Storms, row)
					b.logf("%s: %s", id, row.oneLine())
					settle(ctx, m)
				}
			}
			return nil
		})
	}
}

// settle lets old generations of a baton method finish before the next
// storm (at most 10 s); other methods are left alone.
func settle(ctx context.Context, m Method) {
	switch bm := m.(type) {
	case *batonMethod:
		bm.settle(ctx, 10*time.Second)
	case apiMethod:
		bm.settle(ctx, 10*time.Second)
	}
}

// storm runs one storm against a started method.
func (b *bench) storm(ctx context.Context, m Method, port int, version *int, iv time.Duration, mode load.Mode) (stormRow, error) {
	d := b.plan.stormDuration(iv)
	spec := stormSpec{
		load:     load.Config{Addr: addr(port), Workers: b.plan.Workers, Mode: mode, Duration: d},
		interval: iv,
		warmup:   b.plan.Warmup.D(),
		tail:     b.plan.Tail.D(),
		policy:   waitBusy,
		reload: func(ctx context.Context, _ int) (int, reloadInfo, error) {
			*version++
			v := *version
			info, err := m.Reload(ctx, v)
			return v, info, err
		},
	}
	out, err := driveStorm(ctx, spec)
	if err != nil {
		return stormRow{}, err
	}
	row := stormRow{
		Method: m.ID(), MethodName: m.Name(), Mode: mode.String(),
		IntervalMs: int(iv / time.Millisecond), DurationS: d.Seconds(), Workers: b.plan.Workers,
	}
	row.fill(out, d-b.plan.Warmup.D()-b.plan.Tail.D())
	return row, nil
}

// fill computes the row's figures from a storm's outcome; window is the
// time during which reloads were due.
func (r *stormRow) fill(out *stormOutcome, window time.Duration) {
	res := out.res
	r.Requests, r.OK, r.Failed = res.Total, res.Counts[load.OK], res.Failed
	r.Classes = failureClasses(res)
	r.OKPerS = okRate(res)
	r.Latency = durStats{N: res.Counts[load.OK], P50: ms(res.Percentile(50)), P99: ms(res.Percentile(99))}
	acks := out.acks()
	stale := load.Stale(res.Samples, acks, parseGen)
	r.Stale = len(stale)
	if len(stale) > 0 {
		r.StaleExample = stale[0].String()
	}
	r.OldConnAnswers = load.OldConnAnswers(res.Samples, acks, parseGen)
	r.Due, r.Skipped = out.due, out.skipped
	var took, server []time.Duration
	for _, rr := range out.reloads {
		if rr.Err != nil {
			r.ReloadErrors++
			if r.FirstError == "" {
				r.FirstError = rr.Err.Error()
			}
			continue
		}
		r.Reloads++
		took = append(took, rr.End.Sub(rr.Start))
		if rr.Info.Server > 0 {
			server = append(server, rr.Info.Server)
		}
		r.Acks = append(r.Acks, rr.End.Sub(res.Start).Seconds())
	}
	if window > 0 {
		r.ReloadsPerS = float64(r.Reloads) / window.Seconds()
	}
	r.Reload, r.ServerReload = summarize(took), summarize(server)
	r.Series = series(res, seriesWidth)
}

func (r stormRow) oneLine() string {
	return fmt.Sprintf("%d requests (%.0f/s), %d failed %v, %d stale; %d reloads (%.1f/s) p50 %.0f ms p99 %.0f ms, %d errors",
		r.Requests, r.OKPerS, r.Failed, r.Classes, r.Stale, r.Reloads, r.ReloadsPerS, r.Reload.P50, r.Reload.P99, r.ReloadErrors)
}
