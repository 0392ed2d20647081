package load

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Sample records one request.
type Sample struct {
	// Start is when the request began: before the dial if the request had
	// to dial (always in NewConn mode, for the first request on each
	// connection in KeepAlive mode), otherwise before writing the request.
	Start time.Time
	// ConnStart is when the dial of the connection this request used
	// began (equal to Start if the request dialed).
	ConnStart time.Time
	// Latency is from Start to the end of the response body, or to the
	// failure.
	Latency time.Duration
	// Gen is the value of Config.GenHeader in the response, "" if absent.
	Gen string
	// Err is a short error text for failures; for status failures it is
	// the status line, e.g. "503 Service Unavailable".
	Err string
	// Worker is the index of the worker that made the request.
	Worker int
	// ConnID identifies the connection (unique within a run, from 1);
	// 0 if the dial failed.
	ConnID uint64
	// Status is the HTTP status code, 0 if no response head was read.
	Status int
	// Class is the outcome of the request.
	Class Class
	// Reused is true if the connection served an earlier request.
	Reused bool
}

// Result is the outcome of a run.
type Result struct {
	// Samples holds every completed request sorted by Start.
	Samples []Sample
	// Counts is the number of samples per class.
	Counts map[Class]int
	// Total is len(Samples).
	Total int
	// Failed is the number of samples whose class is not OK.
	Failed int
	// Aborted is the number of requests interrupted by cancellation of
	// the run's context; they have no Sample and are not failures.
	Aborted int
	// ClosedIdle (HTTP3 keep-alive runs) counts the connections found
	// closed, or shut down by a GOAWAY, between two requests, by why:
	// a failure class name ("stateless_reset", "idle_timeout",
	// "application_close", ...) or "goaway". The next request dialed a
	// new connection; these are not failures. Nil when there were none.
	ClosedIdle map[string]int
	// Resent (HTTP3) counts the requests the server did not process and
	// that were sent once more on a new connection, by why:
	// "request_rejected" (the stream was reset with H3_REQUEST_REJECTED)
	// or "above_goaway" (the server's GOAWAY named a stream ID at or below
	// the request's, then the request failed before any response). The
	// sample is the second attempt's. Nil when there were none.
	Resent map[string]int
	// Start is when the run began.
	Start time.Time
	// Elapsed is the wall time of the run, including waiting for workers.
	Elapsed time.Duration

	okLatencies []time.Duration // sorted, computed by newResult
}

func newResult(start time.Time, elapsed time.Duration, workers []*worker) *Result {
	n := 0
	for _, w := range workers {
		n += len(w.samples)
	}
	r := &Result{
		Samples: make([]Sample, 0, n),
		Counts:  make(map[Class]int),
		Start:   start,
		Elapsed: elapsed,
	}
	for _, w := range workers {
		r.Samples = append(r.Samples, w.samples...)
		r.Aborted += w.aborted
		for why, n := range w.resent {
			if r.Resent == nil {
				r.Resent = make(map[string]int)
			}
			r.Resent[why] += n
		}
		for why, n := range w.closedIdle {
			if r.ClosedIdle == nil {
				r.ClosedIdle = make(map[string]int)
			}
			r.ClosedIdle[why] += n
		}
	}
	slices.SortStableFunc(r.Samples, func(a, b Sample) int {
		return a.Start.Compare(b.Start)
	})
	for _, s := range r.Samples {
		r.Counts[s.Class]++
	}
	r.Total = len(r.Samples)
	r.Failed = r.Total - r.Counts[OK]
	r.okLatencies = r.sortedOKLatencies()
	return r
}

func (r *Result) sortedOKLatencies() []time.Duration {
	lat := make([]time.Duration, 0, r.Counts[OK])
	for _, s := range r.Samples {
		if s.Class == OK {
			lat = append(lat, s.Latency)
		}
	}
	slices.Sort(lat)
	return lat
}

// Percentile returns the p-th percentile (p in [0, 100], e.g. 99.9) of the
// latencies of OK samples, using the nearest-rank method; 0 if there are
// none.
func (r *Result) Percentile(p float64) time.Duration {
	lat := r.okLatencies
	if lat == nil {
		lat = r.sortedOKLatencies()
	}
	if len(lat) == 0 || math.IsNaN(p) {
		return 0
	}
	p = min(max(p, 0), 100)
	rank := int(math.Ceil(p / 100 * float64(len(lat))))
	return lat[min(max(rank-1, 0), len(lat)-1)]
}

// PerSecond returns the number of OK responses completed in each 1-second
// bucket since Start. It covers at least Elapsed.
func (r *Result) PerSecond() []int {
	n := int((r.Elapsed + time.Second - 1) / time.Second)
	buckets := make([]int, n)
	for _, s := range r.Samples {
		if s.Class != OK {
			continue
		}
		i := int(s.Start.Add(s.Latency).Sub(r.Start) / time.Second)
		if i < 0 {
			i = 0
		}
		for len(buckets) <= i {
			buckets = append(buckets, 0)
		}
		buckets[i]++
	}
	return buckets
}

// Failures returns up to n failed samples, in Start order.
func (r *Result) Failures(n int) []Sample {
	var out []Sample
	for _, s := range r.Samples {
		if len(out) >= n {
			break
		}
		if s.Class != OK {
			out = append(out, s)
		}
	}
	return out
}

// Summary returns a one-line summary: totals, every non-zero failure class,
// p50/p99 latency of OK responses and the request rate.
func (r *Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "total=%d ok=%d failed=%d", r.Total, r.Counts[OK], r.Failed)
	for _, c := range Classes()[1:] {
		if n := r.Counts[c]; n > 0 {
			fmt.Fprintf(&b, " %s=%d", c, n)
		}
	}
	if r.Aborted > 0 {
		fmt.Fprintf(&b, " aborted=%d", r.Aborted)
	}
	for _, why := range slices.Sorted(maps.Keys(r.Resent)) {
		fmt.Fprintf(&b, " resent_%s=%d", why, r.Resent[why])
	}
	for _, why := range slices.Sorted(maps.Keys(r.ClosedIdle)) {
		fmt.Fprintf(&b, " closed_idle_%s=%d", why, r.ClosedIdle[why])
	}
	rate := 0.0
	if r.Elapsed > 0 {
		rate = float64(r.Total) / r.Elapsed.Seconds()
	}
	fmt.Fprintf(&b, " p50=%v p99=%v rate=%.1f/s elapsed=%v",
		r.Percentile(50), r.Percentile(99), rate, r.Elapsed.Round(time.Millisecond))
	return b.String()
}

// String returns a compact description of the sample for error messages.
func (s Sample) String() string {
	return fmt.Sprintf("worker=%d conn=%d reused=%t start=%s latency=%v class=%s status=%d gen=%q err=%q",
		s.Worker, s.ConnID, s.Reused, s.Start.Format("15:04:05.000000"),
		s.Latency, s.Class, s.Status, s.Gen, s.Err)
}
