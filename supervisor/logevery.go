package supervisor

import (
	"sync"
	"time"
)

// logEvery spaces log lines about an incident that can repeat at the rate
// a peer chooses (refused peers, connections over a cap): the first one is
// logged, then at most one per period, carrying how many were not.
type logEvery struct {
	period time.Duration
	now    func() time.Time

	mu      sync.Mutex
	last    time.Time
	skipped int
}

func newLogEvery(period time.Duration) *logEvery {
	return &logEvery{period: period, now: time.Now}
}

// due records one incident and reports whether to log it now, with the
// number of incidents not logged since the last line.
func (e *logEvery) due() (bool, int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if !e.last.IsZero() && now.Sub(e.last) < e.period {
		e.skipped++
		return false, 0
	}
	skipped := e.skipped
	e.last, e.skipped = now, 0
	return true, skipped
}
