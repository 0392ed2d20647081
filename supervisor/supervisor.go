package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// DefaultUDPDrainDelay is Config.UDPDrainDelay's default: a QUIC
// handshake takes one or two round trips, and a client resends a lost
// Initial after its probe timeout (RFC 9002: 3 x 333 ms for the first).
const DefaultUDPDrainDelay = time.Second

// Config is what to supervise and how.
type Config struct {
	Command      []string // the proxy command line, argv[0] resolved
	Driver       proxyctl.Driver
	Listeners    *ListenerSet  // owned by the supervisor from New on
	Rlimits      []proc.Rlimit // effective limits for every child
	Lifecycle    lifecycle.Config
	CheckTimeout time.Duration
	// Check says when the driver's check command runs (proxyctl.CheckAuto:
	// not where the generation's own start checks the config).
	Check proxyctl.CheckMode
	// RunDir is baton's run directory (see OpenRunDir): per-generation
	// directories (0700) go below it. New creates it, or uses the one a
	// previous baton left; Run removes it at the end.
	RunDir string
	Env    []string // base environment of children (scrubbed by New)
	// WatchPaths are files or directories whose change triggers a reload
	// (when their content digest changed).
	WatchPaths []string
	// Control is the control socket, handed to the next baton at an
	// upgrade; InitPipe is the pipe to baton's PID 1 init, if any.
	Control  *ControlSocket
	InitPipe *os.File
	// MetricsListener is the --metrics socket, handed over at an upgrade.
	MetricsListener net.Listener
	// StateFile is where the supervisor keeps what a restarted baton needs
	// to adopt its generations after a crash ("" for none).
	StateFile string
	// AdoptListeners takes over listening sockets a generation bound itself
	// (addresses missing from --listen), so the next one receives them.
	AdoptListeners bool
	// ListenersFromConfig takes the listeners from the proxy's
	// configuration (the driver must be a proxyctl.ListenerSource): each
	// generation gets the sockets its config declares, bound when missing
	// (Listeners may start empty); see listenerdiff.go.
	ListenersFromConfig bool
	// NoCgroup tracks generations without cgroup v2 even where baton could
	// create one (see tracking.go): by process group, process tree and the
	// environment marker.
	NoCgroup bool
	// StartSched, unless nil, is the nice level and CPU set of a
	// generation that starts while another one serves, until it is active
	// (proc.StartSched).
	StartSched *proc.StartSched
	// UDPDrainDelay is how long a generation replaced by a reload keeps
	// serving before its drain signal when it holds a steered UDP member:
	// new connections go to the new generation from the moment it is
	// active, and the ones whose handshake had begun at the old one
	// complete it meanwhile (HAProxy and nginx drop a QUIC connection
	// still in its handshake when they stop).
	UDPDrainDelay time.Duration
}

// Deps are the supervisor's collaborators.
type Deps struct {
	Log     *zap.Logger
	Clock   Clock
	Starter Starter
	ProcFS  ProcFS
	// Notify, when set, receives sd_notify states (READY=1, RELOADING=1,
	// STOPPING=1, STATUS=...) for a service manager.
	Notify func(state string)
	// Metrics, when set, is kept up to date.
	Metrics *Metrics
	// Upgrader, when set, replaces this baton with the binary on disk.
	Upgrader Upgrader
}

// DefaultCheckTimeout is Config.CheckTimeout when it is zero.
const DefaultCheckTimeout = 30 * time.Second

// ErrNotRunning is returned by requests once the supervisor has exited.
var ErrNotRunning = errors.New("supervisor is not running")

// Supervisor runs the generations of one proxy. Its state is owned by the
// goroutine running Run; every other method sends that goroutine a request.
type Supervisor struct {
	cfg     Config
	log     *zap.Logger
	clock   Clock
	starter Starter
	procfs  ProcFS

	m          *lifecycle.Machine
	gens       map[lifecycle.Gen]*genRuntime
	events     chan lifecycle.Event
	reqs       chan request
	pending    map[lifecycle.RequestID]pendingReq
	nextReq    lifecycle.RequestID
	exited     bool
	exitErr    error
	firstErr   error // the first reload's failure, as explained to people
	startedAt  time.Time
	loopCtx    context.Context
	wg         sync.WaitGroup // effect goroutines
	done       chan struct{}  // closed when Run returns
	firstReady chan struct{}
	readyOnce  sync.Once
	notify     func(string)
	metrics    *Metrics
	watch      *watcher
	stopping   bool              // STOPPING=1 was sent
	lastGood   map[string]string // the last checked config copies, for crash replacements
	pidFile    api.PidFileState  // the user's pid file as baton last wrote it
	upgrader   Upgrader
	handedOver atomic.Bool // an upgrade succeeded: the next baton carries on
	adopted    bool        // Adopt carried over another baton's generations
	// toDrain are adopted generations Run tells to drain (found by their
	// marker, not active in any state baton could trust).
	toDrain    []lifecycle.Gen
	run        *RunDir     // the run directory, opened by New
	startTicks uint64      // this baton's start time, recorded in the state file
	savedState []byte      // what the state file holds
	calls      chan func() // work effect goroutines hand to the loop
	// followed is the active generation that followActive last saw.
	followed lifecycle.Gen
	// warnedShared: the WARN that UDP listeners are shared (the kernel
	// refused baton's steering) was logged.
	warnedShared bool
	// unsettled is the generation that became active in this step and
	// whose last good config and pid file are still to be written
	// (settleActive).
	unsettled lifecycle.Gen

	// history is the last finished reloads; finishedSeq the machine's
	// LastFinished().Seq it last recorded.
	history     reloadHistory
	finishedSeq int
	lastReload  *api.ReloadRecord // the last reload or first start (no crash replacement)
	// diskDigest caches the digest of the applied config's files on disk
	// (configdigest.go); used only while gathering is held.
	diskDigest diskDigestCache

	// gathering is held while a status request reads /proc and sock_diag
	// (on the caller's goroutine, see gatherProcs).
	gathering chan struct{}
	// maxOutput bounds a command's output (maxCommandOutput; tests lower it).
	maxOutput int
	// trackID names this baton's generation markers and cgroup subtree;
	// cgroups is that subtree (tracking.go); reported are the orphans of no
	// generation already logged; trackingEnded: endTracking ran.
	trackID       string
	cgroups       *cgroupTree
	reported      map[int]bool
	trackingEnded bool
	// crashed is the last active generation that exited unexpectedly,
	// named by the line of its replacement.
	crashed struct{ gen, pid int }
	// lastExit is the last generation whose exit logExit saw, for the
	// line of a reload it fails (the generation is forgotten by then).
	lastExit struct {
		gen    lifecycle.Gen
		pid    int
		status *proc.ExitStatus
	}
}

// New checks cfg and returns a supervisor; Run starts it.
func New(cfg Config, deps Deps) (*Supervisor, error) {
	if cfg.Driver == nil || cfg.Listeners == nil || len(cfg.Command) == 0 {
		return nil, errors.New("supervisor: command, driver and listeners are required")
	}
	if _, ok := cfg.Driver.(proxyctl.ListenerSource); cfg.ListenersFromConfig && !ok {
		return nil, fmt.Errorf("supervisor: the %s driver reads no listeners from its configuration: they must be given", cfg.Driver.Name())
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	cfg.Env = childEnv(cfg.Env)
	if deps.Clock == nil {
		deps.Clock = realClock{}
	}
	if deps.Notify == nil {
		deps.Notify = func(string) {}
	}
	s := &Supervisor{
		cfg: cfg, log: deps.Log, clock: deps.Clock, starter: deps.Starter, procfs: deps.ProcFS,
		notify: deps.Notify, metrics: deps.Metrics, upgrader: deps.Upgrader,
		m:          lifecycle.New(cfg.Lifecycle),
		gens:       map[lifecycle.Gen]*genRuntime{},
		events:     make(chan lifecycle.Event, 64),
		calls:      make(chan func(), 8),
		gathering:  make(chan struct{}, 1),
		reqs:       make(chan request),
		pending:    map[lifecycle.RequestID]pendingReq{},
		done:       make(chan struct{}),
		firstReady: make(chan struct{}),
		maxOutput:  maxCommandOutput,
		trackID:    newTrackID(),
		reported:   map[int]bool{},
	}
	s.cgroups = newCgroupTree(s.trackID, cfg.NoCgroup)
	if len(cfg.WatchPaths) > 0 {
		reload := func(ctx context.Context) (api.ReloadResponse, error) { return s.ReloadBy(ctx, api.TriggerWatch) }
		w, err := newWatcher(cfg.WatchPaths, reload, s.log)
		if err != nil {
			return nil, err
		}
		if snap, ok := cfg.Driver.(proxyctl.ConfigSnapshotter); ok {
			if files, err := snap.ConfigFiles(); err == nil {
				w.require(files)
			}
		}
		s.watch = w
	}
	// Last: an error above leaves no run directory behind.
	run, err := OpenRunDir(cfg.RunDir, false)
	if err != nil {
		return nil, err
	}
	s.run = run
	s.startTicks, _ = proc.StartTicks(os.Getpid())
	if s.metrics != nil {
		s.metrics.attach(s)
	}
	return s, nil
}

// childEnv drops variables that address baton itself (its systemd notify
// socket, its own socket activation) so no child answers for baton.
func childEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NGINX", "WATCHDOG_USEC", "WATCHDOG_PID",
			"TABLEFLIP_HAS_PARENT_7DIU3", "BATON_INIT_CHILD", "BATON_INIT_FD", markerVar:
			continue
		}
		out = append(out, kv)
	}
	return out
}

// Run starts the first generation and supervises until a stop completes,
// the first generation fails (its error is returned), or ctx is cancelled
// (then every generation is stopped fast first). Call it once.
func (s *Supervisor) Run(ctx context.Context) error {
	loopCtx, cancel := context.WithCancel(context.Background())
	s.loopCtx = loopCtx
	s.startedAt = s.clock.Now()
	if s.watch != nil {
		s.goEffect(func() {
			if err := s.watch.run(loopCtx); err != nil {
				s.log.Error("config watch stopped", zap.Error(err))
			}
		})
	}
	if s.cfg.Control != nil {
		s.goEffect(func() { s.watchControl(loopCtx) })
	}
	defer func() {
		cancel()
		s.drainEvents()
		s.releaseAll()
		if !s.handedOver.Load() { // the next baton uses them
			s.removePidFile()
			if err := s.run.Remove(); err != nil {
				s.log.Warn("remove run directory", zap.Error(err))
			}
			if s.cfg.StateFile != "" {
				_ = os.Remove(s.cfg.StateFile)
			}
		}
		close(s.done)
	}()
	if s.adopted {
		s.startAdopted(loopCtx)
		s.step(lifecycle.Tick{At: s.startedAt}) // deadlines, and a replacement if none is active
	} else {
		s.nextReq++
		s.pending[s.nextReq] = pendingReq{kind: reqReload, at: s.startedAt, trigger: api.TriggerStart}
		s.step(lifecycle.ReloadRequested{At: s.startedAt, Req: s.nextReq})
	}
	ctxDone := ctx.Done()
	for !s.exited {
		timer, tc := s.armTimer()
		select {
		case ev := <-s.events:
			s.step(ev)
		case r := <-s.reqs:
			s.handle(r)
		case f := <-s.calls:
			f()
		case <-tc:
			s.step(lifecycle.Tick{At: s.clock.Now()})
		case <-ctxDone:
			ctxDone = nil
			s.step(lifecycle.StopRequested{At: s.clock.Now(), Fast: true})
		}
		if timer != nil {
			timer.Stop()
		}
	}
	return s.exitErr
}

func (s *Supervisor) armTimer() (Timer, <-chan time.Time) {
	next := s.m.NextDeadline()
	if next.IsZero() {
		return nil, nil
	}
	t := s.clock.NewTimer(max(next.Sub(s.clock.Now()), 0))
	return t, t.C()
}

// followActive does, once per generation that becomes active (the first
// one, each reload, each crash replacement, an adopted one), what follows
// from it serving: its UDP members receive the new connections, its
// listeners become the current ones (listeners from the config), its
// config copies the last good config, and the user's pid file names it.
func (s *Supervisor) followActive() {
	var gen lifecycle.Gen
	for _, g := range s.m.Generations() {
		if g.State == lifecycle.Active {
			gen = g.Gen
		}
	}
	if gen == 0 || gen == s.followed {
		return
	}
	s.followed = gen
	// New connections go to gen's own UDP members before any older
	// generation is told to drain.
	if err := s.cfg.Listeners.setActive(gen); err != nil {
		s.log.Error("steer new UDP/QUIC connections to the active generation", zap.Int("gen", int(gen)), zap.Error(err))
	}
	if s.cfg.ListenersFromConfig {
		s.activateListeners(gen)
	}
	s.unsettled = gen
}

// settleActive keeps the newly active generation's config as the last
// good one and writes its pid file: file writes that need not delay the
// drain signal to the older generations, so they run after it, and before
// any reply (a reload's acknowledgement covers them).
func (s *Supervisor) settleActive() {
	gen := s.unsettled
	if gen == 0 {
		return
	}
	s.unsettled = 0
	if rt := s.gens[gen]; rt != nil && rt.proc != nil {
		s.endStartSched(rt)
		s.keepLastGood(rt)
		s.syncPidFile(rt)
	}
}

// drainEvents waits for the effect goroutines, discarding their events.
func (s *Supervisor) drainEvents() {
	waited := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(waited)
	}()
	for {
		select {
		case <-s.events:
		case <-waited:
			return
		}
	}
}

// step applies ev and every event that its actions produce at once, then
// records the state for a restarted baton.
func (s *Supervisor) step(ev lifecycle.Event) {
	queue := []lifecycle.Event{ev}
	for len(queue) > 0 {
		ev, queue = queue[0], queue[1:]
		s.logEvent(ev) // before the step: what an exit means depends on the state it ends
		actions := s.m.Step(ev)
		s.recordFinished() // before the actions: its requests are still pending
		s.followActive()   // before the actions: a reload's reply acknowledges all of it
		for _, a := range actions {
			if _, ok := a.(lifecycle.Reply); ok {
				s.settleActive()
			}
			if next := s.do(a); next != nil {
				queue = append(queue, next)
			}
		}
		s.settleActive()
	}
	s.saveState()
}

// releaseAll lets go of the generations' pidfds and output pipes at exit
// (after a handover the next baton holds its own copies).
func (s *Supervisor) releaseAll() {
	for _, rt := range s.gens {
		if rt.session != nil {
			_ = rt.session.Close()
		}
		if rt.proc != nil {
			rt.proc.Release()
		}
	}
}

// inLoop runs f on the loop goroutine (from an effect goroutine).
func (s *Supervisor) inLoop(f func()) {
	select {
	case s.calls <- f:
	case <-s.loopCtx.Done():
	}
}

// emit hands an event from an effect goroutine to the loop.
func (s *Supervisor) emit(ev lifecycle.Event) {
	select {
	case s.events <- ev:
	case <-s.loopCtx.Done():
	}
}

// goEffect runs f on a goroutine the loop owns and waits for at exit.
func (s *Supervisor) goEffect(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// FirstReady is closed once the first generation serves.
func (s *Supervisor) FirstReady() <-chan struct{} { return s.firstReady }

// Done is closed when Run has returned.
func (s *Supervisor) Done() <-chan struct{} { return s.done }
