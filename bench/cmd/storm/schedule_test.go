package main

import (
	"testing"
	"time"
)

// step is one input to a schedule: a timer firing (tick) or the running
// reload ending (done), at an offset from t0, and whether a reload must
// start.
type step struct {
	at    time.Duration
	done  bool
	start bool
}

func runSteps(t *testing.T, s *schedule, t0 time.Time, steps []step) {
	t.Helper()
	for i, st := range steps {
		now := t0.Add(st.at)
		var got bool
		if st.done {
			got = s.Done(now)
		} else {
			got = s.Tick(now)
		}
		if got != st.start {
			t.Fatalf("step %d (%+v): start = %v, want %v (schedule %+v)", i, st, got, st.start, *s)
		}
	}
}

func TestScheduleCadence(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	cases := []struct {
		name                 string
		policy               busyPolicy
		steps                []step
		due, started, skip   int
		finished, hasNextDue bool
	}{
		{
			name:   "fast reloads start at every tick",
			policy: skipBusy,
			steps: []step{
				{at: 100 * ms, start: true}, {at: 110 * ms, done: true},
				{at: 200 * ms, start: true}, {at: 230 * ms, done: true},
				{at: 300 * ms, start: true}, {at: 301 * ms, done: true},
			},
			due: 3, started: 3, skip: 0, finished: false, hasNextDue: true,
		},
		{
			name:   "skip drops ticks that find a reload running",
			policy: skipBusy,
			steps: []step{
				{at: 100 * ms, start: true},
				{at: 200 * ms}, {at: 300 * ms},
				{at: 350 * ms, done: true},
				{at: 400 * ms, start: true},
			},
			due: 4, started: 2, skip: 2, hasNextDue: true,
		},
		{
			name:   "wait starts the due reload when the running one ends and folds the rest",
			policy: waitBusy,
			steps: []step{
				{at: 100 * ms, start: true},
				{at: 200 * ms}, {at: 300 * ms}, {at: 400 * ms},
				{at: 450 * ms, done: true, start: true},
				{at: 500 * ms},
				{at: 520 * ms, done: true, start: true},
			},
			due: 5, started: 3, skip: 2, hasNextDue: true,
		},
		{
			name:   "a late timer counts every due time and starts one reload",
			policy: skipBusy,
			steps:  []step{{at: 450 * ms, start: true}},
			due:    4, started: 1, skip: 3, hasNextDue: true,
		},
		{
			name:   "a reload waiting when the window ends is dropped",
			policy: waitBusy,
			steps: []step{
				{at: 900 * ms, start: true}, // due 100..900: 1 starts, 1 waits, 7 folded
				{at: 1200 * ms, done: true},
			},
			due: 9, started: 1, skip: 8, finished: true,
		},
		{
			name:   "nothing is due at or after the end",
			policy: skipBusy,
			steps: []step{
				{at: 5 * time.Second, start: true},
				{at: 6 * time.Second, done: true},
				{at: 7 * time.Second},
			},
			due: 9, started: 1, skip: 8, finished: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSchedule(t0.Add(100*ms), t0.Add(time.Second), 100*ms, c.policy)
			runSteps(t, s, t0, c.steps)
			if s.Due != c.due || s.Started != c.started || s.Skipped != c.skip {
				t.Errorf("due/started/skipped = %d/%d/%d, want %d/%d/%d", s.Due, s.Started, s.Skipped, c.due, c.started, c.skip)
			}
			if s.Finished() != c.finished {
				t.Errorf("Finished = %v, want %v", s.Finished(), c.finished)
			}
			if _, more := s.Deadline(); more != c.hasNextDue {
				t.Errorf("Deadline has more = %v, want %v", more, c.hasNextDue)
			}
		})
	}
}

// Every due time is accounted for exactly once: started or skipped.
func TestScheduleAccountsForEveryDueTime(t *testing.T) {
	t0 := time.Unix(0, 0)
	for _, p := range []busyPolicy{skipBusy, waitBusy} {
		s := newSchedule(t0, t0.Add(10*time.Second), 100*time.Millisecond, p)
		var busyUntil time.Time
		running := false
		for i := 0; i < 10000 && !s.Finished(); i++ {
			took := time.Duration(150+i%7*40) * time.Millisecond
			next, more := s.Deadline()
			if running && (!more || !next.Before(busyUntil)) {
				running = s.Done(busyUntil)
				busyUntil = busyUntil.Add(took)
				continue
			}
			if s.Tick(next) {
				running, busyUntil = true, next.Add(took)
			}
		}
		if !s.Finished() {
			t.Fatalf("policy %d: not finished", p)
		}
		if s.Due != 100 || s.Started+s.Skipped != s.Due {
			t.Errorf("policy %d: due %d started %d skipped %d: want 100 due, all accounted for", p, s.Due, s.Started, s.Skipped)
		}
	}
}
