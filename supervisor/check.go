package supervisor

import (
	"context"
	"errors"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/proxyctl"
)

// CheckReport is what Check did.
type CheckReport struct {
	// Argv is the check command that ran, with the user's paths (nil:
	// none ran).
	Argv []string
	// InsteadOfStart: under --check auto a reload's check is the new
	// generation's own start (proxyctl.StartChecks), which Check does not
	// do, so it ran the driver's check command instead.
	InsteadOfStart bool
	// Listeners are the addresses the config declares, with listeners
	// from the config (nil with --listen).
	Listeners []proxyctl.ConfigListener
	Took      time.Duration
}

// Check runs the config check a reload runs (the same checkPlan and
// checkConfig), without a supervisor: it starts no generation, binds no
// socket and needs no control socket. specs are the --listen sockets, which
// it describes to the driver without binding them (descriptor -1). The
// copies of the config live in a temporary directory, removed before it
// returns. Only cfg's Command, Driver, Rlimits, CheckTimeout, Check, Env,
// AdoptListeners and ListenersFromConfig are used; deps needs Log and
// Starter.
func Check(ctx context.Context, cfg Config, specs []fdpass.Spec, deps Deps) (CheckReport, error) {
	var rep CheckReport
	if cfg.Driver == nil || len(cfg.Command) == 0 || deps.Starter == nil || deps.Log == nil {
		return rep, errors.New("check: command, driver, starter and logger are required")
	}
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = DefaultCheckTimeout
	}
	cfg.Env = childEnv(cfg.Env)
	if deps.Clock == nil {
		deps.Clock = realClock{}
	}
	s := &Supervisor{cfg: cfg, log: deps.Log, clock: deps.Clock, starter: deps.Starter, maxOutput: maxCommandOutput}
	dir, err := os.MkdirTemp("", "baton-check-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	rt := &genRuntime{gen: 1, dir: dir, ctx: ctx, cancel: func() {}, log: s.log}
	rt.outLog.Store(rt.log)
	start := s.clock.Now()
	if err := s.snapshotConfig(rt, nil); err != nil {
		return rep, err
	}
	ls := make([]proxyctl.Listener, len(specs))
	for i, sp := range specs {
		ls[i] = proxyctl.Listener{Spec: sp, Fd: -1, Addr: sp.Addr, Backlog: fdpass.EffectiveBacklog(sp)}
	}
	spec := s.genSpec(rt, ls)
	mode := cfg.Check
	if _, ok := cfg.Driver.(proxyctl.StartChecks); ok && mode == proxyctl.CheckAuto {
		mode, rep.InsteadOfStart = proxyctl.CheckAlways, true
	}
	plan := s.planCheck(spec, mode)
	ran, err := s.checkConfig(rt, spec, plan)
	rep.Took = s.clock.Now().Sub(start)
	if ran {
		for _, a := range plan.argv {
			rep.Argv = append(rep.Argv, rt.userPaths(a))
		}
	}
	rep.Listeners = rt.wanted
	s.log.Debug("check", zap.Bool("command", ran), zap.Duration("took", rep.Took), zap.Error(err))
	return rep, err
}
