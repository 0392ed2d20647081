package lifecycle

import (
	"fmt"
	"time"
)

// reload is the one reload in flight.
type reload struct {
	gen         Gen
	reqs        []RequestID
	started     time.Time
	initial     bool         // no generation was ever active: failure ends baton
	replacement bool         // restart after a crash, no check, no requester
	awaiting    map[Gen]bool // older generations still holding listeners
	switched    bool         // gen became active
}

// Machine is the generation lifecycle. It is not safe for concurrent use: one
// goroutine owns it and calls Step.
type Machine struct {
	cfg        Config
	now        time.Time
	gens       []*GenInfo // ascending Gen; every generation not yet exited
	lastGen    Gen
	reload     *reload
	pending    []RequestID // coalesced into the next reload
	stopping   bool
	fast       bool
	exitErr    error
	stopReqs   []RequestID
	exited     bool
	everActive bool
	crashes    int          // consecutive crashes, for backoff
	restartAt  time.Time    // earliest start of a crash replacement
	last       ReloadResult // the last reload or first start
	finished   ReloadResult // the last reload, first start or crash replacement
	counters   Counters
	out        []Action
}

// New returns a machine with no generation. The supervisor starts the first
// one with a ReloadRequested event; if that first reload fails, the machine
// exits with its error.
func New(cfg Config) *Machine {
	return &Machine{cfg: cfg}
}

// Step applies one event and returns the actions it calls for, in order.
func (m *Machine) Step(ev Event) []Action {
	m.out = nil
	if t := ev.at(); t.After(m.now) {
		m.now = t
	}
	switch e := ev.(type) {
	case ReloadRequested:
		m.onReload(e)
	case CheckDone:
		m.onCheckDone(e)
	case Started:
		m.onStarted(e)
	case Ready:
		m.onReady(e)
	case Released:
		m.onReleased(e)
	case Exited:
		m.onExited(e)
	case Tick:
		m.onTick()
	case StopRequested:
		m.onStop(e)
	}
	m.maybeStartReload()
	m.maybeExit()
	return m.out
}

func (m *Machine) emit(a Action) { m.out = append(m.out, a) }

func (m *Machine) find(g Gen) *GenInfo {
	for _, x := range m.gens {
		if x.Gen == g {
			return x
		}
	}
	return nil
}

func (m *Machine) active() *GenInfo {
	for _, x := range m.gens {
		if x.State == Active {
			return x
		}
	}
	return nil
}

func (m *Machine) newGen(s State) *GenInfo {
	m.lastGen++
	g := &GenInfo{Gen: m.lastGen, State: s}
	m.gens = append(m.gens, g)
	return g
}

// drop removes g from the table.
func (m *Machine) drop(g *GenInfo) {
	for i, x := range m.gens {
		if x == g {
			m.gens = append(m.gens[:i], m.gens[i+1:]...)
			break
		}
	}
	m.emit(Forget{Gen: g.Gen})
	m.unawait(g.Gen)
}

func (m *Machine) onReload(e ReloadRequested) {
	if m.stopping || m.exited {
		m.emit(Reply{Reqs: []RequestID{e.Req}, Err: ErrStopping})
		return
	}
	m.pending = append(m.pending, e.Req)
}

// maybeStartReload starts the next reload when none runs: the coalesced
// requests first, else a crash replacement once its backoff has passed.
func (m *Machine) maybeStartReload() {
	if m.stopping || m.exited || m.reload != nil {
		return
	}
	if len(m.pending) > 0 {
		g := m.newGen(Checking)
		m.reload = &reload{gen: g.Gen, reqs: m.pending, started: m.now, initial: !m.everActive}
		m.pending = nil
		m.emit(RunCheck{Gen: g.Gen})
		return
	}
	if m.wantReplacement() && !m.now.Before(m.restartAt) {
		g := m.newGen(Starting)
		g.Replacement = true
		g.Deadline = m.now.Add(m.cfg.ReadyTimeout)
		m.reload = &reload{gen: g.Gen, started: m.now, replacement: true}
		m.emit(Start{Gen: g.Gen, Replacement: true})
	}
}

func (m *Machine) wantReplacement() bool {
	return m.everActive && !m.stopping && !m.exited && m.reload == nil && m.active() == nil
}

func (m *Machine) onCheckDone(e CheckDone) {
	r, g := m.reload, m.find(e.Gen)
	if r == nil || r.gen != e.Gen || g == nil || g.State != Checking {
		return // stale: the reload was abandoned
	}
	if e.Err != nil {
		m.drop(g)
		m.fail(fmt.Errorf("%w: %w", ErrCheckFailed, e.Err))
		return
	}
	g.State = Starting
	g.Deadline = m.now.Add(m.cfg.ReadyTimeout)
	m.emit(Start{Gen: g.Gen})
}

func (m *Machine) onStarted(e Started) {
	g := m.find(e.Gen)
	if g == nil || g.Pid != 0 {
		return
	}
	if e.Err != nil {
		isReload := m.reload != nil && m.reload.gen == g.Gen
		m.drop(g)
		if isReload {
			m.fail(fmt.Errorf("%w: %w", ErrStartFailed, e.Err))
		}
		return
	}
	g.Pid = e.Pid
	g.StartedAt = m.now
	if g.State == Killed {
		// Killed before its pid was known: the executor may have had
		// nothing to send the SIGKILL to.
		m.emit(Signal{Gen: g.Gen, Kind: Kill, Reason: ReasonAbandoned})
	}
	if g.State == Starting {
		g.Deadline = m.now.Add(m.cfg.ReadyTimeout)
	}
}

func (m *Machine) onReady(e Ready) {
	g := m.find(e.Gen)
	r := m.reload
	if g == nil || g.State != Starting || r == nil || r.gen != g.Gen {
		return
	}
	g.State, g.ReadyAt, g.Deadline = Active, m.now, time.Time{}
	m.everActive = true
	r.switched = true
	r.awaiting = map[Gen]bool{}
	for _, o := range m.gens {
		if o.Gen >= g.Gen {
			continue
		}
		if o.State == Active {
			m.drain(o, ReasonReload)
		}
		if !o.Released {
			r.awaiting[o.Gen] = true
		}
	}
	m.enforceCap()
	if len(r.awaiting) == 0 {
		m.finish(nil)
	}
}

func (m *Machine) drain(g *GenInfo, reason string) {
	g.State, g.DrainedAt = Draining, m.now
	g.Deadline = m.now.Add(m.cfg.DrainTimeout)
	m.emit(Signal{Gen: g.Gen, Kind: Drain, Reason: reason})
	m.emit(WatchRelease{Gen: g.Gen})
}

func (m *Machine) hardStop(g *GenInfo, reason string) {
	g.State = Stopping
	g.Deadline = m.now.Add(m.cfg.KillGrace)
	m.counters.HardStops++
	m.emit(Signal{Gen: g.Gen, Kind: Stop, Reason: reason})
}

func (m *Machine) kill(g *GenInfo, reason string) {
	g.State, g.Deadline = Killed, time.Time{}
	m.counters.Kills++
	m.emit(Signal{Gen: g.Gen, Kind: Kill, Reason: reason})
}

// enforceCap hard-stops the oldest draining generations while active plus
// draining ones exceed MaxGenerations.
func (m *Machine) enforceCap() {
	live := 0
	for _, g := range m.gens {
		if g.State == Active || g.State == Draining {
			live++
		}
	}
	for _, g := range m.gens {
		if live <= m.cfg.MaxGenerations {
			return
		}
		if g.State == Draining {
			m.hardStop(g, ReasonGenerationCap)
			live--
		}
	}
}

func (m *Machine) onReleased(e Released) {
	if g := m.find(e.Gen); g != nil {
		g.Released = true
		m.unawait(g.Gen)
	}
}

func (m *Machine) unawait(g Gen) {
	r := m.reload
	if r == nil || !r.switched || !r.awaiting[g] {
		return
	}
	delete(r.awaiting, g)
	if len(r.awaiting) == 0 {
		m.finish(nil)
	}
}

func (m *Machine) onExited(e Exited) {
	g := m.find(e.Gen)
	if g == nil {
		return
	}
	r := m.reload
	isReload := r != nil && r.gen == g.Gen
	wasActive := g.State == Active
	m.drop(g)
	switch {
	case isReload && !r.switched:
		m.fail(exitError(ErrExitedBeforeReady, e))
	case isReload && r.switched && !m.stopping:
		// It crashed while its reload waited for the old generation to let
		// go of the listeners: answer now, so the replacement need not wait
		// for that drain.
		m.finish(exitError(ErrExitedAfterReady, e))
	}
	if wasActive && !m.stopping {
		m.counters.Crashes++
		if g.ReadyAt.Add(m.cfg.StableAfter).After(m.now) {
			m.crashes++
		} else {
			m.crashes = 1
		}
		m.restartAt = m.now.Add(m.backoff())
	}
}

func exitError(sentinel error, e Exited) error {
	how := fmt.Sprintf("exit status %d", e.Status)
	if e.Signal != "" {
		how = "killed by " + e.Signal
	}
	if e.Err != nil {
		return fmt.Errorf("%w (%s): %w", sentinel, how, e.Err)
	}
	return fmt.Errorf("%w (%s)", sentinel, how)
}

// backoff is the wait before the next crash replacement: none after the
// first crash, then BackoffMin doubling up to BackoffMax.
func (m *Machine) backoff() time.Duration {
	if m.crashes <= 1 {
		return 0
	}
	d := m.cfg.BackoffMin
	for i := 2; i < m.crashes && d < m.cfg.BackoffMax; i++ {
		d *= 2
	}
	return min(d, m.cfg.BackoffMax)
}

func (m *Machine) onTick() {
	if at, ok := m.stableAt(); ok && !m.now.Before(at) {
		m.crashes = 0 // the active generation stayed up long enough
	}
	for _, g := range m.gens {
		if g.Deadline.IsZero() || m.now.Before(g.Deadline) {
			continue
		}
		switch g.State {
		case Starting:
			m.kill(g, ReasonReadyTimeout)
			if r := m.reload; r != nil && r.gen == g.Gen {
				m.fail(fmt.Errorf("%w: not ready after %s", ErrNotReady, m.cfg.ReadyTimeout))
			}
		case Draining:
			m.hardStop(g, ReasonDrainTimeout)
		case Stopping:
			m.kill(g, ReasonKillGrace)
		}
	}
}

// fail ends the reload in flight with err. A failed crash replacement backs
// off; a failed first reload ends baton.
func (m *Machine) fail(err error) {
	r := m.reload
	if r == nil {
		return
	}
	if r.replacement {
		m.crashes++
		m.restartAt = m.now.Add(m.backoff())
	}
	m.finish(err)
	if r.initial && !m.stopping {
		m.stopping = true
		m.exitErr = err
		m.failPending(err)
	}
}

func (m *Machine) finish(err error) {
	r := m.reload
	m.reload = nil
	if len(r.reqs) > 0 {
		m.emit(Reply{Reqs: r.reqs, Gen: r.gen, Err: err})
	}
	kind := KindReload
	switch {
	case r.replacement:
		kind = KindReplacement
	case r.initial:
		kind = KindStart
	}
	m.finished = ReloadResult{Gen: r.gen, At: m.now, Err: err, Duration: m.now.Sub(r.started), Coalesced: len(r.reqs),
		Kind: kind, Reqs: r.reqs, Seq: m.finished.Seq + 1}
	if !r.replacement { // a crash replacement is not a reload
		m.last = m.finished
	}
	switch {
	case r.replacement, r.initial: // a crash replacement or the first start: not reloads
	case err == nil:
		m.counters.ReloadsOK++
	default:
		m.counters.ReloadsFailed++
	}
}

func (m *Machine) failPending(err error) {
	if len(m.pending) > 0 {
		m.emit(Reply{Reqs: m.pending, Err: err})
		m.pending = nil
	}
}

func (m *Machine) onStop(e StopRequested) {
	if m.exited {
		// Already stopped: maybeExit will not run again to answer it.
		m.emit(Reply{Reqs: []RequestID{e.Req}})
		return
	}
	m.stopReqs = append(m.stopReqs, e.Req)
	if m.stopping {
		if e.Fast && !m.fast {
			m.fast = true
			m.stopAll()
		}
		return
	}
	m.stopping, m.fast = true, e.Fast
	m.failPending(ErrStopping)
	if r := m.reload; r != nil && !r.switched {
		g := m.find(r.gen)
		m.finish(ErrStopping)
		if g.State == Checking {
			m.drop(g)
		} else {
			m.kill(g, ReasonAbandoned)
		}
	}
	m.stopAll()
	m.emit(CloseListeners{})
}

// stopAll drains (or, fast, hard-stops) every serving generation.
func (m *Machine) stopAll() {
	for _, g := range m.gens {
		switch {
		case g.State == Active && !m.fast:
			m.drain(g, ReasonStop)
		case (g.State == Active || g.State == Draining) && m.fast:
			m.hardStop(g, ReasonFastStop)
		}
	}
}

func (m *Machine) maybeExit() {
	if !m.stopping || m.exited || len(m.gens) > 0 {
		return
	}
	m.exited = true
	if len(m.stopReqs) > 0 {
		m.emit(Reply{Reqs: m.stopReqs})
	}
	m.emit(Exit{Err: m.exitErr})
}

// stableAt is when a crash streak ends: the active generation has then been
// up for StableAfter.
func (m *Machine) stableAt() (time.Time, bool) {
	a := m.active()
	if m.crashes == 0 || a == nil || a.ReadyAt.IsZero() {
		return time.Time{}, false
	}
	return a.ReadyAt.Add(m.cfg.StableAfter), true
}

// NextDeadline is the earliest time a Tick has work to do; zero if none.
func (m *Machine) NextDeadline() time.Time {
	var next time.Time
	if at, ok := m.stableAt(); ok {
		next = at
	}
	for _, g := range m.gens {
		if !g.Deadline.IsZero() && (next.IsZero() || g.Deadline.Before(next)) {
			next = g.Deadline
		}
	}
	if m.wantReplacement() && m.now.Before(m.restartAt) && (next.IsZero() || m.restartAt.Before(next)) {
		next = m.restartAt
	}
	return next
}

// Generations returns a copy of every generation not yet exited, oldest first.
func (m *Machine) Generations() []GenInfo {
	out := make([]GenInfo, len(m.gens))
	for i, g := range m.gens {
		out[i] = *g
	}
	return out
}

// LastReload is the outcome of the last finished reload (zero before one).
func (m *Machine) LastReload() ReloadResult { return m.last }

// LastFinished is the last finished reload, first start or crash
// replacement (zero before one). Its Seq grows by one with each: at most
// one finishes per Step.
func (m *Machine) LastFinished() ReloadResult { return m.finished }

// Counters returns the totals so far.
func (m *Machine) Counters() Counters { return m.counters }

// Backoff returns the consecutive crash count and, while a replacement
// waits, when it will start.
func (m *Machine) Backoff() (crashes int, restartAt time.Time) {
	if m.wantReplacement() && m.now.Before(m.restartAt) {
		return m.crashes, m.restartAt
	}
	return m.crashes, time.Time{}
}

// Stopping reports whether a stop was requested (or the first reload failed).
func (m *Machine) Stopping() bool { return m.stopping }

// Exited reports whether the machine emitted Exit.
func (m *Machine) Exited() bool { return m.exited }
