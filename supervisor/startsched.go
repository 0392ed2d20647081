package supervisor

import (
	"go.uber.org/zap"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Start scheduling (--start-nice, --start-cpus): proc.StartSched is how a
// generation starts while another one serves; once it is active, its
// threads get baton's own values back.

// startSched is how rt starts: with --start-nice/--start-cpus while another
// generation serves (a reload), with baton's own values otherwise (the
// first start, a crash replacement: nothing serves that it could slow down,
// and they should serve as soon as they can).
func (s *Supervisor) startSched(rt *genRuntime) *proc.StartSched {
	rt.sched = nil
	if s.cfg.StartSched.Off() {
		return nil
	}
	for _, g := range s.m.Generations() {
		if g.State == lifecycle.Active && g.Gen != rt.gen {
			rt.sched = s.cfg.StartSched
		}
	}
	return rt.sched
}

// endStartSched gives rt's threads baton's own nice level and CPUs back
// now that it is active (see StartSched.Reset). A failure leaves the
// generation serving niced or pinned, which the operator must hear about.
func (s *Supervisor) endStartSched(rt *genRuntime) {
	if rt.sched == nil {
		return
	}
	ss := rt.sched
	rt.sched = nil
	start := s.clock.Now()
	res := ss.Reset(s.members(rt))
	took := s.clock.Now().Sub(start)
	if res.Err != nil {
		rt.log.Warn("active generation keeps its start scheduling: baton could not reset it; it serves at that nice level or on those CPUs until its next reload",
			zap.String("start_sched", ss.String()), zap.Int("threads_reset", res.Threads), zap.Error(res.Err),
			zap.String("hint", "resetting needs CAP_SYS_NICE or a nice rlimit (--rlimit nice=20, ulimit -e, LimitNICE=) and the proxy's processes running as baton's user; or drop --start-nice/--start-cpus"))
		return
	}
	rt.log.Info("start scheduling reset", zap.String("start_sched", ss.String()),
		zap.Int("threads_reset", res.Threads), zap.Int("threads_kept", res.Kept), zap.Duration("took", took))
}
