package supervisor

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/proxyctl"
)

// checkPlan is what a generation's config check does, settled from the
// driver and the check mode: a reload and `baton check` (Check) both run
// it through checkConfig, so that the two never disagree.
type checkPlan struct {
	argv []string                // the check command; nil: none
	src  proxyctl.ListenerSource // reads the config's listeners; nil: none
	// dump reads, with baton's own reader, what the driver's checks would
	// read from the check command's output (StartChecks under --check
	// auto): the command then runs only when that read fails.
	dump proxyctl.StartChecks
}

// planCheck settles the check of spec under mode.
func (s *Supervisor) planCheck(spec proxyctl.GenSpec, mode proxyctl.CheckMode) checkPlan {
	p := checkPlan{argv: s.cfg.Driver.CheckArgv(spec)}
	p.src, _ = s.cfg.Driver.(proxyctl.ListenerSource)
	if sc, ok := s.cfg.Driver.(proxyctl.StartChecks); ok && mode == proxyctl.CheckAuto {
		p.dump = sc
	}
	return p
}

// none: the driver checks nothing (no command, no listeners to read).
func (p checkPlan) none() bool { return len(p.argv) == 0 && p.src == nil }

// checkConfig runs the check p of rt's config (on an effect goroutine, or
// on `baton check`'s): the listeners the config declares (with --listen:
// every one covered), the check command or baton's own reading of the
// config, and the driver's checks of that output. It reports whether the
// check command ran. --check-timeout covers the whole check: the command
// and the reading of its output (the nginx -T dump).
func (s *Supervisor) checkConfig(rt *genRuntime, spec proxyctl.GenSpec, p checkPlan) (bool, error) {
	start := s.clock.Now()
	ctx, cancel := context.WithTimeout(rt.ctx, s.cfg.CheckTimeout)
	defer cancel()
	var err error
	if p.src != nil && !p.src.ListenersFromCheck() {
		err = s.configListeners(rt, p.src, spec, "")
	}
	var out string
	ran := false
	if err == nil {
		// The start checks the config: what baton's own checks read
		// is read by baton, unless it cannot (then the command runs).
		read := false
		if p.dump != nil {
			dump, derr := p.dump.ConfigDump(spec)
			if read = derr == nil; read {
				out = rt.userPaths(dump)
			} else {
				rt.log.Debug("config read by the check command", zap.Error(derr))
			}
		}
		if !read && len(p.argv) > 0 {
			rt.log.Debug("check config", zap.Strings("argv", p.argv))
			out, err = s.runCommand(ctx, rt, p.argv)
			ran = true
		}
	}
	if p.src != nil && p.src.ListenersFromCheck() && err == nil {
		err = s.configListeners(rt, p.src, spec, out)
	}
	if oc, ok := s.cfg.Driver.(proxyctl.OutputChecker); ok && err == nil {
		err = oc.CheckOutput(s.checkSpec(rt, spec), out)
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("config check not done within its timeout (%v), reading its output included: %w", s.cfg.CheckTimeout, context.Cause(ctx))
	}
	rt.log.Debug("check done", zap.Bool("command", ran), zap.Duration("took", s.clock.Now().Sub(start)), zap.Int("output_bytes", len(out)), zap.Error(err))
	return ran, err
}
