package proxyctl

import (
	"errors"
	"fmt"

	"github.com/batonproxy/baton/fdpass"
)

// ErrListenerRefused is wrapped by every error about a listening address in
// the proxy's configuration that baton cannot hand over.
var ErrListenerRefused = errors.New("listener refused")

// ConfigListener is one listening address the proxy's configuration
// declares, with the file and line that declare it.
type ConfigListener struct {
	Spec  fdpass.Spec
	Where string // file:line
	// Conditional: declared inside an HAProxy .if block, which baton does
	// not evaluate.
	Conditional bool
}

// ListenerSource is implemented by drivers that read the listening
// addresses from the proxy's configuration, so that baton can bind them
// itself (baton run without --listen) and check that --listen covers them.
type ListenerSource interface {
	// ConfigListeners returns the addresses g's configuration declares.
	// checkOutput is the output of the successful config check when
	// ListenersFromCheck is true, else "". Every address that parses is
	// returned, even when the error (every refusal, joined, each with its
	// file:line) is not nil.
	ConfigListeners(g GenSpec, checkOutput string) ([]ConfigListener, error)
	// ListenersFromCheck reports whether ConfigListeners reads the config
	// check's output (nginx -T); if not, it runs before the check.
	ListenersFromCheck() bool
}

// Uncovered refuses, with file and line, every configured TCP address that
// is not among the listeners handed over (--listen): each generation would
// fail to bind it (HAProxy runs with -dR). Unix sockets are left to the
// proxy (HAProxy binds its own under a temporary name and renames it into
// place at every start), and so are addresses inside .if blocks, which the
// proxy may not take.
func Uncovered(cls []ConfigListener, passed []Listener) error {
	have := map[string]bool{}
	for _, l := range passed {
		have[l.Spec.Key()] = true
	}
	var errs []error
	for _, cl := range cls {
		if cl.Conditional || cl.Spec.Scheme == fdpass.Unix {
			continue
		}
		if !have[cl.Spec.Key()] {
			errs = append(errs, fmt.Errorf("%w: %s: %s is not handed over by baton: add it to baton's --listen (or run without --listen to take the addresses from the config)", ErrListenerRefused, cl.Where, describe(cl.Spec)))
		}
	}
	return errors.Join(errs...)
}

// describe names a spec's address for people: 127.0.0.1:80, unix /run/x.sock.
func describe(sp fdpass.Spec) string {
	if sp.Scheme == fdpass.Unix {
		return "unix socket " + sp.Addr
	}
	return "address " + sp.Addr
}

// dedupe drops repeated addresses, refusing them when refuse is set (an
// HAProxy bind line per socket); nginx repeats listen in every server
// block of an address, which is one socket.
func dedupe(cls []ConfigListener, refuse bool) ([]ConfigListener, error) {
	first := map[string]string{}
	var out []ConfigListener
	var errs []error
	for _, cl := range cls {
		k := cl.Spec.Key()
		if w, ok := first[k]; ok {
			if refuse {
				errs = append(errs, fmt.Errorf("%w: %s: %s is already bound at %s: each address can be handed over once", ErrListenerRefused, cl.Where, describe(cl.Spec), w))
			}
			continue
		}
		first[k] = cl.Where
		out = append(out, cl)
	}
	return out, errors.Join(errs...)
}

// Unconditional refuses, with file and line, addresses declared inside .if
// blocks: baton binds what the configuration declares before the proxy
// reads it, and does not evaluate the conditions. A socket the proxy then
// does not take would keep the generation from ever being ready.
func Unconditional(cls []ConfigListener) error {
	var errs []error
	for _, cl := range cls {
		if cl.Conditional {
			errs = append(errs, fmt.Errorf("%w: %s: %s is declared inside a .if block, which baton does not evaluate: move the bind out of it, or give the addresses with --listen", ErrListenerRefused, cl.Where, describe(cl.Spec)))
		}
	}
	return errors.Join(errs...)
}
