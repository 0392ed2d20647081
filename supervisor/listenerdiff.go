package supervisor

import (
	"errors"
	"fmt"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Listener diffs (baton run without --listen: the proxy's configuration
// declares the listeners). Each generation holds the sockets its own
// configuration declares. An entry is "removed" when the active generation
// does not use it; it is closed once no generation uses it. So a reload that
// adds an address binds one socket before its generation starts (removed
// until that generation becomes active: a failed generation's new socket is
// closed when it is forgotten), one that drops an address closes it when the
// last generation holding it is forgotten, and an address kept across a
// reload keeps its socket.

// acquireFor records gen as a user of the socket of every wanted address,
// binding those the set lacks, and returns them for gen's driver in wanted
// order; bound lists the indexes (in wanted and out) of the sockets it
// created. On error nothing changed.
func (ls *ListenerSet) acquireFor(gen lifecycle.Gen, wanted []proxyctl.ConfigListener) (out []proxyctl.Listener, bound []int, err error) {
	var fresh []*listenerEntry
	entries := make([]*listenerEntry, len(wanted))
	undo := func(err error) ([]proxyctl.Listener, []int, error) {
		for _, e := range entries {
			if e != nil && e.steer != nil {
				err = errors.Join(err, e.steer.release(gen))
			}
		}
		for _, e := range fresh {
			if e.steer != nil {
				err = errors.Join(err, e.sock.Close(), e.steer.close())
				continue
			}
			err = errors.Join(err, e.sock.Close(), e.sock.Unlink())
		}
		return nil, nil, err
	}
	for i, w := range wanted {
		k := listenerKey(w.Spec.Key())
		if e := ls.items[k]; e != nil {
			if err := sameShape(e.sock.Spec(), w.Spec); err != nil {
				return undo(fmt.Errorf("%s: %w", w.Where, err))
			}
			entries[i] = e
			continue
		}
		if dup := indexOfKey(wanted[:i], k); dup >= 0 {
			return undo(fmt.Errorf("%s: %s declared twice (first at %s)", w.Where, w.Spec.Addr, wanted[dup].Where))
		}
		e, err := bindEntry(w.Spec)
		if err != nil {
			return undo(fmt.Errorf("%s: bind %s: %w", w.Where, w.Spec.Addr, err))
		}
		// Not used by the active generation (yet): closed when gen is
		// forgotten without having become active.
		e.removed, e.where = true, w.Where
		fresh, entries[i] = append(fresh, e), e
		bound = append(bound, i)
	}
	for i, e := range entries {
		l, err := e.listenerFor(gen)
		if err != nil {
			return undo(fmt.Errorf("%s: %w", wanted[i].Where, err))
		}
		out = append(out, l)
	}
	for _, e := range fresh {
		k := listenerKey(e.sock.Spec().Key())
		ls.items[k] = e
		ls.order = append(ls.order, k)
	}
	for _, e := range entries {
		e.users[gen] = true
	}
	return out, bound, nil
}

// activate makes gen's listeners the current ones (gen became the active
// generation): entries gen does not use are marked removed and closed at
// once when no generation uses them, the others are current again. where
// records, by key, where gen's configuration declares each address. It
// returns the sockets marked removed and close errors.
func (ls *ListenerSet) activate(gen lifecycle.Gen, where map[listenerKey]string) (removed []*fdpass.Socket, err error) {
	var errs []error
	for _, k := range append([]listenerKey(nil), ls.order...) {
		e := ls.items[k]
		if e.users[gen] {
			e.removed = false
			if w := where[k]; w != "" {
				e.where = w
			}
			continue
		}
		if !e.removed {
			removed = append(removed, e.sock)
		}
		e.removed = true
		if len(e.users) == 0 {
			errs = append(errs, ls.closeEntry(k))
		}
	}
	return removed, errors.Join(errs...)
}

// where is where the active configuration declares the listener of key
// ("" when not from a configuration).
func (ls *ListenerSet) where(key listenerKey) string {
	if e := ls.items[key]; e != nil {
		return e.where
	}
	return ""
}

// sameShape refuses to reuse a bound socket for a spec whose options would
// need another socket: the proxy matches IPv6 sockets by IPV6_V6ONLY too.
func sameShape(have, want fdpass.Spec) error {
	if have.V6Only != want.V6Only {
		return fmt.Errorf("%s is bound with v6only=%t and the config now asks for v6only=%t: a bound socket cannot change that; restart baton to apply it", have.Addr, have.V6Only, want.V6Only)
	}
	return nil
}

func indexOfKey(cls []proxyctl.ConfigListener, k listenerKey) int {
	for i, c := range cls {
		if listenerKey(c.Spec.Key()) == k {
			return i
		}
	}
	return -1
}

func listenerOf(s *fdpass.Socket) proxyctl.Listener {
	return proxyctl.Listener{Spec: s.Spec(), Fd: s.Fd(), Addr: s.Addr(), Inode: s.Inode(), Backlog: s.Backlog()}
}
