package supervisor

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// configListeners reads the listeners gen's configuration declares (on the
// check goroutine). With listeners from the config they become rt.wanted,
// and every refusal fails the check. With --listen, an address --listen
// does not cover fails it (file:line) before the proxy's own check runs;
// nginx's dump check refuses those itself.
func (s *Supervisor) configListeners(rt *genRuntime, src proxyctl.ListenerSource, spec proxyctl.GenSpec, out string) error {
	if !s.cfg.ListenersFromConfig {
		if src.ListenersFromCheck() || s.cfg.AdoptListeners {
			return nil // nginx's dump check refuses them; adopted ones are taken over
		}
		cls, _ := src.ConfigListeners(spec, out) // the proxy judges what baton cannot parse
		return proxyctl.Uncovered(cls, spec.Listeners)
	}
	cls, err := src.ConfigListeners(spec, out)
	if err == nil {
		err = proxyctl.Unconditional(cls)
	}
	if err != nil {
		return err
	}
	if len(cls) == 0 {
		return fmt.Errorf("%w: the configuration declares no listening address (baton run without --listen takes them from it)", proxyctl.ErrListenerRefused)
	}
	rt.wanted = cls
	return nil
}

// checkSpec is spec with the listeners gen will get, for a driver's output
// check: with listeners from the config, its wanted addresses (sockets not
// bound yet described by their spec).
func (s *Supervisor) checkSpec(rt *genRuntime, spec proxyctl.GenSpec) proxyctl.GenSpec {
	if !s.cfg.ListenersFromConfig || rt.wanted == nil {
		return spec
	}
	have := map[string]proxyctl.Listener{}
	for _, l := range spec.Listeners {
		have[l.Spec.Key()] = l
	}
	var ls []proxyctl.Listener
	for _, w := range rt.wanted {
		l, ok := have[w.Spec.Key()]
		if !ok {
			l = proxyctl.Listener{Spec: w.Spec, Fd: -1, Addr: w.Spec.Addr, Backlog: fdpass.EffectiveBacklog(w.Spec)}
		}
		ls = append(ls, l)
	}
	spec.Listeners = ls
	return spec
}

// acquire takes gen's listeners on the loop: the sockets its configuration
// declares (binding the missing ones) with listeners from the config, else
// (and for a crash replacement, which runs the active generation's set) the
// current ones.
func (s *Supervisor) acquire(rt *genRuntime, replacement bool) ([]proxyctl.Listener, error) {
	ls, err := s.acquireListeners(rt, replacement)
	if err == nil && !s.warnedShared {
		if why := steeringRefused(); why != nil {
			for _, l := range ls {
				if !l.Spec.IsStream() && l.Spec.Scheme != fdpass.Unix {
					s.warnedShared = true
					s.log.Warn("UDP listeners are shared by every generation: the kernel refused baton's steering program, so a draining generation can still receive new connections' datagrams and lose another generation's QUIC packets (run baton as root, or with CAP_BPF and CAP_NET_ADMIN)",
						zap.String("addr", l.Addr), zap.Error(why))
					break
				}
			}
		}
	}
	return ls, err
}

func (s *Supervisor) acquireListeners(rt *genRuntime, replacement bool) ([]proxyctl.Listener, error) {
	if !s.cfg.ListenersFromConfig || replacement || rt.wanted == nil {
		ls, err := s.cfg.Listeners.acquire(rt.gen)
		if err != nil {
			return nil, fmt.Errorf("listeners: %w", err)
		}
		rt.acquired = len(ls) > 0 || !s.cfg.ListenersFromConfig
		return ls, nil
	}
	ls, bound, err := s.cfg.Listeners.acquireFor(rt.gen, rt.wanted)
	if err != nil {
		return nil, fmt.Errorf("listeners: %w", err)
	}
	rt.acquired = len(ls) > 0
	for _, i := range bound {
		rt.log.Info("listener bound", zap.String("addr", ls[i].Addr), zap.String("spec", ls[i].Spec.String()),
			zap.String("where", rt.wanted[i].Where), zap.Uint64("inode", ls[i].Inode))
	}
	return ls, nil
}

// activateListeners makes gen's listeners, now that it is active, the
// current ones (listeners from the config): the others close once no
// generation holds them.
func (s *Supervisor) activateListeners(gen lifecycle.Gen) {
	where := map[listenerKey]string{}
	if rt := s.gens[gen]; rt != nil {
		for _, w := range rt.wanted {
			where[listenerKey(w.Spec.Key())] = w.Where
		}
	}
	removed, err := s.cfg.Listeners.activate(gen, where)
	for _, sock := range removed {
		s.log.Info("listener not in the active config: closed once no generation holds it",
			zap.Int("gen", int(gen)), zap.String("addr", sock.Addr()), zap.Uint64("inode", sock.Inode()))
	}
	if err != nil {
		s.log.Warn("close listeners", zap.Error(err))
	}
}
