package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// do carries out one action on the loop goroutine. Actions whose result is
// known at once return it as an event; the others report later through
// emit.
func (s *Supervisor) do(a lifecycle.Action) lifecycle.Event {
	switch a := a.(type) {
	case lifecycle.RunCheck:
		return s.runCheck(a.Gen)
	case lifecycle.Start:
		return s.start(a.Gen, a.Replacement)
	case lifecycle.Signal:
		s.signal(a.Gen, a.Kind, a.Reason)
		s.metrics.signal(a.Kind.String(), a.Reason)
	case lifecycle.WatchRelease:
		s.watchRelease(a.Gen)
	case lifecycle.Reply:
		if s.m.Exited() {
			s.endTrackingOnce() // before stop is answered
		}
		s.reply(a)
	case lifecycle.Forget:
		s.forget(a.Gen)
	case lifecycle.CloseListeners:
		if err := s.cfg.Listeners.CloseAll(); err != nil {
			s.log.Warn("close listeners", zap.Error(err))
		}
	case lifecycle.Exit:
		s.endTrackingOnce()
		s.exited, s.exitErr = true, a.Err
		if a.Err != nil && s.firstErr != nil {
			s.exitErr = s.firstErr
		}
	}
	return nil
}

// genRuntime returns the runtime state of gen, creating it (and its
// private directory) on first use.
func (s *Supervisor) genRuntime(gen lifecycle.Gen) (*genRuntime, error) {
	if rt := s.gens[gen]; rt != nil {
		return rt, nil
	}
	dir := s.run.genDir(gen)
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("generation directory: %w", err)
	}
	ctx, cancel := context.WithCancel(s.loopCtx)
	rt := &genRuntime{gen: gen, dir: dir, ctx: ctx, cancel: cancel, log: s.log.With(zap.Int("gen", int(gen)))}
	rt.outLog.Store(rt.log)
	s.gens[gen] = rt
	return rt, nil
}

func (s *Supervisor) genSpec(rt *genRuntime, listeners []proxyctl.Listener) proxyctl.GenSpec {
	return proxyctl.GenSpec{
		Gen: int(rt.gen), Dir: rt.dir, Listeners: listeners, Run: s.runner(rt), Config: rt.config, Env: s.cfg.Env,
		Warn: func(msg string, err error) { rt.warn(msg, err) },
	}
}

// runCheck starts the config check; its result comes back as CheckDone. A
// driver without a check passes at once. A driver that reads the check's
// output (nginx -T) gets it after a successful run.
func (s *Supervisor) runCheck(gen lifecycle.Gen) lifecycle.Event {
	rt, err := s.genRuntime(gen)
	if err != nil {
		return lifecycle.CheckDone{At: s.clock.Now(), Gen: gen, Err: err}
	}
	// The digest is read before the copy: a change in between then makes
	// the watch reload once more, instead of marking content as applied
	// that this generation never loaded.
	if s.watch != nil {
		rt.digest = s.watch.digest()
	}
	if err := s.snapshotConfig(rt, nil); err != nil {
		return lifecycle.CheckDone{At: s.clock.Now(), Gen: gen, Err: err}
	}
	if s.served() {
		s.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d\nSTATUS=reloading: checking generation %d", monotonicUsec(), gen))
	}
	spec := s.genSpec(rt, s.cfg.Listeners.current())
	plan := s.planCheck(spec, s.cfg.Check)
	if plan.none() {
		return lifecycle.CheckDone{At: s.clock.Now(), Gen: gen}
	}
	s.goEffect(func() {
		_, err := s.checkConfig(rt, spec, plan)
		s.emit(lifecycle.CheckDone{At: s.clock.Now(), Gen: gen, Err: err})
	})
	return nil
}

// maxCommandOutput bounds a command's output (a config check, a readiness
// probe). The output is kept whole, long lines included, because a driver
// may read all of it (nginx -T dumps every configuration file); a command
// that writes more fails with errOutputTooLarge instead of being read in
// part.
const maxCommandOutput = 64 << 20

// errOutputTooLarge: a command wrote more than its output bound.
var errOutputTooLarge = errors.New("too much output")

// runCommand runs a one-shot command (a config check, a readiness probe)
// under the generation's rlimits until it exits or ctx ends (then its group
// is killed). It returns the command's output; a non-zero exit, or more
// output than s.maxOutput, is a *childError carrying the tail of it.
func (s *Supervisor) runCommand(ctx context.Context, rt *genRuntime, argv []string) (string, error) {
	var mu sync.Mutex
	var out strings.Builder
	tooLarge := false
	p, err := s.starter.Start(proc.StartSpec{
		Path: argv[0], Argv: argv, Env: s.cfg.Env, Rlimits: s.cfg.Rlimits,
		// A line is cut only past the whole bound: it then overflows.
		MaxLine: s.maxOutput + 1,
		OnOutput: func(line string) {
			line = rt.userPaths(line)
			mu.Lock()
			defer mu.Unlock()
			if tooLarge || out.Len()+len(line)+1 > s.maxOutput {
				tooLarge = true
				return
			}
			out.WriteString(line)
			out.WriteByte('\n')
		},
	})
	if err != nil {
		return "", err
	}
	defer p.Release()
	var failed error
	select {
	case <-p.Done():
	case <-ctx.Done():
		failed = fmt.Errorf("killed, it did not finish in time: %w", context.Cause(ctx))
		_ = p.SignalGroup(unix.SIGKILL)
		<-p.Done()
	}
	waitOutput(p)
	mu.Lock()
	output := out.String()
	if tooLarge && failed == nil {
		failed = fmt.Errorf("%w: more than %d MiB, which baton refuses to read in part", errOutputTooLarge, s.maxOutput>>20)
	}
	mu.Unlock()
	if st := p.Status(); failed != nil || st.Code != 0 {
		userArgv := make([]string, len(argv))
		for i, a := range argv {
			userArgv[i] = rt.userPaths(a)
		}
		return output, &childError{Argv: userArgv, Status: st, Output: rt.userPaths(p.Output()), Err: failed}
	}
	return output, nil
}

// runner gives drivers a way to run short commands (readiness probes)
// through baton's starter and reaper.
func (s *Supervisor) runner(rt *genRuntime) func(context.Context, []string) error {
	return func(ctx context.Context, argv []string) error {
		_, err := s.runCommand(ctx, rt, argv)
		return err
	}
}

// start starts gen's process and the goroutines that watch it.
func (s *Supervisor) start(gen lifecycle.Gen, replacement bool) lifecycle.Event {
	now := s.clock.Now()
	rt, err := s.genRuntime(gen)
	if err != nil {
		return lifecycle.Started{At: now, Gen: gen, Err: err}
	}
	if err := s.startConfig(rt, replacement); err != nil {
		return lifecycle.Started{At: now, Gen: gen, Err: err}
	}
	listeners, err := s.acquire(rt, replacement)
	if err != nil {
		return lifecycle.Started{At: now, Gen: gen, Err: err}
	}
	launch, session, err := s.cfg.Driver.Prepare(s.genSpec(rt, listeners))
	if err != nil {
		return lifecycle.Started{At: now, Gen: gen, Err: err}
	}
	rt.session = session
	// The marker goes first: a process's environment is read from its
	// start, up to a bound, when it is looked for (readMarker).
	env := append([]string{markerVar + "=" + s.marker(gen)}, s.cfg.Env...)
	sp := proc.StartSpec{
		Path: launch.Argv[0], Argv: launch.Argv, Env: append(env, launch.Env...),
		Files: launch.Files, Rlimits: s.cfg.Rlimits, ListenPID: launch.ListenPID,
		OnOutput: rt.logOutput, Sched: s.startSched(rt),
	}
	p, cgroup, err := s.startTracked(rt, sp)
	if err != nil {
		return lifecycle.Started{At: now, Gen: gen, Err: err}
	}
	rt.proc = p
	rt.track = genTrack{cgroup: cgroup, marker: s.marker(gen), reaper: os.Getpid()}
	rt.log = rt.log.With(zap.Int("pid", p.Pid()))
	rt.outLog.Store(rt.log)
	session.Started(p.Pid())
	if replacement {
		// The crash it replaces was a WARN (logExit): so is the way out.
		rt.log.Warn("replacement generation started after a crash", zap.Bool("replacement", true),
			zap.Int("replaces", s.crashed.gen), zap.Int("replaces_pid", s.crashed.pid), zap.Strings("argv", launch.Argv))
	} else {
		rt.log.Info("generation started", zap.Bool("replacement", false), zap.Strings("argv", launch.Argv))
	}
	if replacement {
		s.notify(fmt.Sprintf("STATUS=the active generation exited; replacement generation %d (pid %d) starting", gen, p.Pid()))
	}
	current := map[uint64]bool{}
	for _, l := range listeners {
		current[l.Inode] = true
	}
	s.goEffect(func() { s.watchExit(rt) })
	s.goEffect(func() { s.probeReady(rt, current) })
	return lifecycle.Started{At: now, Gen: gen, Pid: p.Pid()}
}

// startTracked starts a generation in a cgroup of its own when baton uses
// cgroups; if that start fails, the generation starts without one. Only
// when that start succeeds was the cgroup the cause, and the next
// generations start without one too (tracked by the fallback); a start that
// fails either way (EAGAIN from RLIMIT_NPROC, ENOMEM: transient) leaves
// cgroups on. It returns the cgroup, if any.
func (s *Supervisor) startTracked(rt *genRuntime, sp proc.StartSpec) (Proc, string, error) {
	dir, fd := s.startCgroup(rt)
	if fd < 0 {
		p, err := s.starter.Start(sp)
		return p, "", err
	}
	sp.InCgroup, sp.CgroupFD = true, fd
	p, cgErr := s.starter.Start(sp)
	unix.Close(fd)
	if cgErr == nil {
		return p, dir, nil
	}
	if rerr := s.cgroups.remove(dir); rerr != nil {
		rt.log.Warn("remove cgroup", zap.Error(rerr))
	}
	sp.InCgroup, sp.CgroupFD = false, 0
	p, err := s.starter.Start(sp)
	if err != nil {
		rt.log.Warn("start failed in a cgroup and without one: cgroups stay in use", zap.NamedError("in_cgroup", cgErr), zap.Error(err))
		return p, "", err
	}
	rt.log.Warn("start in a cgroup failed, without one it worked: tracking generations without cgroup v2 from now on", zap.Error(cgErr))
	s.cgroups.off = fmt.Errorf("start in a cgroup: %w", cgErr)
	return p, "", nil
}

// snapshotConfig copies the driver's config files (or, with from, the
// last good copies) into the generation's directory for it to use.
func (s *Supervisor) snapshotConfig(rt *genRuntime, from map[string]string) error {
	snap, ok := s.cfg.Driver.(proxyctl.ConfigSnapshotter)
	if !ok {
		return nil
	}
	if from == nil {
		files, err := snap.ConfigFiles()
		if err != nil {
			rt.log.Warn("config not copied: generations read it in place", zap.Error(err))
			return nil
		}
		from = map[string]string{}
		for _, f := range files {
			from[f] = f
		}
	}
	config, digest, err := copyConfig(from, filepath.Join(rt.dir, "config"))
	if err != nil {
		return fmt.Errorf("copy config: %w", err)
	}
	rt.config, rt.configDigest = config, digest
	var staged map[string]string
	if st, ok := s.cfg.Driver.(proxyctl.ConfigStager); ok {
		if staged, err = st.StageConfig(s.genSpec(rt, nil)); err != nil {
			return err
		}
	}
	rt.rewrite = pathRewriter(config, staged)
	return nil
}

// pathRewriter gives the user's paths back in a generation's output, where
// the proxy names the files baton wrote: copies maps each original to its
// copy, staged each written file to its original (either may be nil).
func pathRewriter(copies, staged map[string]string) *strings.Replacer {
	var pairs []string
	for orig, c := range copies {
		pairs = append(pairs, c, orig)
	}
	for written, orig := range staged {
		pairs = append(pairs, written, orig)
	}
	return strings.NewReplacer(pairs...)
}

// startConfig settles which config copies a starting generation uses: the
// ones its check validated; for a crash replacement, the last good config.
func (s *Supervisor) startConfig(rt *genRuntime, replacement bool) error {
	if !replacement || s.lastGood == nil {
		return nil // a crash replacement before anything served: the files in place
	}
	return s.snapshotConfig(rt, s.lastGood)
}

// keepLastGood keeps the config copies of rt, which just became active, as
// the last good config: what a crash replacement runs. Only a generation
// that served counts: one that passed its check but failed to start must
// not be what replaces a crashed one. Runs on the loop.
func (s *Supervisor) keepLastGood(rt *genRuntime) {
	if rt.config == nil {
		return
	}
	good, _, err := copyConfig(rt.config, filepath.Join(s.cfg.RunDir, "last-good"))
	if err != nil {
		rt.log.Warn("last good config not kept: a crash replacement runs the one before", zap.Error(err))
		return
	}
	s.lastGood = good
}

// copyConfig copies each source of files (original path → where to read
// it) into dir, replacing dir; it returns original path → copy, and the
// digest of what it copied under the original paths (configdigest.go).
func copyConfig(files map[string]string, dir string) (map[string]string, string, error) {
	tmp := dir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, "", err
	}
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return nil, "", err
	}
	h := newConfigHash()
	out := map[string]string{}
	origs := make([]string, 0, len(files))
	for orig := range files {
		origs = append(origs, orig)
	}
	sort.Strings(origs)
	for i, orig := range origs {
		data, err := os.ReadFile(files[orig])
		if err != nil {
			return nil, "", err
		}
		h.add(orig, data)
		name := fmt.Sprintf("%d-%s", i, filepath.Base(orig))
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o600); err != nil {
			return nil, "", err
		}
		out[orig] = filepath.Join(dir, name)
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, "", err
	}
	return out, h.sum(), os.Rename(tmp, dir)
}

// served reports whether a generation has served yet.
func (s *Supervisor) served() bool {
	select {
	case <-s.firstReady:
		return true
	default:
		return false
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, for sd_notify's
// RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}

func (s *Supervisor) signal(gen lifecycle.Gen, kind lifecycle.SignalKind, reason string) {
	rt := s.gens[gen]
	if rt == nil || rt.proc == nil {
		return
	}
	if kind == lifecycle.Drain && reason == lifecycle.ReasonReload && s.cfg.UDPDrainDelay > 0 && s.cfg.Listeners.steers(gen) {
		// New connections already go to the new generation: let the
		// handshakes begun here complete before the drain.
		rt.log.Debug("drain signal delayed: QUIC handshakes begun here complete first", zap.Duration("delay", s.cfg.UDPDrainDelay))
		t := s.clock.NewTimer(s.cfg.UDPDrainDelay)
		rt.drainSent = make(chan struct{})
		s.goEffect(func() {
			defer t.Stop()
			select {
			case <-rt.ctx.Done():
				return
			case <-t.C():
			}
			s.inLoop(func() { s.sendDelayedDrain(rt) })
		})
		return
	}
	s.sendSignal(rt, kind, reason)
}

// sendDelayedDrain sends rt its delayed drain signal, once, on the loop:
// unless it was forgotten or told to stop meanwhile (a hard stop or kill
// goes out on the loop too, so none can come between the check and the
// signal). The release watch starts then.
func (s *Supervisor) sendDelayedDrain(rt *genRuntime) {
	if rt.drainSent == nil || rt.drainDone {
		return
	}
	rt.drainDone = true
	if s.gens[rt.gen] == rt && !rt.stopAsked.Load() {
		s.sendSignal(rt, lifecycle.Drain, lifecycle.ReasonReload)
	}
	close(rt.drainSent)
}

// flushDelayedDrains sends every delayed drain signal now (on the loop,
// before an upgrade's handover: the new baton would not know they are
// due).
func (s *Supervisor) flushDelayedDrains() {
	for _, rt := range s.gens {
		s.sendDelayedDrain(rt)
	}
}

// sendSignal sends gen its drain, hard stop or kill signal, on the loop.
func (s *Supervisor) sendSignal(rt *genRuntime, kind lifecycle.SignalKind, reason string) {
	rt.stopAsked.Store(true) // before the signal: its output about stopping follows
	var sig unix.Signal
	switch kind {
	case lifecycle.Drain:
		sig = s.cfg.Driver.Signal(proxyctl.Drain)
	case lifecycle.Stop:
		sig = s.cfg.Driver.Signal(proxyctl.HardStop)
	case lifecycle.Kill:
		rt.stopProbing()
		sig = unix.SIGKILL
	}
	s.logSignal(rt, kind, sig, reason)
	var err error
	if gd, ok := s.cfg.Driver.(proxyctl.GroupDrainer); ok && kind == lifecycle.Drain && gd.DrainGroup() {
		err = rt.proc.SignalGroup(sig)
	} else {
		err = rt.proc.Signal(sig)
	}
	switch {
	case kind == lifecycle.Kill:
		// SIGKILL goes to every process of the generation.
		err = s.killGeneration(rt)
	case errors.Is(err, proc.ErrDone):
		// The drain and the hard stop go to the group once the leader is
		// gone but members remain.
		err = rt.proc.SignalGroup(sig)
	}
	if kind == lifecycle.Stop {
		// The hard stop must reach what left the group too.
		s.signalEscapees(rt, sig)
	}
	if err != nil && !errors.Is(err, proc.ErrDone) {
		rt.log.Warn("signal failed", zap.String("signal", proc.SignalName(sig)), zap.Error(err))
	}
}

func (s *Supervisor) watchRelease(gen lifecycle.Gen) {
	rt := s.gens[gen]
	if rt == nil || rt.proc == nil {
		return
	}
	inodes := s.cfg.Listeners.inodes()
	g, _ := s.genInfo(gen)
	drainSig := proc.SignalName(s.cfg.Driver.Signal(proxyctl.Drain))
	sent := rt.drainSent
	s.goEffect(func() {
		if sent != nil {
			// A delayed drain (UDPDrainDelay): the reload is
			// acknowledged once the old generation was told to drain.
			select {
			case <-sent:
			case <-rt.ctx.Done():
				return
			}
		}
		// Ticks read only the descriptors a full scan found on a
		// listener; a full scan confirms (release_linux.go), because
		// acknowledging a reload on a miss breaks docs/design.md's invariant 4.
		w := &releaseWatch{inodes: inodes, members: func() ([]int, error) { return s.procfs.ScanMembers(rt.procs()) }}
		defer w.close()
		start := s.clock.Now()
		warnAt := start.Add(holdWarnAfter(s.cfg.Lifecycle.DrainTimeout))
		warned := false
		released := func() bool {
			if w.released() {
				return true
			}
			if !warned && !s.clock.Now().Before(warnAt) {
				warned = true
				rt.log.Warn("old generation still holds the listeners after its drain signal",
					zap.String("signal", drainSig), zap.Duration("after", s.clock.Now().Sub(start).Round(time.Millisecond)),
					zap.Time("hard_stop_at", g.Deadline))
			}
			return false
		}
		if s.pollEvery(rt.ctx, releaseTight, released) {
			rt.log.Debug("released", zap.Duration("took", s.clock.Now().Sub(start)), zap.Int("ticks", w.ticks), zap.Int("scans", w.scans))
			s.emit(lifecycle.Released{At: s.clock.Now(), Gen: gen})
		}
	})
}

func (s *Supervisor) forget(gen lifecycle.Gen) {
	rt := s.gens[gen]
	if rt == nil {
		return
	}
	delete(s.gens, gen)
	rt.cancel()
	var errs []error
	if rt.session != nil {
		errs = append(errs, rt.session.Close())
	}
	if rt.proc != nil {
		rt.proc.Release()
	}
	if rt.acquired {
		errs = append(errs, s.cfg.Listeners.Release(gen))
	}
	if rt.track.cgroup != "" {
		errs = append(errs, s.cgroups.remove(rt.track.cgroup))
	}
	errs = append(errs, os.RemoveAll(rt.dir))
	if err := errors.Join(errs...); err != nil {
		rt.log.Warn("forget generation", zap.Error(err))
	}
	if rt.proc != nil {
		s.reportStrays()
	}
}

// logSignal logs a signal to a generation: at WARN when it is an
// escalation (a deadline passed, the generation cap), at INFO when it is
// the ordinary drain of a reload or a stop, or a stop asked for.
func (s *Supervisor) logSignal(rt *genRuntime, kind lifecycle.SignalKind, sig unix.Signal, reason string) {
	fields := []zap.Field{zap.Stringer("kind", kind), zap.String("signal", proc.SignalName(sig)), zap.String("reason", reason)}
	life := s.cfg.Lifecycle
	switch reason {
	case lifecycle.ReasonDrainTimeout:
		rt.log.Warn("signal generation: drain deadline passed, hard stop", append(fields, zap.Duration("drain_timeout", life.DrainTimeout), zap.Duration("kill_grace", life.KillGrace))...)
	case lifecycle.ReasonKillGrace:
		rt.log.Warn("signal generation: still running after the hard stop, kill", append(fields, zap.Duration("kill_grace", life.KillGrace))...)
	case lifecycle.ReasonGenerationCap:
		rt.log.Warn("signal generation: too many generations, hard stop of the oldest draining one", append(fields, zap.Int("max_generations", life.MaxGenerations))...)
	case lifecycle.ReasonReadyTimeout:
		rt.log.Warn("signal generation: not ready in time, kill", append(fields, zap.Duration("ready_timeout", life.ReadyTimeout))...)
	default:
		rt.log.Info("signal generation", fields...)
	}
}

// holdWarnAfter is how long after its drain signal an old generation may
// still hold a listening socket before baton warns, once per generation
// (the reload waiting for it cannot be acknowledged before): 5 s, or half
// the drain timeout when that is shorter, so that the warning comes before
// the hard stop. HAProxy and nginx close their listeners within
// milliseconds of the signal.
func holdWarnAfter(drainTimeout time.Duration) time.Duration {
	if drainTimeout <= 0 {
		return 5 * time.Second
	}
	return min(5*time.Second, drainTimeout/2)
}
