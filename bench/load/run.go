package load

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// maxInterned bounds the per-worker table of distinct generation strings.
const maxInterned = 256

// maxPrealloc bounds the samples preallocated per worker.
const maxPrealloc = 1 << 16

// runner holds the state shared by the workers of one run.
type runner struct {
	cfg    Config
	req    []byte
	dialer net.Dialer
	// abort is the caller's context: cancelling it interrupts in-flight
	// requests.
	abort context.Context
	// stop is done when no new request may start (Duration or abort).
	stop    context.Context
	issued  atomic.Int64
	connIDs atomic.Uint64
	pace    *pacer
	h3      *h3Dialer // HTTP3 runs only
}

// Run generates load as described by cfg until Duration elapses, MaxRequests
// requests have been made, or ctx is cancelled, whichever comes first. It
// waits for every worker and closes every connection before returning.
//
// Cancelling ctx is a normal way to end a run: Run then returns the samples
// collected so far and a nil error; requests interrupted by the cancellation
// are counted in Result.Aborted only. The only error is an invalid Config.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	limit := cfg.Duration
	if limit == 0 {
		limit = MaxDuration
	}
	start := time.Now()
	stop, cancel := context.WithDeadline(ctx, start.Add(limit))
	defer cancel()
	r := &runner{
		cfg:    cfg,
		req:    cfg.requestBytes(),
		dialer: net.Dialer{Timeout: cfg.ConnectTimeout},
		abort:  ctx,
		stop:   stop,
		pace:   newPacer(cfg.paceInterval()),
	}
	if cfg.Proto == HTTP3 {
		if r.h3, err = newH3Dialer(cfg); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	workers := make([]*worker, cfg.Workers)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{r: r, id: i, gens: make(map[string]string)}
		if cfg.MaxRequests > 0 {
			w.samples = make([]Sample, 0, min(cfg.MaxRequests/cfg.Workers+1, maxPrealloc))
		}
		workers[i] = w
		wg.Go(w.run)
	}
	wg.Wait()
	return newResult(start, time.Since(start), workers), nil
}

// admit reports whether the calling worker may start another request,
// waiting for the rate limiter if one is configured.
func (r *runner) admit() bool {
	// abort too: stop derives from it, and a cancelled parent marks its
	// children done a moment later, in which a worker whose request was
	// aborted would spin through aborted requests.
	if r.stop.Err() != nil || r.abort.Err() != nil {
		return false
	}
	if r.cfg.MaxRequests > 0 && r.issued.Add(1) > int64(r.cfg.MaxRequests) {
		return false
	}
	return r.pace.wait(r.stop)
}

// worker issues requests sequentially over at most one connection.
type worker struct {
	r       *runner
	id      int
	conn    *conn
	samples []Sample
	aborted int
	gens    map[string]string
	// h3 is the worker's HTTP/3 connection (HTTP3 runs; conn is unused),
	// closedIdle counts its connections found closed between requests.
	h3         *h3Conn
	closedIdle map[string]int
	// resent counts the HTTP/3 requests sent again because the server
	// had not processed them, by why.
	resent map[string]int
}

func (w *worker) run() {
	defer w.drop()
	for w.r.admit() {
		s, ok := w.request()
		if !ok {
			w.aborted++
			continue
		}
		w.samples = append(w.samples, s)
	}
}

// request performs one request, dialing first if the worker has no
// connection. ok is false if the request was aborted by cancellation.
func (w *worker) request() (s Sample, ok bool) {
	if w.r.cfg.Proto == HTTP3 {
		return w.requestH3()
	}
	s = Sample{Worker: w.id, Start: time.Now()}
	if w.conn == nil {
		id := w.r.connIDs.Add(1)
		c, err := dial(w.r.abort, &w.r.dialer, w.r.cfg.Addr, id, s.Start)
		if err != nil {
			s.ConnStart = s.Start
			o := outcome{class: dialClass(w.r.abort, err), err: err.Error(), end: time.Now()}
			return w.finish(s, o)
		}
		w.conn = c
	} else {
		s.Reused = true
	}
	c := w.conn
	s.ConnID, s.ConnStart = c.id, c.start
	o := c.roundTrip(w.r.abort, w.r.req, w.r.cfg.ReadTimeout, w.r.cfg.GenHeader)
	if !o.keep || w.r.cfg.Mode == NewConn {
		w.drop()
	}
	return w.finish(s, o)
}

func (w *worker) finish(s Sample, o outcome) (Sample, bool) {
	if o.class == aborted {
		return s, false
	}
	s.Latency = o.end.Sub(s.Start)
	s.Class, s.Status, s.Err = o.class, o.status, o.err
	s.Gen = w.intern(o.gen)
	return s, true
}

// drop closes the worker's connection, if any.
func (w *worker) drop() {
	if w.conn != nil {
		w.conn.close()
		w.conn = nil
	}
	if w.h3 != nil {
		w.h3.close()
		w.h3 = nil
	}
}

// intern shares the backing memory of repeated generation strings so that
// hundreds of thousands of samples do not each hold a copy.
func (w *worker) intern(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := w.gens[s]; ok {
		return v
	}
	if len(w.gens) < maxInterned {
		w.gens[s] = s
	}
	return s
}

// pacer spaces request starts across all workers by a fixed interval.
type pacer struct {
	mu       sync.Mutex
	next     time.Time
	interval time.Duration
}

// newPacer returns nil (no pacing) when interval is 0.
func newPacer(interval time.Duration) *pacer {
	if interval <= 0 {
		return nil
	}
	return &pacer{interval: interval}
}

// wait reserves the next start slot and blocks until it arrives. It returns
// false if stop is done first. A nil pacer never waits.
func (p *pacer) wait(stop context.Context) bool {
	if p == nil {
		return true
	}
	p.mu.Lock()
	now := time.Now()
	slot := p.next
	if slot.Before(now) {
		slot = now
	}
	p.next = slot.Add(p.interval)
	p.mu.Unlock()
	d := slot.Sub(now)
	if d <= 0 {
		return stop.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return stop.Err() == nil
	case <-stop.Done():
		return false
	}
}
