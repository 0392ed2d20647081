package main

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// steadyRow compares one proxy started directly with the same proxy under
// baton: same config, same load (keep-alive, no rate cap), no reloads.
type steadyRow struct {
	Proxy string `json:"proxy"`
	// Bare and Baton are the OK responses/s of each run, in run order
	// (rounds alternate bare-baton and baton-bare).
	Bare  []float64 `json:"bare_ok_per_s"`
	Baton []float64 `json:"baton_ok_per_s"`
	// Ratio is the median baton run over the median bare run (the
	// median: one lucky or unlucky run on a shared machine moves it least).
	Ratio        float64  `json:"ratio"`
	BareLatency  durStats `json:"bare_request_latency"`
	BatonLatency durStats `json:"baton_request_latency"`
	Failed       int      `json:"failed"`
	// BatonCPUms is the CPU time baton itself used during its load runs.
	BatonCPUms float64 `json:"baton_cpu_ms"`
}

// steadyPair is a proxy bare and under baton.
type steadyPair struct {
	proxy string
	bare  func(*env) Method
	baton func(*env) *batonMethod
}

var steadyPairs = []steadyPair{
	{"haproxy", func(e *env) Method { return newHAProxyMW(e) }, newBatonHAProxy},
	{"nginx", func(e *env) Method { return newNginxHUP(e) }, newBatonNginx},
}

// steadyWarmup is an unmeasured run on each side before the first round.
const steadyWarmup = 500 * time.Millisecond

// clockTick is the kernel's USER_HZ, the unit of /proc/PID/stat times.
const clockTick = 10 * time.Millisecond

func (b *bench) steadyFamily(ctx context.Context) {
	for _, sp := range steadyPairs {
		id := "steady/" + sp.proxy
		if !b.want(id) || ctx.Err() != nil {
			continue
		}
		var bm *batonMethod
		b.withMethod(ctx, id, func(e *env) Method { bm = sp.baton(e); return bm }, func(_ Method, batonPort int) error {
			var row steadyRow
			done := false
			b.withMethod(ctx, id+"/bare", sp.bare, func(_ Method, barePort int) error {
				r, err := b.steady(ctx, sp.proxy, barePort, batonPort, bm.Pid())
				row, done = r, err == nil
				return err
			})
			if !done {
				return nil // the error is recorded
			}
			b.rep.Steady = append(b.rep.Steady, row)
			b.logf("%s: bare %v, baton %v ok/s: ratio %.3f; baton CPU %.0f ms", id, row.Bare, row.Baton, row.Ratio, row.BatonCPUms)
			return nil
		})
	}
}

// steady alternates load runs on the bare proxy and under baton.
func (b *bench) steady(ctx context.Context, proxy string, barePort, batonPort, batonPid int) (steadyRow, error) {
	row := steadyRow{Proxy: proxy}
	var bareBest, batonBest *load.Result
	run := func(port int, d time.Duration) (*load.Result, error) {
		runtime.GC() // the previous run's samples are not collected during this one
		return load.Run(ctx, load.Config{Addr: addr(port), Workers: b.plan.Workers, Mode: load.KeepAlive, Duration: d})
	}
	for _, side := range []int{barePort, batonPort} { // warm both up, unmeasured
		if _, err := run(side, steadyWarmup); err != nil {
			return row, err
		}
	}
	for round := range b.plan.SteadyRounds {
		// bare, baton, then baton, bare: a drift of the machine over the
		// runs (another process, the CPU's clock) weighs on both sides.
		order := []int{barePort, batonPort}
		if round%2 == 1 {
			order = []int{batonPort, barePort}
		}
		for _, side := range order {
			before, _ := footprintOf(batonPid)
			res, err := run(side, b.plan.Steady.D())
			if err != nil {
				return row, err
			}
			if ctx.Err() != nil {
				return row, ctx.Err()
			}
			row.Failed += res.Failed
			rate := okRate(res)
			if side == barePort {
				row.Bare = append(row.Bare, round1(rate))
				if bareBest == nil || rate > okRate(bareBest) {
					bareBest = res
				}
				continue
			}
			after, _ := footprintOf(batonPid)
			row.BatonCPUms += float64(after.Ticks-before.Ticks) * float64(clockTick/time.Millisecond)
			row.Baton = append(row.Baton, round1(rate))
			if batonBest == nil || rate > okRate(batonBest) {
				batonBest = res
			}
		}
	}
	if bareBest == nil || batonBest == nil {
		return row, fmt.Errorf("no steady-state run")
	}
	row.Ratio = ratio(median(row.Baton), median(row.Bare))
	row.BareLatency = latencyOf(bareBest)
	row.BatonLatency = latencyOf(batonBest)
	return row, nil
}

func latencyOf(res *load.Result) durStats {
	return durStats{N: res.Counts[load.OK], P50: ms(res.Percentile(50)), P99: ms(res.Percentile(99))}
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
