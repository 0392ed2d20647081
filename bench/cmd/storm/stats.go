package main

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// durStats summarises durations in milliseconds. Percentiles use the
// nearest-rank method, as load.Result.Percentile does.
type durStats struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	Max  float64 `json:"max_ms"`
	Mean float64 `json:"mean_ms"`
}

func summarize(ds []time.Duration) durStats {
	if len(ds) == 0 {
		return durStats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return durStats{
		N:    len(s),
		P50:  ms(nearestRank(s, 50)),
		P99:  ms(nearestRank(s, 99)),
		Max:  ms(s[len(s)-1]),
		Mean: ms(sum / time.Duration(len(s))),
	}
}

// nearestRank is the p-th percentile of sorted (not empty).
func nearestRank(sorted []time.Duration, p float64) time.Duration {
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank-1, 0), len(sorted)-1)]
}

// ms is d in milliseconds, rounded to 0.1 ms.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Millisecond)*10) / 10
}

// bucket is one slice of a load run: responses completed in it.
type bucket struct {
	T      float64 `json:"t_s"` // start of the slice, seconds since the run began
	OK     int     `json:"ok"`
	Failed int     `json:"failed"`
}

// series counts OK and failed requests by completion time in slices of
// width from the start of the run, covering at least its elapsed time.
func series(res *load.Result, width time.Duration) []bucket {
	if width <= 0 {
		width = time.Second
	}
	n := int((res.Elapsed + width - 1) / width)
	out := make([]bucket, n)
	for _, s := range res.Samples {
		i := int(s.Start.Add(s.Latency).Sub(res.Start) / width)
		if i < 0 {
			i = 0
		}
		for len(out) <= i {
			out = append(out, bucket{})
		}
		if s.Class == load.OK {
			out[i].OK++
		} else {
			out[i].Failed++
		}
	}
	for i := range out {
		out[i].T = float64(time.Duration(i)*width) / float64(time.Second)
	}
	return out
}

// okEnds returns the completion times of OK requests, sorted.
func okEnds(res *load.Result) []time.Time {
	var ends []time.Time
	for _, s := range res.Samples {
		if s.Class == load.OK {
			ends = append(ends, s.Start.Add(s.Latency))
		}
	}
	slices.SortFunc(ends, func(a, b time.Time) int { return a.Compare(b) })
	return ends
}

// longestGap is the longest time without an OK response completing between
// from and to, and when (seconds since the run began) it started.
func longestGap(res *load.Result, from, to time.Time) (gap time.Duration, at float64) {
	prev := from
	for _, e := range append(okEnds(res), to) {
		if e.Before(from) {
			continue
		}
		if e.After(to) {
			e = to
		}
		if d := e.Sub(prev); d > gap {
			gap, at = d, prev.Sub(res.Start).Seconds()
		}
		prev = e
	}
	return gap, at
}

// recoveries returns, for each event time, how long until the first OK
// response to a request that started after it; a missing recovery is -1.
func recoveries(res *load.Result, events []time.Time) []time.Duration {
	out := make([]time.Duration, len(events))
	for i, ev := range events {
		out[i] = -1
		for _, s := range res.Samples { // sorted by Start
			if !s.Start.After(ev) || s.Class != load.OK {
				continue
			}
			if out[i] >= 0 && s.Start.Sub(ev) >= out[i] {
				break // it cannot end sooner than the best so far
			}
			if d := s.Start.Add(s.Latency).Sub(ev); out[i] < 0 || d < out[i] {
				out[i] = d
			}
		}
	}
	return out
}

// failureClasses counts the failed requests by class name.
func failureClasses(res *load.Result) map[string]int {
	out := map[string]int{}
	for _, c := range load.Classes()[1:] {
		if n := res.Counts[c]; n > 0 {
			out[c.String()] = n
		}
	}
	return out
}

// okRate is OK responses per second over the run.
func okRate(res *load.Result) float64 {
	if res.Elapsed <= 0 {
		return 0
	}
	return float64(res.Counts[load.OK]) / res.Elapsed.Seconds()
}

// versionCount is how often one value of the version header answered.
type versionCount struct {
	Version string  `json:"version"`
	Count   int     `json:"count"`
	First   float64 `json:"first_s"` // seconds since the run began
	Last    float64 `json:"last_s"`
}

// answersByVersion counts OK answers by the version header's value, in
// order of first appearance ("" for answers without the header).
func answersByVersion(res *load.Result) []versionCount {
	idx := map[string]int{}
	var out []versionCount
	for _, s := range res.Samples {
		if s.Class != load.OK {
			continue
		}
		t := s.Start.Add(s.Latency).Sub(res.Start).Seconds()
		i, ok := idx[s.Gen]
		if !ok {
			i = len(out)
			idx[s.Gen] = i
			out = append(out, versionCount{Version: s.Gen, First: t})
		}
		out[i].Count++
		out[i].First = math.Min(out[i].First, t)
		out[i].Last = math.Max(out[i].Last, t)
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].First < out[b].First })
	return out
}

// parseGen reads the X-Gen header the bench's configs send: the version.
func parseGen(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// ratio is a/b rounded to 3 decimals, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*1000) / 1000
}
