package lifecycle

import (
	"errors"
	"fmt"
	"time"
)

// MachineState is what a machine needs to carry on in another process (a
// baton upgrade) or after a restart (a baton that was killed): its live
// generations with their deadlines, and its counters. It is plain data.
type MachineState struct {
	Gens      []GenInfo `json:"generations"`
	LastGen   Gen       `json:"last_generation"`
	Counters  Counters  `json:"counters"`
	Crashes   int       `json:"consecutive_crashes"`
	RestartAt time.Time `json:"restart_at"`
	Last      struct {
		Gen      Gen           `json:"generation"`
		At       time.Time     `json:"at"`
		Error    string        `json:"error,omitempty"`
		Duration time.Duration `json:"duration"`
	} `json:"last_reload"`
}

// ErrNotQuiescent means a snapshot was asked for while a reload runs or
// during a stop: the state is about to change.
var ErrNotQuiescent = errors.New("a reload or a stop is in progress")

// Snapshot returns the machine's state. It refuses while a reload or a stop
// is in progress, or before the first generation served: only a settled
// machine can be carried over.
func (m *Machine) Snapshot() (MachineState, error) {
	if m.reload != nil || len(m.pending) > 0 || m.stopping || m.exited {
		return MachineState{}, ErrNotQuiescent
	}
	if !m.everActive {
		return MachineState{}, fmt.Errorf("%w: no generation served yet", ErrNotQuiescent)
	}
	st := MachineState{
		Gens: m.Generations(), LastGen: m.lastGen, Counters: m.counters,
		Crashes: m.crashes, RestartAt: m.restartAt,
	}
	st.Last.Gen, st.Last.At, st.Last.Duration = m.last.Gen, m.last.At, m.last.Duration
	if m.last.Err != nil {
		st.Last.Error = m.last.Err.Error()
	}
	return st, nil
}

// Restore returns a machine that carries on from st at time now: the same
// generations, deadlines and counters. Generations whose process is gone
// are the caller's to drop first (or report with Exited right after).
func Restore(cfg Config, st MachineState, now time.Time) (*Machine, error) {
	m := &Machine{cfg: cfg, now: now, lastGen: st.LastGen, counters: st.Counters, crashes: st.Crashes, restartAt: st.RestartAt}
	active := 0
	for i := range st.Gens {
		g := st.Gens[i]
		switch g.State {
		case Active:
			active++
		case Draining, Stopping, Killed:
		default:
			return nil, fmt.Errorf("restore: generation %d is %s; only settled generations can be carried over", g.Gen, g.State)
		}
		if g.Gen > m.lastGen {
			m.lastGen = g.Gen
		}
		m.gens = append(m.gens, &g)
	}
	if active > 1 {
		return nil, fmt.Errorf("restore: %d active generations", active)
	}
	m.everActive = true
	m.last = ReloadResult{Gen: st.Last.Gen, At: st.Last.At, Duration: st.Last.Duration}
	if st.Last.Error != "" {
		m.last.Err = errors.New(st.Last.Error)
	}
	return m, nil
}
