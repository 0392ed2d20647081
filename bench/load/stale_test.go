package load

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

func sample(t0 time.Time, connAt, startAt int, gen string, c Class) Sample {
	return Sample{
		ConnStart: t0.Add(time.Duration(connAt) * time.Second),
		Start:     t0.Add(time.Duration(startAt) * time.Second),
		Gen:       gen,
		Class:     c,
	}
}

func TestStale(t *testing.T) {
	t0 := time.Now()
	// Deliberately unsorted.
	acks := []Ack{{At: t0.Add(20 * time.Second), Version: 3}, {At: t0.Add(10 * time.Second), Version: 2}}
	samples := []Sample{
		sample(t0, 5, 25, "1", OK),         // pre-reload conn: old conn answer, not stale
		sample(t0, 5, 15, "2", OK),         // pre-reload conn, answered by v2 after ack v2: fine
		sample(t0, 5, 15, "1", OK),         // old conn answer
		sample(t0, 10, 12, "1", OK),        // dialed exactly at the ack: not after it
		sample(t0, 11, 11, "1", OK),        // stale (< 2)
		sample(t0, 11, 11, "2", OK),        // fine
		sample(t0, 21, 21, "2", OK),        // stale (< 3)
		sample(t0, 21, 21, "3", OK),        // fine
		sample(t0, 21, 21, "x", OK),        // unparseable: skipped
		sample(t0, 21, 21, "1", Status5xx), // not OK: skipped
	}
	stale := Stale(samples, acks, parseGen)
	if len(stale) != 2 || stale[0] != samples[4] || stale[1] != samples[6] {
		t.Fatalf("stale = %v", stale)
	}
	if acks[0].Version != 3 {
		t.Fatal("Stale reordered the caller's acks")
	}
	if n := OldConnAnswers(samples, acks, parseGen); n != 2 {
		t.Fatalf("old conn answers = %d, want 2", n)
	}
	if got := Stale(samples, nil, parseGen); len(got) != 0 {
		t.Fatalf("no acks: stale = %v", got)
	}
}

func TestStaleLarge(t *testing.T) {
	t0 := time.Now()
	var acks []Ack
	for v := 1; v <= 100; v++ {
		acks = append(acks, Ack{At: t0.Add(time.Duration(v) * time.Second), Version: v})
	}
	gens := make([]string, 102)
	for i := range gens {
		gens[i] = strconv.Itoa(i)
	}
	samples := make([]Sample, 300000)
	want := 0
	for i := range samples {
		ms := i % 101000
		v := ms / 1000
		// Every 1000th answer (never on a second boundary) is one
		// generation behind; it is stale once some ack precedes it.
		if i%1000 == 7 && v >= 1 {
			v--
			want++
		}
		samples[i] = Sample{Start: t0.Add(time.Duration(ms) * time.Millisecond), Gen: gens[v]}
		samples[i].ConnStart = samples[i].Start
	}
	start := time.Now()
	got := Stale(samples, acks, parseGen)
	if len(got) != want || want == 0 {
		t.Fatalf("stale = %d, want %d", len(got), want)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Stale took %v for %d samples", d, len(samples))
	}
}

func TestResultHelpers(t *testing.T) {
	t0 := time.Now()
	r := &Result{Start: t0, Elapsed: 2500 * time.Millisecond, Counts: map[Class]int{}}
	for i := 1; i <= 100; i++ {
		r.Samples = append(r.Samples, Sample{
			Start:   t0.Add(time.Duration(i*20) * time.Millisecond),
			Latency: time.Duration(i) * time.Millisecond,
		})
	}
	r.Samples = append(r.Samples,
		Sample{Start: t0, Class: Status5xx, Status: 503, Err: "503 Service Unavailable"},
		Sample{Start: t0, Class: Refused, Err: "connection refused"})
	for _, s := range r.Samples {
		r.Counts[s.Class]++
	}
	r.Total, r.Failed = len(r.Samples), 2
	if p := r.Percentile(50); p != 50*time.Millisecond {
		t.Errorf("p50 = %v", p)
	}
	if p := r.Percentile(99); p != 99*time.Millisecond {
		t.Errorf("p99 = %v", p)
	}
	if p := r.Percentile(100); p != 100*time.Millisecond {
		t.Errorf("p100 = %v", p)
	}
	ps := r.PerSecond()
	if len(ps) != 3 || ps[0]+ps[1]+ps[2] != 100 {
		t.Errorf("per second = %v", ps)
	}
	if f := r.Failures(1); len(f) != 1 || f[0].Class != Status5xx {
		t.Errorf("failures(1) = %v", f)
	}
	if f := r.Failures(10); len(f) != 2 {
		t.Errorf("failures(10) = %v", f)
	}
	sum := r.Summary()
	for _, want := range []string{"total=102", "ok=100", "status_5xx=1", "refused=1", "p50=50ms", "p99=99ms"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary %q lacks %q", sum, want)
		}
	}
	if strings.Contains(sum, "read_timeout") {
		t.Errorf("summary %q shows a zero class", sum)
	}
}

func TestClassString(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Classes() {
		s := c.String()
		if seen[s] || strings.HasPrefix(s, "class(") {
			t.Errorf("bad or duplicate name %q", s)
		}
		seen[s] = true
	}
	if len(seen) != 17 {
		t.Errorf("got %d classes", len(seen))
	}
}
