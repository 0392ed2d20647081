package main

import (
	"reflect"
	"testing"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

var t0 = time.Unix(1_000_000, 0)

// sample is an OK or failed request from start to start+lat (ms offsets).
func sample(startMs, latMs int, c load.Class, gen string) load.Sample {
	st := t0.Add(time.Duration(startMs) * time.Millisecond)
	return load.Sample{Start: st, ConnStart: st, Latency: time.Duration(latMs) * time.Millisecond, Class: c, Gen: gen}
}

func result(elapsed time.Duration, ss ...load.Sample) *load.Result {
	r := &load.Result{Samples: ss, Counts: map[load.Class]int{}, Start: t0, Elapsed: elapsed, Total: len(ss)}
	for _, s := range ss {
		r.Counts[s.Class]++
	}
	r.Failed = r.Total - r.Counts[load.OK]
	return r
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := summarize(ds)
	want := durStats{N: 100, P50: 50, P99: 99, Max: 100, Mean: 50.5}
	if got != want {
		t.Errorf("summarize = %+v, want %+v", got, want)
	}
	if (summarize(nil) != durStats{}) {
		t.Errorf("summarize(nil) not zero")
	}
	if got := summarize([]time.Duration{1500 * time.Microsecond}); got.P50 != 1.5 || got.P99 != 1.5 {
		t.Errorf("one value: %+v", got)
	}
}

func TestSeries(t *testing.T) {
	r := result(1000*time.Millisecond,
		sample(0, 10, load.OK, "1"),
		sample(100, 200, load.OK, "1"),   // ends at 300: bucket 1
		sample(240, 5, load.Refused, ""), // ends at 245: bucket 0
		sample(900, 200, load.OK, "2"),   // ends at 1100: bucket 4, beyond Elapsed
	)
	got := series(r, 250*time.Millisecond)
	want := []bucket{{T: 0, OK: 1, Failed: 1}, {T: 0.25, OK: 1}, {T: 0.5}, {T: 0.75}, {T: 1, OK: 1}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("series = %+v\nwant %+v", got, want)
	}
}

func TestLongestGapAndRecoveries(t *testing.T) {
	r := result(3*time.Second,
		sample(0, 10, load.OK, "1"),     // ends 10
		sample(20, 10, load.OK, "1"),    // ends 30
		sample(40, 1, load.Refused, ""), // failure
		sample(1000, 500, load.OK, "2"), // ends 1500: gap 30..1500
		sample(1100, 100, load.OK, "2"), // ends 1200: gap 30..1200
		sample(1300, 1, load.OK, "2"),   // ends 1301
		sample(2000, 100, load.ResetBeforeResponse, ""),
	)
	gap, at := longestGap(r, t0, t0.Add(3*time.Second))
	if gap != 1500*time.Millisecond || at != 1.5 {
		t.Errorf("longestGap = %v at %v, want 1.5s at 1.5 (last OK to the end)", gap, at)
	}
	gap, at = longestGap(r, t0, t0.Add(1500*time.Millisecond))
	if gap != 1170*time.Millisecond || at != 0.03 {
		t.Errorf("longestGap to 1.5s = %v at %v, want 1.17s at 0.03", gap, at)
	}
	rec := recoveries(r, []time.Time{t0.Add(35 * time.Millisecond), t0.Add(2500 * time.Millisecond)})
	if rec[0] != 1165*time.Millisecond || rec[1] != -1 {
		t.Errorf("recoveries = %v, want [1.165s -1]", rec)
	}
}

func TestAnswersByVersionAndClasses(t *testing.T) {
	r := result(time.Second,
		sample(0, 10, load.OK, "b"),
		sample(5, 1, load.OK, "a"),
		sample(20, 10, load.OK, "b"),
		sample(30, 1, load.EOFBeforeResponse, ""),
		sample(40, 1, load.EOFBeforeResponse, ""),
	)
	got := answersByVersion(r)
	want := []versionCount{{Version: "a", Count: 1, First: 0.006, Last: 0.006}, {Version: "b", Count: 2, First: 0.01, Last: 0.03}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("answersByVersion = %+v, want %+v", got, want)
	}
	if c := failureClasses(r); !reflect.DeepEqual(c, map[string]int{"eof_before_response": 2}) {
		t.Errorf("failureClasses = %v", c)
	}
	if ratio(98, 100) != 0.98 || ratio(1, 0) != 0 {
		t.Errorf("ratio wrong")
	}
}
