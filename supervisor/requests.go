package supervisor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

type reqKind int

const (
	reqReload reqKind = iota + 1
	reqStop
	reqStatus
	reqUpgrade
	reqHistory
)

// request goes from an API caller to the loop; the loop answers on reply.
type request struct {
	kind    reqKind
	fast    bool
	trigger api.Trigger // of a reload
	reply   chan response
}

type response struct {
	reload  api.ReloadResponse
	status  api.Status
	procs   []proc.GenProcs // of status, see gatherProcs
	history []api.ReloadRecord
	upgrade api.UpgradeResult
	err     error
}

// pendingReq is a request the machine has not answered yet.
type pendingReq struct {
	kind    reqKind
	at      time.Time
	trigger api.Trigger // of a reload
	reply   chan response
}

// Reload asks for a reload and waits until it is acknowledged: the new
// generation serves and no older generation holds a listener. Cancelling
// ctx stops the waiting, not the reload. The history records it as asked
// for through the control API.
func (s *Supervisor) Reload(ctx context.Context) (api.ReloadResponse, error) {
	return s.ReloadBy(ctx, api.TriggerAPI)
}

// ReloadBy is Reload, recorded in the history with trigger t.
func (s *Supervisor) ReloadBy(ctx context.Context, t api.Trigger) (api.ReloadResponse, error) {
	r, err := s.call(ctx, request{kind: reqReload, trigger: t})
	return r.reload, err
}

// Reloads returns the reload history: the last api.ReloadHistoryLen finished
// reloads, first start and crash replacements, oldest first.
func (s *Supervisor) Reloads(ctx context.Context) ([]api.ReloadRecord, error) {
	r, err := s.call(ctx, request{kind: reqHistory})
	return r.history, err
}

// Stop asks every generation to drain (or, fast, to stop now) and waits
// until they are gone and the supervisor exits.
func (s *Supervisor) Stop(ctx context.Context, fast bool) error {
	_, err := s.call(ctx, request{kind: reqStop, fast: fast})
	return err
}

// Upgrade replaces this baton with the binary on disk: the new baton gets
// the listeners, the control socket and every live generation, and this one
// stops once the new one serves (Run then returns with HandedOver true). On
// failure this baton carries on and the error says why.
func (s *Supervisor) Upgrade(ctx context.Context) (api.UpgradeResult, error) {
	r, err := s.call(ctx, request{kind: reqUpgrade})
	return r.upgrade, err
}

// Status returns a snapshot of the supervisor and its generations: the
// loop hands out what it holds in memory, and the caller's goroutine reads
// the processes and sockets from the kernel (see gatherProcs).
func (s *Supervisor) Status(ctx context.Context) (api.Status, error) {
	r, err := s.call(ctx, request{kind: reqStatus})
	if err != nil {
		return r.status, err
	}
	st := r.status
	return st, s.gatherProcs(ctx, &st, r.procs)
}

func (s *Supervisor) call(ctx context.Context, r request) (response, error) {
	r.reply = make(chan response, 1)
	select {
	case s.reqs <- r:
	case <-s.done:
		return response{}, ErrNotRunning
	case <-ctx.Done():
		return response{}, ctx.Err()
	}
	select {
	case resp := <-r.reply:
		return resp, resp.err
	case <-s.done:
		// Run may have answered just before returning.
		select {
		case resp := <-r.reply:
			return resp, resp.err
		default:
		}
		return response{}, ErrNotRunning
	case <-ctx.Done():
		return response{}, ctx.Err()
	}
}

// handle runs on the loop goroutine.
func (s *Supervisor) handle(r request) {
	now := s.clock.Now()
	switch r.kind {
	case reqStatus:
		st, procs := s.status()
		r.reply <- response{status: st, procs: procs}
		return
	case reqHistory:
		r.reply <- response{history: s.history.list()}
		return
	case reqUpgrade:
		if s.stopping {
			r.reply <- response{err: fmt.Errorf("upgrade: %w", lifecycle.ErrStopping)}
			return
		}
		res, err := s.doUpgrade()
		r.reply <- response{upgrade: res, err: err}
		if err == nil {
			s.exited = true // the next baton carries on
		}
		return
	case reqReload:
		s.nextReq++
		s.pending[s.nextReq] = pendingReq{kind: reqReload, at: now, trigger: r.trigger, reply: r.reply}
		s.step(lifecycle.ReloadRequested{At: now, Req: s.nextReq})
	case reqStop:
		if !s.stopping {
			s.stopping = true
			s.notify("STOPPING=1\nSTATUS=stopping: draining every generation")
		}
		s.nextReq++
		s.pending[s.nextReq] = pendingReq{kind: reqStop, at: now, reply: r.reply}
		s.step(lifecycle.StopRequested{At: now, Req: s.nextReq, Fast: r.fast})
	}
}

// reply answers the machine's Reply action.
func (s *Supervisor) reply(a lifecycle.Reply) {
	now := s.clock.Now()
	err := a.Err
	if a.Gen != 0 {
		err = s.explain(a.Gen, a.Err)
	}
	pid := 0
	rt := s.gens[a.Gen]
	if rt != nil && rt.proc != nil {
		pid = rt.proc.Pid()
	}
	if a.Gen != 0 {
		s.reloadDone(a, rt, pid, err)
	}
	for _, id := range a.Reqs {
		p, ok := s.pending[id]
		if !ok {
			continue
		}
		delete(s.pending, id)
		if p.kind == reqReload && err == nil {
			s.readyOnce.Do(func() { close(s.firstReady) })
		}
		if p.reply == nil { // baton's own first reload
			if err != nil {
				s.firstErr = err // its explained form is what Run returns
			}
			continue
		}
		p.reply <- response{reload: api.ReloadResponse{Generation: int(a.Gen), Pid: pid, DurationMs: float64(now.Sub(p.at).Microseconds()) / 1000}, err: err}
	}
	s.logReload(a, rt, pid, err)
}

// explain adds what baton saw to the failure err of a reload to gen: the
// generation, and for a readiness timeout the last probe error.
func (s *Supervisor) explain(gen lifecycle.Gen, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, lifecycle.ErrNotReady) {
		if rt := s.gens[gen]; rt != nil {
			if probe := rt.lastProbeError(); probe != nil {
				return fmt.Errorf("generation %d: %w (last check: %w)", gen, err, probe)
			}
		}
	}
	return fmt.Errorf("generation %d: %w", gen, err)
}

// reloadDone tells the service manager, the metrics and the watch.
func (s *Supervisor) reloadDone(a lifecycle.Reply, rt *genRuntime, pid int, err error) {
	if err == nil {
		if s.watch != nil && rt != nil {
			s.watch.applied(rt.digest)
		}
		s.notify(fmt.Sprintf("READY=1\nSTATUS=serving generation %d (pid %d)", a.Gen, pid))
		return
	}
	if s.served() {
		active, activePid := 0, 0
		for _, g := range s.m.Generations() {
			if g.State == lifecycle.Active {
				active, activePid = int(g.Gen), g.Pid
			}
		}
		s.notify(fmt.Sprintf("READY=1\nSTATUS=reload to generation %d failed; serving generation %d (pid %d)", a.Gen, active, activePid))
	}
}

// logReload logs a reload's end: one ERROR line for a failure, with the
// generation it started, its pid and how it ended when it exited, and the
// proxy's words in the error.
func (s *Supervisor) logReload(a lifecycle.Reply, rt *genRuntime, pid int, err error) {
	if a.Gen == 0 {
		return // stop replies, and requests refused before any generation
	}
	var exit *proc.ExitStatus
	switch {
	case rt != nil:
		exit = rt.exit.Load()
	case s.lastExit.gen == a.Gen: // it exited, and was forgotten before this reply
		pid, exit = s.lastExit.pid, s.lastExit.status
	}
	fields := []zap.Field{zap.Int("gen", int(a.Gen))}
	if pid != 0 {
		fields = append(fields, zap.Int("pid", pid))
	}
	fields = append(fields, zap.Int("requests", len(a.Reqs)))
	if err != nil {
		fields = append(fields, exitFields(exit)...)
		s.log.Error("reload failed", append(fields, zap.Error(err))...)
		return
	}
	s.log.Info("reload done", fields...)
}
