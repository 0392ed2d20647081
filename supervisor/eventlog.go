package supervisor

import (
	"go.uber.org/zap"

	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// logEvent logs, on the loop and before the machine applies it, what an
// event from a generation's process means: an exit is a crash (WARN) when
// the generation was serving and baton not stopping, the failure of a
// crash replacement (WARN, as a failed start of one is: no reload request
// reports it), and otherwise the expected end of a drain or of a failed
// start (INFO: a failed reload has its own ERROR line).
func (s *Supervisor) logEvent(ev lifecycle.Event) {
	switch e := ev.(type) {
	case lifecycle.Exited:
		s.logExit(e)
	case lifecycle.Started:
		if e.Err == nil {
			return
		}
		if g, ok := s.genInfo(e.Gen); ok && g.Replacement {
			s.log.Warn("replacement generation failed to start", zap.Int("gen", int(e.Gen)), zap.Error(e.Err))
		}
	}
}

func (s *Supervisor) logExit(e lifecycle.Exited) {
	rt := s.gens[e.Gen]
	if rt == nil {
		return
	}
	g, ok := s.genInfo(e.Gen)
	s.lastExit.gen, s.lastExit.pid, s.lastExit.status = e.Gen, g.Pid, rt.exit.Load()
	fields := exitFields(rt.exit.Load())
	switch {
	case ok && g.State == lifecycle.Active && !s.m.Stopping():
		s.crashed.gen, s.crashed.pid = int(g.Gen), g.Pid
		rt.log.Warn("active generation exited unexpectedly: a replacement starts from the last good config", fields...)
	case ok && g.State == lifecycle.Starting && g.Replacement:
		rt.log.Warn("replacement generation exited before it was ready", fields...)
	case ok && g.State == lifecycle.Starting:
		rt.log.Info("generation exited before it was ready", fields...)
	default:
		rt.log.Info("generation exited", fields...)
	}
}

// genInfo is the machine's view of gen.
func (s *Supervisor) genInfo(gen lifecycle.Gen) (lifecycle.GenInfo, bool) {
	for _, g := range s.m.Generations() {
		if g.Gen == gen {
			return g, true
		}
	}
	return lifecycle.GenInfo{}, false
}
