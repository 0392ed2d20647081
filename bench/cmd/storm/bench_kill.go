package main

import (
	"context"
	"fmt"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// killRow is one kill -9 run.
type killRow struct {
	Method     string  `json:"method"`
	MethodName string  `json:"method_name"`
	DurationS  float64 `json:"duration_s"`
	// Kills lists what each kill hit; KillErrors the kills that found
	// nothing to kill (the service was already gone).
	Kills      []string       `json:"kills"`
	KillErrors []string       `json:"kill_errors,omitempty"`
	Requests   int            `json:"requests"`
	OK         int            `json:"ok"`
	Failed     int            `json:"failed"`
	Refused    int            `json:"refused"`
	Classes    map[string]int `json:"failures_by_class"`
	// LongestGapMs is the longest time without a successful response from
	// the first kill to the end of the run.
	LongestGapMs float64 `json:"longest_gap_ms"`
	GapAtS       float64 `json:"longest_gap_at_s"`
	// RecoveryMs: for each kill, until the first OK answer to a request
	// started after it (-1: none before the end).
	RecoveryMs []float64 `json:"recovery_ms"`
	// ServiceGone: nothing served or restarted the service at the end.
	ServiceGone bool `json:"service_gone"`
}

// killMethods are the methods of the kill -9 runs.
var killMethods = []methodMaker{stormMethods[0], stormMethods[1], stormMethods[3]}

// killFamily runs the kill -9 scenario for each method.
func (b *bench) killFamily(ctx context.Context) {
	for _, mm := range killMethods {
		id := "kill/" + mm.id
		if !b.want(id) || ctx.Err() != nil {
			continue
		}
		b.withMethod(ctx, id, mm.make, func(m Method, port int) error {
			row, err := b.kill(ctx, m, port)
			if err != nil {
				return err
			}
			b.rep.Kills = append(b.rep.Kills, row)
			b.logf("%s: %d kills, %d requests, %d failed %v, longest gap %.0f ms, service gone %v",
				id, len(row.Kills), row.Requests, row.Failed, row.Classes, row.LongestGapMs, row.ServiceGone)
			return nil
		})
	}
}

// kill runs new-connection load and kill -9s the serving process at the
// plan's times.
func (b *bench) kill(ctx context.Context, m Method, port int) (killRow, error) {
	cfg := load.Config{Addr: addr(port), Workers: b.plan.Workers, Mode: load.NewConn, Duration: b.plan.Kill.D()}
	loadc := make(chan loadDone, 1)
	begin := time.Now()
	go func() {
		res, err := load.Run(ctx, cfg)
		loadc <- loadDone{res, err}
	}()
	row := killRow{Method: m.ID(), MethodName: m.Name(), DurationS: cfg.Duration.Seconds()}
	var at []time.Time
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for _, off := range b.plan.killTimes() {
		timer.Reset(time.Until(begin.Add(off)))
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		if ctx.Err() != nil {
			break
		}
		what, err := m.Kill()
		if err != nil {
			row.KillErrors = append(row.KillErrors, fmt.Sprintf("at %s: %v", off, err))
			continue
		}
		at = append(at, time.Now())
		row.Kills = append(row.Kills, what)
	}
	ld := <-loadc
	if ld.err != nil {
		return row, ld.err
	}
	res := ld.res
	row.ServiceGone = !m.Serving()
	row.Requests, row.OK, row.Failed = res.Total, res.Counts[load.OK], res.Failed
	row.Refused = res.Counts[load.Refused]
	row.Classes = failureClasses(res)
	if len(at) > 0 {
		gap, gapAt := longestGap(res, at[0], res.Start.Add(res.Elapsed))
		row.LongestGapMs, row.GapAtS = ms(gap), gapAt
	}
	for _, r := range recoveries(res, at) {
		if r < 0 {
			row.RecoveryMs = append(row.RecoveryMs, -1)
		} else {
			row.RecoveryMs = append(row.RecoveryMs, ms(r))
		}
	}
	return row, nil
}
