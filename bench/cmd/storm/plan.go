package main

import (
	"encoding/json"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// dur is a duration that reads as "1.5s" in JSON.
type dur time.Duration

func (d dur) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// D is the plain duration.
func (d dur) D() time.Duration { return time.Duration(d) }

// plan is how long and how big every scenario of a bench is. 24 storms of
// 60 s each would take 24 minutes alone, so the full plan runs the 100 ms
// storms for 20 s (200 reloads due) and the 1 s storms for 10 s, which with
// everything else fits 15 minutes on 2 cores (about 12 on the reference
// machine); `storm bench --storm 60s` runs every storm for a minute. QUICK
// keeps only what can finish in 2 minutes.
type plan struct {
	Quick bool `json:"quick"`
	// Workers is the number of load clients in storms and kill runs.
	Workers int `json:"workers"`
	// StormFast and StormSlow are the durations of the 100 ms and 1 s
	// storms (0: not run); reloads are due from Warmup after the load
	// starts until Tail before it ends.
	StormFast dur `json:"storm_100ms"`
	StormSlow dur `json:"storm_1s"`
	Warmup    dur `json:"warmup"`
	Tail      dur `json:"tail"`
	// Steady is one steady-state load run; each of bare and baton runs
	// SteadyRounds times, alternating.
	Steady       dur `json:"steady"`
	SteadyRounds int `json:"steady_rounds"`
	// Kill is a kill -9 run: the first kill at KillFirst, then every
	// KillEvery while at least a second of load is left.
	Kill      dur `json:"kill"`
	KillFirst dur `json:"kill_first"`
	KillEvery dur `json:"kill_every"`
	// LatencyReloads is the number of sequential reloads per method on an
	// idle machine.
	LatencyReloads int `json:"latency_reloads"`
	// ScaleReloads baton reloads of a child that is ready at once,
	// sampling baton every ScaleSampleEvery; ActivatedReloads more with
	// examples/activated.
	ScaleReloads     int `json:"scale_reloads"`
	ScaleSampleEvery int `json:"scale_sample_every"`
	ActivatedReloads int `json:"activated_reloads"`
	// Listeners handed to one generation; Draining generations held.
	Listeners int `json:"listeners"`
	Draining  int `json:"draining"`
	// BigBackends and BigCerts size the big configs (0: not run);
	// BigReloads is the number of idle reloads and `haproxy -c` runs on
	// each.
	BigBackends int `json:"big_backends"`
	BigCerts    int `json:"big_certs"`
	BigReloads  int `json:"big_reloads"`
	// During is a keep-alive load run at DuringRate requests/s on the
	// big-certificates config, with a reload due every DuringEvery (0:
	// not run).
	During      dur     `json:"during"`
	DuringEvery dur     `json:"during_every"`
	DuringRate  float64 `json:"during_rate"`
}

func fullPlan() plan {
	return plan{
		Workers:   16,
		StormFast: dur(20 * time.Second), StormSlow: dur(10 * time.Second),
		Warmup: dur(time.Second), Tail: dur(time.Second),
		Steady: dur(2 * time.Second), SteadyRounds: 8,
		Kill: dur(20 * time.Second), KillFirst: dur(2500 * time.Millisecond), KillEvery: dur(5 * time.Second),
		LatencyReloads: 20,
		ScaleReloads:   10000, ScaleSampleEvery: 500, ActivatedReloads: 1000,
		Listeners: 1000, Draining: 64,
		BigBackends: 10000, BigCerts: 1000, BigReloads: 6,
		During: dur(10 * time.Second), DuringEvery: dur(2 * time.Second), DuringRate: 1000,
	}
}

func quickPlan() plan {
	return plan{
		Quick:     true,
		Workers:   16,
		StormFast: dur(4 * time.Second), StormSlow: 0,
		Warmup: dur(500 * time.Millisecond), Tail: dur(500 * time.Millisecond),
		Steady: dur(time.Second), SteadyRounds: 2,
		Kill: dur(4 * time.Second), KillFirst: dur(1500 * time.Millisecond), KillEvery: dur(5 * time.Second),
		LatencyReloads: 5,
		ScaleReloads:   300, ScaleSampleEvery: 50, ActivatedReloads: 50,
		Listeners: 1000, Draining: 16,
		BigBackends: 0, BigCerts: 100, BigReloads: 3,
	}
}

// stormDuration is how long a storm at interval runs (0: not run).
func (p plan) stormDuration(interval time.Duration) time.Duration {
	if interval < time.Second {
		return p.StormFast.D()
	}
	return p.StormSlow.D()
}

// stormIntervals and stormModes are the storm matrix.
var (
	stormIntervals = []time.Duration{100 * time.Millisecond, time.Second}
	stormModes     = []load.Mode{load.NewConn, load.KeepAlive}
)

// killTimes are the offsets of the kills in a kill run.
func (p plan) killTimes() []time.Duration {
	var out []time.Duration
	for t := p.KillFirst.D(); t <= p.Kill.D()-time.Second; t += p.KillEvery.D() {
		out = append(out, t)
		if p.KillEvery <= 0 {
			break
		}
	}
	return out
}
