package lifecycle

import (
	"errors"
	"flag"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("seed", 20260101, "base seed of TestRandomEventOrder; sequence i uses seed+i")

const (
	randomSequences = 200
	randomEvents    = 300
)

// TestRandomEventOrder feeds the machine random but plausible event
// sequences: what a real executor could report given the actions so far,
// in any order, plus stale and duplicate events. After every step the
// invariants hold; at the end the machine is driven to its exit and every
// request must have had exactly one reply and Exit must have come once.
func TestRandomEventOrder(t *testing.T) {
	base := *seedFlag
	t.Logf("base seed %d (rerun one sequence with -run 'TestRandomEventOrder/seed=N$' -seed=%d, or a failing one as sequence 0 with -seed=N)", base, base)
	for i := range uint64(randomSequences) {
		seed := base + i
		t.Run(seedName(seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			runRandom(t, seed, randomEvents)
		})
	}
}

func seedName(seed uint64) string { return "seed=" + strconv.FormatUint(seed, 10) }

// randomConfig picks short, varied timings so deadlines, backoff and the
// generation cap all come into play within a few hundred events.
func randomConfig(r *rand.Rand) Config {
	d := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo))) }
	c := Config{
		ReadyTimeout:   d(200*ms, 5*time.Second),
		DrainTimeout:   d(100*ms, 20*time.Second),
		KillGrace:      d(20*ms, 2*time.Second),
		MaxGenerations: 1 + r.IntN(5),
		BackoffMin:     d(5*ms, 300*ms),
		StableAfter:    d(50*ms, 5*time.Second),
	}
	c.BackoffMax = c.BackoffMin * time.Duration(1+r.IntN(20))
	return c
}

var (
	errRandCheck = errors.New("random check failure")
	errRandStart = errors.New("random start failure")
	errRandExit  = errors.New("random child output")
)

func runRandom(t *testing.T, seed uint64, n int) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	h := newHarness(t, randomConfig(r))
	if r.IntN(10) > 0 {
		// Most sequences start from a serving g1, so that they explore
		// reloads, crashes and drains rather than a failed first reload.
		h.step(ReloadRequested{At: h.now, Req: h.newReq()})
		h.step(CheckDone{At: h.now, Gen: 1})
		h.step(Started{At: h.now, Gen: 1, Pid: 100})
		h.step(Ready{At: h.now, Gen: 1})
	}
	stopAt := n/2 + r.IntN(n) // half of the sequences stop before the end
	for i := range n {
		h.now = h.now.Add(time.Duration(r.IntN(20)) * ms)
		if i == stopAt {
			h.step(StopRequested{At: h.now, Req: h.newReq(), Fast: r.IntN(2) == 0})
			continue
		}
		h.step(randomEvent(r, h))
	}
	h.quiesce()
}

// randomEvent picks one plausible event given what the world knows.
func randomEvent(r *rand.Rand, h *harness) Event {
	w, now := h.w, h.now
	type option struct {
		weight int
		make   func() Event
	}
	var opts []option
	add := func(weight int, f func() Event) { opts = append(opts, option{weight, f}) }
	pick := func(m map[Gen]bool) Gen { return randKey(r, m) }

	add(10, func() Event { return ReloadRequested{At: now, Req: h.newReq()} })
	if len(w.checks) > 0 {
		add(16, func() Event { return CheckDone{At: now, Gen: pick(w.checks)} })
		add(4, func() Event { return CheckDone{At: now, Gen: pick(w.checks), Err: errRandCheck} })
	}
	if len(w.starts) > 0 {
		add(16, func() Event {
			w.nextPid++
			return Started{At: now, Gen: pick(w.starts), Pid: w.nextPid}
		})
		add(3, func() Event { return Started{At: now, Gen: pick(w.starts), Err: errRandStart} })
	}
	notReady := map[Gen]bool{}
	signalled := map[Gen]bool{}
	live := map[Gen]bool{}
	for g := range w.procs {
		live[g] = true
		if !w.ready[g] {
			notReady[g] = true
		}
		if len(w.signals[g]) > 0 {
			signalled[g] = true
		}
	}
	if len(notReady) > 0 {
		add(14, func() Event { return Ready{At: now, Gen: pick(notReady)} })
	}
	if len(w.watch) > 0 {
		add(10, func() Event { return Released{At: now, Gen: pick(w.watch)} })
	}
	if len(live) > 0 {
		// Crashes: any live process may die, with or without output.
		add(3, func() Event {
			e := Exited{At: now, Gen: pick(live), Status: []int{0, 1, 2, 134, 139}[r.IntN(5)]}
			if r.IntN(2) == 0 {
				e.Err = errRandExit
			}
			return e
		})
	}
	if len(signalled) > 0 {
		add(12, func() Event {
			g := pick(signalled)
			status := 0
			switch w.signals[g][len(w.signals[g])-1] {
			case Stop:
				status = 143
			case Kill:
				status = 137
			}
			return Exited{At: now, Gen: g, Status: status}
		})
	}
	add(8, func() Event { return Tick{At: now.Add(time.Duration(r.IntN(500)) * ms)} })
	if next := h.m.NextDeadline(); !next.IsZero() {
		add(3, func() Event { return Tick{At: maxTime(now, next.Add(time.Duration(r.IntN(3))*ms))} })
	}
	add(1, func() Event { return Tick{At: now.Add(time.Duration(1+r.IntN(10)) * time.Minute)} })
	if h.m.Stopping() {
		// More stop requests (a fast one escalates), also after the exit.
		add(1, func() Event { return StopRequested{At: now, Req: h.newReq(), Fast: r.IntN(2) == 0} })
	}
	// Stale and duplicate events: about generations already gone, never
	// seen, or repeating what was already reported.
	add(3, func() Event {
		g := Gen(r.IntN(int(w.maxGen) + 3))
		if len(w.gone) > 0 && r.IntN(2) == 0 {
			g = w.gone[r.IntN(len(w.gone))]
		}
		if w.procs[g] != 0 || w.starts[g] || w.checks[g] || w.watch[g] {
			g = w.maxGen + 10 // not stale after all: use an unknown one
		}
		switch r.IntN(5) {
		case 0:
			return CheckDone{At: now, Gen: g}
		case 1:
			return Started{At: now, Gen: g, Pid: 99999}
		case 2:
			return Ready{At: now, Gen: g}
		case 3:
			return Released{At: now, Gen: g}
		default:
			return Exited{At: now, Gen: g, Status: 1}
		}
	})
	if len(w.ready) > 0 {
		// A repeated Ready for a generation already reported ready.
		add(1, func() Event { return Ready{At: now, Gen: pick(w.ready)} })
	}

	total := 0
	for _, o := range opts {
		total += o.weight
	}
	n := r.IntN(total)
	for _, o := range opts {
		if n < o.weight {
			return o.make()
		}
		n -= o.weight
	}
	panic("unreachable")
}

// randKey picks a key of m; the keys are sorted first so that a seed
// always picks the same one despite random map order.
func randKey(r *rand.Rand, m map[Gen]bool) Gen {
	keys := slices.Sorted(maps.Keys(m))
	return keys[r.IntN(len(keys))]
}
