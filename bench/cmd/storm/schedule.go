package main

import "time"

// busyPolicy says what happens to a reload that falls due while another
// one is still running. Reloads never overlap.
type busyPolicy int

const (
	// skipBusy drops a due reload that finds one running (`storm run`:
	// the user's command runs at most once per interval).
	skipBusy busyPolicy = iota
	// waitBusy starts a due reload as soon as the running one ends; more
	// due reloads meanwhile are folded into that one (`storm bench`: a
	// method slower than the interval is reloaded back to back).
	waitBusy
)

// schedule is the pure reload cadence of a storm: a reload is due every
// interval from first, while before end; at most one runs at a time. It
// holds no clock: the driver passes the time in and arms one timer from
// Deadline.
type schedule struct {
	interval time.Duration
	next     time.Time // the next due time
	end      time.Time // nothing is due at or after end
	policy   busyPolicy
	running  bool
	pending  bool // waitBusy: a due reload waits for the running one

	// Due counts due times passed; Started the reloads started; Skipped
	// the due times that started no reload of their own (dropped under
	// skipBusy, folded into a waiting reload under waitBusy, or still
	// waiting when the window ended).
	Due, Started, Skipped int
}

// newSchedule returns a schedule whose first reload is due at first.
func newSchedule(first, end time.Time, interval time.Duration, p busyPolicy) *schedule {
	if interval <= 0 {
		interval = time.Second
	}
	return &schedule{interval: interval, next: first, end: end, policy: p}
}

// Deadline is when the next reload is due; false when none is left.
func (s *schedule) Deadline() (time.Time, bool) {
	return s.next, s.next.Before(s.end)
}

// Running reports whether a reload is running.
func (s *schedule) Running() bool { return s.running }

// Finished reports whether nothing is due, running or waiting any more.
func (s *schedule) Finished() bool {
	_, more := s.Deadline()
	return !more && !s.running && !s.pending
}

// Tick accounts for every due time up to now and reports whether a reload
// starts now. A late call (a starved timer) counts each due time passed,
// and starts at most one reload.
func (s *schedule) Tick(now time.Time) (start bool) {
	for !s.next.After(now) && s.next.Before(s.end) {
		s.Due++
		s.next = s.next.Add(s.interval)
		switch {
		case !s.running && !start:
			start = true
		case s.running && s.policy == waitBusy && !s.pending:
			s.pending = true
		default:
			s.Skipped++
		}
	}
	if start {
		s.running = true
		s.Started++
	}
	return start
}

// Done records that the running reload ended at now, and reports whether
// a waiting reload starts now. A reload still waiting when the window has
// ended is dropped (counted in Skipped): it would outlast the load.
func (s *schedule) Done(now time.Time) (start bool) {
	s.running = false
	if !s.pending {
		return false
	}
	s.pending = false
	if !now.Before(s.end) {
		s.Skipped++
		return false
	}
	s.running = true
	s.Started++
	return true
}

// Stop ends the window at now: nothing more is due, and a waiting reload
// is dropped (counted in Skipped). A running reload still ends with Done.
func (s *schedule) Stop(now time.Time) {
	if now.Before(s.end) {
		s.end = now
	}
	if s.pending {
		s.pending = false
		s.Skipped++
	}
}
