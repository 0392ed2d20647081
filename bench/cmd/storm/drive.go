package main

import (
	"context"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// stormSpec is one storm: load as described, and a reload due every
// interval from warmup after the load began until tail before it ends.
type stormSpec struct {
	load     load.Config
	interval time.Duration
	warmup   time.Duration
	tail     time.Duration
	policy   busyPolicy
	// reload runs the seq-th reload (from 1) and returns when it is done.
	// version is what the reload installed (0 if unknown).
	reload func(ctx context.Context, seq int) (version int, info reloadInfo, err error)
}

// reloadRecord is one reload of a storm.
type reloadRecord struct {
	Seq        int
	Version    int
	Start, End time.Time
	Info       reloadInfo
	Err        error
}

// stormOutcome is what a storm produced.
type stormOutcome struct {
	res     *load.Result
	reloads []reloadRecord
	due     int
	skipped int
}

// acks are the reloads that succeeded, at the time they returned.
func (o *stormOutcome) acks() []load.Ack {
	var acks []load.Ack
	for _, r := range o.reloads {
		if r.Err == nil && r.Version > 0 {
			acks = append(acks, load.Ack{At: r.End, Version: r.Version})
		}
	}
	return acks
}

// driveStorm runs the load and, on this goroutine, the reload cadence: one
// timer armed from the schedule's deadline, one reload at a time on a
// goroutine this function waits for. It returns when the load has ended
// and no reload runs. Cancelling ctx ends the load early.
func driveStorm(ctx context.Context, spec stormSpec) (*stormOutcome, error) {
	if err := spec.load.Validate(); err != nil {
		return nil, err
	}
	loadc := make(chan loadDone, 1)
	begin := time.Now()
	go func() {
		res, err := load.Run(ctx, spec.load)
		loadc <- loadDone{res, err}
	}()
	sched := newSchedule(begin.Add(spec.warmup), begin.Add(spec.load.Duration-spec.tail), spec.interval, spec.policy)
	out := &stormOutcome{}
	done := make(chan reloadRecord, 1)
	seq := 0
	launch := func() {
		seq++
		go func(seq int) {
			r := reloadRecord{Seq: seq, Start: time.Now()}
			r.Version, r.Info, r.Err = spec.reload(ctx, seq)
			r.End = time.Now()
			if !r.Info.AckAt.IsZero() {
				r.End = r.Info.AckAt
			}
			done <- r
		}(seq)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	cancelled := ctx.Done()
	for !sched.Finished() {
		var tick <-chan time.Time
		if at, more := sched.Deadline(); more {
			timer.Reset(time.Until(at))
			tick = timer.C
		}
		select {
		case <-tick:
			if sched.Tick(time.Now()) {
				launch()
			}
		case r := <-done:
			out.reloads = append(out.reloads, r)
			if sched.Done(time.Now()) {
				launch()
			}
		case <-cancelled:
			cancelled = nil
			sched.Stop(time.Now())
		}
	}
	ld := <-loadc
	out.due, out.skipped = sched.Due, sched.Skipped
	out.res = ld.res
	return out, ld.err
}

// loadDone is the end of a load run.
type loadDone struct {
	res *load.Result
	err error
}
