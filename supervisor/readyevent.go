package supervisor

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/proxyctl"
)

// readyEventWait bounds the wait for a session's readiness event: past it
// the generation is probed as if it had none (a proxy that never sends the
// event still becomes ready, at the probe's pace).
const readyEventWait = 2 * time.Second

// awaitReadyEvent waits, when rt's session offers a readiness event, until
// it comes, or readyEventWait passed; false when rt ended meanwhile.
func (s *Supervisor) awaitReadyEvent(rt *genRuntime) bool {
	n, ok := rt.session.(proxyctl.ReadyNotifier)
	if !ok {
		return true
	}
	ch := n.ReadyNotified()
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	default:
	}
	// The session's own words for why it is not ready (no READY=1 yet),
	// shown if the generation is not ready in time.
	ctx, cancel := context.WithTimeout(rt.ctx, time.Second)
	err := rt.session.Ready(ctx)
	cancel()
	rt.setProbeError(err)
	if err == nil {
		return true
	}
	t := s.clock.NewTimer(readyEventWait)
	defer t.Stop()
	select {
	case <-ch:
		rt.log.Debug("readiness notification")
		return true
	case <-t.C():
		rt.log.Info("no readiness notification yet: probing", zap.Duration("after", readyEventWait))
		return true
	case <-rt.ctx.Done():
		return false
	}
}
