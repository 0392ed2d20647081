package supervisor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Upgrader starts the new baton binary with handover as an inherited file
// and waits until it says it is ready, or fails (it then kills it). cmd/baton
// implements it with tableflip.
type Upgrader interface {
	Upgrade(handover *os.File) error
}

// errUpgradeUnavailable means this baton cannot upgrade itself.
var errUpgradeUnavailable = errors.New("upgrade is not available")

// UpgradeTimeout bounds an upgrade: the new baton's start until it is
// ready (tableflip), and each side of the handover conversation.
const UpgradeTimeout = 30 * time.Second

// doUpgrade runs on the loop goroutine, which stays busy until the new baton
// is ready or failed: the state cannot change meanwhile. On success this
// baton stops without touching a generation: the new one carries on. A
// failure is logged here, once; callers only pass the error on.
func (s *Supervisor) doUpgrade() (api.UpgradeResult, error) {
	if s.upgrader == nil {
		return api.UpgradeResult{}, errUpgradeUnavailable
	}
	res, err := s.upgrade()
	if err != nil {
		s.log.Error("upgrade failed; this baton carries on", zap.Error(err))
	}
	return res, err
}

func (s *Supervisor) upgrade() (api.UpgradeResult, error) {
	s.flushDelayedDrains()
	h, fds, err := s.collectHandover(true)
	if err != nil {
		return api.UpgradeResult{}, fmt.Errorf("upgrade: %w", err)
	}
	defer closeFds(fds)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return api.UpgradeResult{}, fmt.Errorf("upgrade: socketpair: %w", err)
	}
	mine, err := unixConn(pair[0])
	if err != nil {
		unix.Close(pair[1])
		return api.UpgradeResult{}, err
	}
	defer mine.Close()
	theirs := os.NewFile(uintptr(pair[1]), "baton-handover")
	type sent struct {
		pid int
		err error
	}
	done := make(chan sent, 1)
	go func() {
		pid, err := sendHandover(mine, h, fds, UpgradeTimeout)
		done <- sent{pid, err}
	}()
	s.log.Info("upgrading: starting the new baton")
	err = s.upgrader.Upgrade(theirs)
	theirs.Close()
	if err != nil {
		mine.Close() // ends sendHandover
		<-done
		return api.UpgradeResult{}, fmt.Errorf("upgrade: %w", err)
	}
	r := <-done
	if r.err != nil {
		// tableflip saw the new baton ready: it owns everything now.
		s.log.Warn("upgrade: the new baton is ready but the handover said", zap.Error(r.err))
	}
	s.handedOver.Store(true)
	if s.cfg.InitPipe != nil {
		// baton's PID 1 init follows the new supervisor from now on.
		if _, err := fmt.Fprintf(s.cfg.InitPipe, "handover %d\n", r.pid); err != nil {
			s.log.Error("tell the init about the new baton", zap.Error(err))
		}
	}
	s.notify(fmt.Sprintf("MAINPID=%d\nSTATUS=upgraded: baton pid %d took over", r.pid, r.pid))
	s.log.Info("upgraded: the new baton took over", zap.Int("new_pid", r.pid))
	return api.UpgradeResult{OldPid: os.Getpid(), NewPid: r.pid}, nil
}

func unixConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "handover")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("handover: not a unix socket")
	}
	return uc, nil
}

// HandedOver reports whether Run ended because another baton took over.
func (s *Supervisor) HandedOver() bool { return s.handedOver.Load() }

// collectHandover describes the supervisor for another baton. With fds it
// also returns duplicates (owned by the caller) of every descriptor the next
// baton needs: listeners, control socket and lock, the init pipe, and each
// live generation's pidfd and output pipe.
func (s *Supervisor) collectHandover(withFds bool) (Handover, []int, error) {
	snap, err := s.m.Snapshot()
	if err != nil {
		return Handover{}, nil, err
	}
	h := Handover{BatonPid: os.Getpid(), Machine: snap, LastGood: s.lastGood, PidFile: s.pidFile, ControlFd: -1, LockFd: -1, InitFd: -1, MetricsFd: -1,
		Tracking: &trackingHandover{ID: s.trackID, Cgroup: s.cgroups.dir}}
	if withFds { // an upgrade: the next baton shows the same history
		h.Reloads, h.LastReload = s.history.list(), s.lastReload
	}
	var fds []int
	ok := false
	defer func() {
		if !ok {
			closeFds(fds)
		}
	}()
	// dup is only called when descriptors are wanted (an upgrade); the
	// state file records the rest without duplicating anything.
	add := func(dup func() (int, error)) (int, error) {
		if !withFds {
			return -1, nil
		}
		fd, err := dup()
		if err != nil {
			return -1, err
		}
		fds = append(fds, fd)
		return len(fds) - 1, nil
	}
	for _, l := range s.cfg.Listeners.handover() {
		own := l.Fd
		if l.Fd, err = add(func() (int, error) { return dupFd(own) }); err != nil {
			return Handover{}, nil, err
		}
		h.Listeners = append(h.Listeners, l)
	}
	for _, g := range snap.Gens {
		gh, err := s.genHandover(g, withFds, add)
		if err != nil {
			return Handover{}, nil, err
		}
		h.Gens = append(h.Gens, gh)
	}
	if c := s.cfg.Control; c != nil {
		if h.ControlFd, err = add(func() (int, error) { return dupSocket(c.Listener) }); err != nil {
			return Handover{}, nil, err
		}
		if h.LockFd, err = add(func() (int, error) { return dupFd(int(c.lock.Fd())) }); err != nil {
			return Handover{}, nil, err
		}
	}
	if s.cfg.InitPipe != nil {
		if h.InitFd, err = add(func() (int, error) { return dupFd(int(s.cfg.InitPipe.Fd())) }); err != nil {
			return Handover{}, nil, err
		}
	}
	if ml, isTCP := s.cfg.MetricsListener.(*net.TCPListener); isTCP && ml != nil {
		if h.MetricsFd, err = add(func() (int, error) { return dupSocket(ml) }); err != nil {
			return Handover{}, nil, err
		}
	}
	if s.watch != nil {
		w := s.watch.Status()
		h.Watch = &w
	}
	ok = true
	return h, fds, nil
}

func (s *Supervisor) genHandover(g lifecycle.GenInfo, withFds bool, add func(func() (int, error)) (int, error)) (GenHandover, error) {
	rt := s.gens[g.Gen]
	if rt == nil || rt.proc == nil {
		return GenHandover{}, fmt.Errorf("generation %d has no process", g.Gen)
	}
	ticks, _ := proc.StartTicks(rt.proc.Pid())
	gh := GenHandover{Gen: g.Gen, Pid: rt.proc.Pid(), StartTicks: ticks, Dir: rt.dir, Digest: rt.digest, Config: rt.config, Pidfd: -1, Output: -1}
	hp, ok := rt.proc.(interface{ Handover() (proc.Handover, error) })
	if !ok || !withFds {
		return gh, nil
	}
	ph, err := hp.Handover()
	if err != nil {
		return GenHandover{}, err
	}
	var errs []error
	if gh.Pidfd, err = add(func() (int, error) { return ph.Pidfd, nil }); err != nil {
		errs = append(errs, err)
	}
	if ph.Output >= 0 {
		if gh.Output, err = add(func() (int, error) { return ph.Output, nil }); err != nil {
			errs = append(errs, err)
		}
	}
	return gh, errors.Join(errs...)
}

// dupSocket duplicates a shared socket's descriptor through
// SyscallConn().Control, never (*os.File).Fd(), which would make the open
// file description blocking for every process serving on it.
func dupSocket(l syscall.Conn) (int, error) {
	raw, err := l.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := raw.Control(func(s uintptr) { fd, derr = dupFd(int(s)) }); err != nil {
		return -1, err
	}
	return fd, derr
}

// AdoptMetricsListener returns the --metrics socket of a handover, if any.
func AdoptMetricsListener(h Handover, fds []int) (net.Listener, error) {
	fd := fdAt(fds, h.MetricsFd)
	if fd < 0 {
		return nil, nil
	}
	f := os.NewFile(uintptr(fd), "metrics")
	defer f.Close()
	return net.FileListener(f)
}

// AdoptInitPipe returns the pipe to baton's PID 1 init from a handover, if
// any.
func AdoptInitPipe(h Handover, fds []int) *os.File {
	fd := fdAt(fds, h.InitFd)
	if fd < 0 {
		return nil
	}
	return os.NewFile(uintptr(fd), "baton-init")
}

func dupFd(fd int) (int, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("dup: %w", err)
	}
	return nfd, nil
}

// Adopt makes the supervisor carry on from h (before Run): the generations
// of the previous baton, tracked by pidfd. fds are those received with h
// (an upgrade: pidfds and output pipes, owned by the supervisor from now
// on); without them (after a crash) each pid is verified against its
// recorded start time and a pidfd is opened; a generation whose process is
// gone is left out.
func (s *Supervisor) Adopt(h Handover, fds []int) error {
	alive := map[lifecycle.Gen]bool{}
	prevID := s.adoptTracking(h.Tracking)
	for _, gh := range h.Gens {
		rt, err := s.adoptGen(gh, fds, prevID)
		if err != nil {
			s.log.Warn("generation not adopted", zap.Int("gen", int(gh.Gen)), zap.Int("pid", gh.Pid), zap.Error(err))
			continue
		}
		s.gens[gh.Gen] = rt
		alive[gh.Gen] = true
	}
	var kept []lifecycle.GenInfo
	for _, g := range h.Machine.Gens {
		if alive[g.Gen] {
			kept = append(kept, g)
			delete(alive, g.Gen)
		}
	}
	h.Machine.Gens = append(kept, s.foundGens(kept, alive)...)
	m, err := lifecycle.Restore(s.cfg.Lifecycle, h.Machine, s.clock.Now())
	if err != nil {
		return err
	}
	s.m = m
	s.lastGood = h.LastGood
	s.pidFile = h.PidFile
	for _, r := range h.Reloads {
		s.history.add(r)
	}
	s.lastReload = h.LastReload
	if s.watch != nil && h.Watch != nil {
		s.watch.restore(*h.Watch)
	}
	s.adopted = true
	s.readyOnce.Do(func() { close(s.firstReady) })
	s.noteRemnants(alive)
	return nil
}

// foundGens gives the adopted generations without a lifecycle state
// (found by their marker, see Recover) one: the newest is active if no
// generation with a state is; the others drain from now (Run sends the
// drain signal) until their drain deadline.
func (s *Supervisor) foundGens(kept []lifecycle.GenInfo, found map[lifecycle.Gen]bool) []lifecycle.GenInfo {
	gens := make([]lifecycle.Gen, 0, len(found))
	for g := range found {
		gens = append(gens, g)
	}
	slices.Sort(gens)
	hasActive := slices.ContainsFunc(kept, func(g lifecycle.GenInfo) bool { return g.State == lifecycle.Active })
	now := s.clock.Now()
	var out []lifecycle.GenInfo
	for i := len(gens) - 1; i >= 0; i-- {
		g := lifecycle.GenInfo{Gen: gens[i], Pid: s.gens[gens[i]].proc.Pid(), StartedAt: now, ReadyAt: now}
		if !hasActive {
			g.State, hasActive = lifecycle.Active, true
		} else {
			g.State, g.DrainedAt, g.Deadline = lifecycle.Draining, now, now.Add(s.cfg.Lifecycle.DrainTimeout)
			s.toDrain = append(s.toDrain, g.Gen)
		}
		out = append(out, g)
	}
	return out
}

func (s *Supervisor) adoptGen(gh GenHandover, fds []int, prevID string) (*genRuntime, error) {
	pidfd, out := fdAt(fds, gh.Pidfd), fdAt(fds, gh.Output)
	if pidfd < 0 {
		var err error
		if pidfd, err = proc.OpenPidfd(gh.Pid, gh.StartTicks); err != nil {
			closeFds([]int{out})
			return nil, err
		}
	}
	rt := &genRuntime{gen: gh.Gen, dir: gh.Dir, config: gh.Config, digest: gh.Digest, acquired: true,
		log: s.log.With(zap.Int("gen", int(gh.Gen)), zap.Int("pid", gh.Pid))}
	rt.outLog.Store(rt.log)
	if len(rt.config) > 0 {
		rt.configDigest = digestCopies(rt.config)
		rt.rewrite = pathRewriter(rt.config, nil)
	}
	rt.proc = proc.Adopt(proc.Handover{Pid: gh.Pid, Pidfd: pidfd, Output: out}, rt.logOutput)
	rt.track = s.adoptedTrack(gh, prevID)
	rt.log.Info("generation adopted", zap.String("cgroup", rt.track.cgroup), zap.String("marker", rt.track.marker))
	return rt, nil
}

// startAdopted arms the exit watches of adopted generations (from Run),
// and tells those found without a lifecycle state to drain.
func (s *Supervisor) startAdopted(ctx context.Context) {
	for _, rt := range s.gens {
		rt.ctx, rt.cancel = context.WithCancel(ctx)
		s.goEffect(func() { s.watchExit(rt) })
	}
	for _, gen := range s.toDrain {
		s.signal(gen, lifecycle.Drain, "adopted without a state")
	}
	s.toDrain = nil
}

// AdoptListeners rebuilds a listener set from a handover and its
// descriptors (taken from fds).
func AdoptListeners(h Handover, fds []int) (*ListenerSet, error) {
	ls := &ListenerSet{items: map[listenerKey]*listenerEntry{}}
	var gens []lifecycle.Gen
	for _, g := range h.Gens {
		gens = append(gens, g.Gen)
	}
	for i := 0; i < len(h.Listeners); i++ {
		l := h.Listeners[i]
		sp, err := fdpass.ParseSpec(l.Spec)
		fd := fdAt(fds, l.Fd)
		if err == nil && fd < 0 {
			err = errors.New("no descriptor")
		}
		if err == nil && l.MemberOf != 0 {
			err = errors.New("a generation's member without its group")
		}
		if err != nil {
			if fd >= 0 {
				unix.Close(fd)
			}
			return nil, errors.Join(fmt.Errorf("adopt listener %s: %w", l.Spec, err), ls.CloseAll())
		}
		if l.Steered {
			var members []ListenerHandover
			for i+1 < len(h.Listeners) && h.Listeners[i+1].MemberOf != 0 {
				i++
				members = append(members, h.Listeners[i])
			}
			if err := ls.adoptSteered(sp, l, fd, members, fds, gens); err != nil {
				return nil, errors.Join(fmt.Errorf("adopt listener %s: %w", l.Spec, err), ls.CloseAll())
			}
			continue
		}
		sock, err := fdpass.Adopt(sp, fd)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("adopt listener %s: %w", l.Spec, err), ls.CloseAll())
		}
		ls.add(sock, l.Removed, l.Users, l.Where)
	}
	return ls, nil
}
