package supervisor

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// genRuntime is what the loop holds for one generation besides the
// machine's view: its process, driver session, directory and watchers.
type genRuntime struct {
	gen      lifecycle.Gen
	dir      string
	log      *zap.Logger
	proc     Proc
	session  proxyctl.Session
	acquired bool     // holds references in the listener set
	track    genTrack // how its processes are found (tracking.go)

	ctx    context.Context // cancelled when the generation is forgotten
	cancel context.CancelFunc
	// drainSent, set on the loop when its drain signal is delayed
	// (Config.UDPDrainDelay), is closed once that signal was sent (or
	// dropped: drainDone): the release watch starts then. Loop-owned.
	drainSent chan struct{}
	drainDone bool

	// config maps the driver's config files to this generation's copies;
	// rewrite turns copy paths in the proxy's words back into the user's.
	config  map[string]string
	rewrite *strings.Replacer
	digest  string // of the watched files when its check began
	// configDigest is the digest of its config copy (configdigest.go).
	configDigest string
	foreign      []api.ForeignListener
	// wanted are the listeners its configuration declares (listeners from
	// the config): written by the check goroutine before it reports
	// CheckDone, read by the loop after that.
	wanted []proxyctl.ConfigListener
	// sched is how it was started (--start-nice, --start-cpus): until it
	// is active; nil: with baton's own values.
	sched *proc.StartSched

	mu        sync.Mutex
	probeErr  error
	probeStop bool

	// outLog is log for the output goroutine, which the starter runs before
	// the pid, and so the final log, is known.
	outLog atomic.Pointer[zap.Logger]
	// stopAsked: baton sent it its drain, hard stop or kill signal.
	stopAsked atomic.Bool
	// exit is how its leader ended, once watchExit saw it.
	exit atomic.Pointer[proc.ExitStatus]
}

// warn logs an incident of the generation from any goroutine: with its
// pid once it was started.
func (rt *genRuntime) warn(msg string, err error) {
	rt.outLog.Load().Warn(msg, zap.Error(err))
}

// logOutput logs one line of the generation's output at the level the
// proxy gave it (outputLevel; the tag in proxy_level): an HAProxy [ALERT]
// or an nginx [emerg] is an ERROR line of baton's log. Once baton asked
// the generation to drain or stop, its warnings are INFO: HAProxy reports
// its own orderly stop at [WARNING] ("Proxy fe stopped", "Exiting Master
// process..."), five lines at every reload that are no incident.
func (rt *genRuntime) logOutput(line string) {
	lvl, tag := outputLevel(line)
	fields := []zap.Field{zap.String("line", rt.userPaths(line))}
	if tag != "" {
		fields = append(fields, zap.String("proxy_level", tag))
	}
	if lvl == zapcore.WarnLevel && rt.stopAsked.Load() {
		lvl = zapcore.InfoLevel
	}
	rt.outLog.Load().Log(lvl, "proxy output", fields...)
}

// userPaths replaces this generation's config copies with the user's paths.
func (rt *genRuntime) userPaths(s string) string {
	if rt.rewrite == nil {
		return s
	}
	return rt.rewrite.Replace(s)
}

func (rt *genRuntime) setProbeError(err error) {
	rt.mu.Lock()
	rt.probeErr = err
	rt.mu.Unlock()
}

func (rt *genRuntime) lastProbeError() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.probeErr
}

// stopProbing ends the readiness probe (the generation is being killed).
func (rt *genRuntime) stopProbing() {
	rt.mu.Lock()
	rt.probeStop = true
	rt.mu.Unlock()
}

func (rt *genRuntime) probing() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return !rt.probeStop
}

// childError is a child process that failed: its command, exit status and
// the tail of its own output.
type childError struct {
	Argv   []string
	Status proc.ExitStatus
	Output string
	Err    error // what baton did about it (e.g. a timeout), if anything
}

func (e *childError) Error() string {
	var b strings.Builder
	for i, a := range e.Argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(shellQuote(a))
	}
	switch {
	case e.Err != nil:
		fmt.Fprintf(&b, ": %v", e.Err)
	default:
		fmt.Fprintf(&b, ": %s", e.Status)
	}
	if e.Output != "" {
		b.WriteString("\n")
		b.WriteString(e.Output)
	}
	return b.String()
}

func (e *childError) Unwrap() error { return e.Err }

// shellQuote returns s as one word a POSIX shell reads back as s: as it is
// when it holds only safe characters, else in single quotes (a single quote
// inside ends the quoting, is escaped with a backslash, and quoting
// resumes).
func shellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("@%+=:,./_-", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// outputError is the child's own words, for an exit before ready.
type outputError string

func (e outputError) Error() string { return string(e) }

// waitOutput waits briefly for every writer of p's output to be gone, so
// the tail holds the child's last words.
func waitOutput(p Proc) {
	t := time.NewTimer(500 * time.Millisecond)
	defer t.Stop()
	select {
	case <-p.OutputDone():
	case <-t.C:
	}
}

// watchExit reports Exited once the leader was reaped (the reaper's SIGCHLD,
// or an adopted leader's pidfd) and no process of the generation is left
// (a worker orphaned by its master, or a daemon that left its process
// group, still holds the listeners): see waitGone.
func (s *Supervisor) watchExit(rt *genRuntime) {
	select {
	case <-rt.proc.Done():
	case <-s.loopCtx.Done():
		return
	}
	if !s.waitGone(rt) {
		return
	}
	waitOutput(rt.proc)
	st := rt.proc.Status()
	var err error
	if out := rt.proc.Output(); out != "" {
		err = outputError(rt.userPaths(out))
	}
	rt.exit.Store(&st) // logged by the loop (logExit), which knows what the exit means
	ev := lifecycle.Exited{At: s.clock.Now(), Gen: rt.gen, Status: st.Code, Err: err}
	if st.Signal != 0 {
		ev.Signal = proc.SignalName(st.Signal)
	}
	s.emit(ev)
}

// probeReady polls the driver's readiness check and the generation's fd
// tables until it holds every current listener and answers; then Ready.
//
// A session that learns of readiness by an event (proxyctl.ReadyNotifier)
// is not probed before the event (or readyEventWait without it): the
// probe then confirms it.
func (s *Supervisor) probeReady(rt *genRuntime, inodes map[uint64]bool) {
	if !s.awaitReadyEvent(rt) {
		return
	}
	ready := s.pollEvery(rt.ctx, readyTight, func() bool {
		if !rt.probing() {
			return false
		}
		if missing := s.missing(rt.procs(), inodes); missing > 0 {
			rt.setProbeError(fmt.Errorf("%d of %d listeners not yet held by the generation", missing, len(inodes)))
			return false
		}
		ctx, cancel := context.WithTimeout(rt.ctx, time.Second)
		defer cancel()
		err := rt.session.Ready(ctx)
		rt.setProbeError(err)
		return err == nil
	})
	if ready && rt.probing() {
		rt.log.Info("generation ready")
		s.emit(lifecycle.Ready{At: s.clock.Now(), Gen: rt.gen})
		if found := s.findForeign(rt.procs(), inodes); len(found) > 0 {
			s.inLoop(func() { s.noteForeign(rt.gen, found) })
		}
	}
}

// pollUntil calls cond until it is true (returns true) or ctx ends (false):
// every millisecond at first, backing off to every 4 ms during the first
// second (reload latency) and to every 50 ms after it.
func (s *Supervisor) pollUntil(ctx context.Context, cond func() bool) bool {
	return s.pollEvery(ctx, 0, cond)
}

// pollEvery is pollUntil calling cond every millisecond during the first
// tight, before it backs off. (A finer tick does not help: when baton is
// otherwise idle, Go's netpoller rounds a sub-millisecond sleep up to a
// millisecond; measured, 200 µs timers fired 1.1 ms apart.)
func (s *Supervisor) pollEvery(ctx context.Context, tight time.Duration, cond func() bool) bool {
	wait, ceiling := time.Millisecond, 4*time.Millisecond
	start := s.clock.Now()
	for {
		if cond() {
			return true
		}
		t := s.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C():
		}
		elapsed := s.clock.Now().Sub(start)
		if elapsed > time.Second {
			ceiling = 50 * time.Millisecond
		}
		if elapsed < tight {
			wait = time.Millisecond
		} else {
			wait = min(wait*2, ceiling)
		}
	}
}

// readyTight is how long a readiness probe polls every millisecond before
// it backs off: an nginx generation is ready some 25 ms after its start,
// a small HAProxy config's in 60–100 ms; a 4 ms tick would add 2 ms on
// average to every reload. A tick costs about a tenth of a millisecond of
// CPU while the proxy starts (fd tables of a few processes), so longer
// starts (big configs) back off to spare the cores they parse on.
const readyTight = 250 * time.Millisecond

// heldInodes is the union of socket inodes open in pids.
func (s *Supervisor) heldInodes(pids []int) map[uint64]bool {
	held := map[uint64]bool{}
	for _, pid := range pids {
		in, err := s.procfs.SocketInodes(pid)
		if err != nil {
			continue
		}
		for k := range in {
			held[k] = true
		}
	}
	return held
}

// missing counts the inodes of want that no process of g holds.
func (s *Supervisor) missing(g proc.GenProcs, want map[uint64]bool) int {
	pids, _ := s.procfs.Members(g)
	held := s.heldInodes(pids)
	n := 0
	for k := range want {
		if !held[k] {
			n++
		}
	}
	return n
}

func (s *Supervisor) holdsAny(g proc.GenProcs, inodes map[uint64]bool) bool {
	return s.missing(g, inodes) < len(inodes)
}
