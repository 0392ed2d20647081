package lifecycle

import (
	"errors"
	"time"
)

// Gen numbers generations from 1, in start order.
type Gen int

// RequestID names a reload or stop request; the machine answers it with one
// Reply action.
type RequestID uint64

// State of a generation.
type State int

// Generation states, in lifecycle order.
const (
	Checking State = iota + 1 // config check running; no process yet
	Starting                  // process started, not ready yet
	Active                    // serving; the only one to get new connections
	Draining                  // told to drain; hard stopped at its deadline
	Stopping                  // told to stop now; killed at its deadline
	Killed                    // SIGKILL sent; waiting for it to exit
)

var stateNames = map[State]string{
	Checking: "checking", Starting: "starting", Active: "active",
	Draining: "draining", Stopping: "stopping", Killed: "killed",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return "unknown"
}

// SignalKind is what a Signal action asks the executor to send; the driver
// maps it to a real signal.
type SignalKind int

// Signal kinds.
const (
	Drain SignalKind = iota + 1 // stop accepting, finish in-flight work
	Stop                        // hard stop: end now, gracefully if possible
	Kill                        // SIGKILL to the generation's process group
)

func (k SignalKind) String() string {
	switch k {
	case Drain:
		return "drain"
	case Stop:
		return "stop"
	case Kill:
		return "kill"
	}
	return "unknown"
}

// Sentinel errors carried by Reply and Exit actions.
var (
	ErrCheckFailed       = errors.New("config check failed")
	ErrStartFailed       = errors.New("start failed")
	ErrNotReady          = errors.New("not ready in time")
	ErrExitedBeforeReady = errors.New("exited before it was ready")
	ErrExitedAfterReady  = errors.New("exited right after it became active, before the reload was acknowledged")
	ErrStopping          = errors.New("baton is stopping")
)

// Config holds the timing and sizing policy of the machine.
type Config struct {
	ReadyTimeout time.Duration // Starting → killed when not ready by then
	DrainTimeout time.Duration // Draining → hard stop
	KillGrace    time.Duration // Stopping → SIGKILL
	// MaxGenerations caps active + draining generations; the oldest draining
	// ones are hard stopped first.
	MaxGenerations int
	// Crash restarts: the first replacement starts at once; each further
	// crash within StableAfter of becoming active doubles the wait, from
	// BackoffMin up to BackoffMax.
	BackoffMin, BackoffMax time.Duration
	StableAfter            time.Duration
}

// DefaultConfig is the policy of docs/design.md.
func DefaultConfig() Config {
	return Config{
		ReadyTimeout:   30 * time.Second,
		DrainTimeout:   5 * time.Minute,
		KillGrace:      10 * time.Second,
		MaxGenerations: 8,
		BackoffMin:     500 * time.Millisecond,
		BackoffMax:     30 * time.Second,
		StableAfter:    10 * time.Second,
	}
}

// Event is an input to Machine.Step. Every event carries the time it happened.
type Event interface{ at() time.Time }

// ReloadRequested asks for a reload; requests that arrive while one runs are
// coalesced into the next.
type ReloadRequested struct {
	At  time.Time
	Req RequestID
}

// CheckDone reports the config check of a generation.
type CheckDone struct {
	At  time.Time
	Gen Gen
	Err error
}

// Started reports that a generation's process was started (Pid) or not (Err).
type Started struct {
	At  time.Time
	Gen Gen
	Pid int
	Err error
}

// Ready reports that a starting generation holds every listener and passed
// its driver's readiness check.
type Ready struct {
	At  time.Time
	Gen Gen
}

// Released reports that no process of a generation holds a listener any more.
type Released struct {
	At  time.Time
	Gen Gen
}

// Exited reports that every process of a generation is gone. Status is the
// leader's exit status (128+signal when killed by a signal); Err carries what
// the child said (the tail of its output) when that helps explain a failure.
type Exited struct {
	At     time.Time
	Gen    Gen
	Status int
	Signal string // the signal that killed the leader ("SIGKILL"), if one did
	Err    error
}

// Tick tells the machine the time; deadlines fire on ticks.
type Tick struct{ At time.Time }

// StopRequested asks baton to stop: drain every generation (or, Fast, stop
// them now), then exit.
type StopRequested struct {
	At   time.Time
	Req  RequestID
	Fast bool
}

func (e ReloadRequested) at() time.Time { return e.At }
func (e CheckDone) at() time.Time       { return e.At }
func (e Started) at() time.Time         { return e.At }
func (e Ready) at() time.Time           { return e.At }
func (e Released) at() time.Time        { return e.At }
func (e Exited) at() time.Time          { return e.At }
func (e Tick) at() time.Time            { return e.At }
func (e StopRequested) at() time.Time   { return e.At }

// Action is an output of Machine.Step, for the executor to carry out.
type Action interface{ isAction() }

// RunCheck asks for the config check of Gen; its result comes back as CheckDone.
type RunCheck struct{ Gen Gen }

// Start asks to start Gen's process (result: Started), then to watch it
// become ready (Ready). Replacement is set when it replaces a crashed
// generation without a config check.
type Start struct {
	Gen         Gen
	Replacement bool
}

// Signal asks to send Kind to Gen, for Reason (one of the Reason*
// constants, for logs and metrics).
type Signal struct {
	Gen    Gen
	Kind   SignalKind
	Reason string
}

// Why a Signal is sent.
const (
	ReasonReload        = "reload"         // drain: a newer generation is active
	ReasonStop          = "stop"           // drain: baton is stopping
	ReasonDrainTimeout  = "drain_timeout"  // hard stop at the drain deadline
	ReasonGenerationCap = "generation_cap" // hard stop: too many generations
	ReasonFastStop      = "fast_stop"      // hard stop: baton stops fast
	ReasonReadyTimeout  = "ready_timeout"  // kill: not ready in time
	ReasonKillGrace     = "kill_grace"     // kill: still alive after the hard stop
	ReasonAbandoned     = "abandoned"      // kill: a start abandoned by a stop
)

// WatchRelease asks to report Released once Gen holds no listener.
type WatchRelease struct{ Gen Gen }

// Reply answers requests. For a reload, Gen is the generation now active (or
// the one that failed) and Err is nil on success.
type Reply struct {
	Reqs []RequestID
	Gen  Gen
	Err  error
}

// Forget says Gen left the table: its per-generation resources may go.
type Forget struct{ Gen Gen }

// CloseListeners asks to close baton's own copies of the listeners (on stop,
// so that new connections are refused instead of queued for nobody).
type CloseListeners struct{}

// Exit says the supervisor is done; Err is nil after a requested stop.
type Exit struct{ Err error }

func (RunCheck) isAction()       {}
func (Start) isAction()          {}
func (Signal) isAction()         {}
func (WatchRelease) isAction()   {}
func (Reply) isAction()          {}
func (Forget) isAction()         {}
func (CloseListeners) isAction() {}
func (Exit) isAction()           {}

// GenInfo is a read-only view of one generation.
type GenInfo struct {
	Gen         Gen
	State       State
	Pid         int
	Replacement bool
	StartedAt   time.Time // process start
	ReadyAt     time.Time
	DrainedAt   time.Time // drain signal sent
	Deadline    time.Time // next escalation (ready timeout, hard stop, kill)
	Released    bool
}

// ReloadResult is the outcome of a finished reload, as the machine keeps
// it (error, kind, requests, sequence number). It is not a wire type: the
// supervisor turns it into the history's record (api.ReloadRecord) and
// answers each request with api.ReloadResponse.
type ReloadResult struct {
	Gen       Gen
	At        time.Time // when it finished
	Err       error
	Duration  time.Duration
	Coalesced int // requests answered by it
	// Kind says whether it was a reload, the first start or a crash
	// replacement; Reqs are the requests it answered (none for a crash
	// replacement); Seq numbers the finished ones from 1, in order.
	Kind ReloadKind
	Reqs []RequestID
	Seq  int
}

// ReloadKind is what a finished reload was.
type ReloadKind int

// Reload kinds.
const (
	KindReload      ReloadKind = iota + 1 // asked for while a generation served
	KindStart                             // the first generation
	KindReplacement                       // a crash replacement (no check, no requester)
)

func (k ReloadKind) String() string {
	switch k {
	case KindReload:
		return "reload"
	case KindStart:
		return "start"
	case KindReplacement:
		return "replacement"
	}
	return "unknown"
}

// Counters are monotonic totals since the machine was created.
type Counters struct {
	// Reloads after the first start (which is not counted), crash
	// replacements excluded.
	ReloadsOK     int
	ReloadsFailed int
	Crashes       int // active generations that exited without being told to
	HardStops     int // Stop signals (drain deadline, generation cap, fast stop)
	Kills         int // SIGKILLs (ready timeout, kill grace)
}
