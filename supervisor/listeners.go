package supervisor

import (
	"errors"
	"fmt"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// listenerKey identifies a listener by its bound address (fdpass.Spec.Key).
type listenerKey string

// ListenerSet owns baton's listening sockets: one per address, created once
// and kept for baton's whole life. It counts which generations use each
// socket, so that a listener removed from the configuration is closed only
// once no live generation holds it. One goroutine (the supervisor loop) owns
// it.
type ListenerSet struct {
	order []listenerKey
	items map[listenerKey]*listenerEntry
}

type listenerEntry struct {
	sock *fdpass.Socket
	// steer holds a UDP address as a steered group (steered.go); sock
	// is then a duplicate of its anchor.
	steer   *steered
	users   map[lifecycle.Gen]bool
	removed bool   // not used by the active generation: closed once unused
	where   string // file:line of the active config declaring it, if any
}

// BindListeners creates a socket for every spec, or none: on error every
// socket bound so far is closed again.
func BindListeners(specs []fdpass.Spec) (*ListenerSet, error) {
	ls := &ListenerSet{items: map[listenerKey]*listenerEntry{}}
	names := map[string]bool{}
	for _, sp := range specs {
		key := listenerKey(sp.Key())
		var err error
		switch {
		case ls.items[key] != nil:
			err = fmt.Errorf("listener %s given twice", sp.Addr)
		case names[sp.Name]:
			err = fmt.Errorf("listener name %q given twice", sp.Name)
		}
		var e *listenerEntry
		if err == nil {
			if e, err = bindEntry(sp); err != nil {
				err = explainBusy(sp, err)
			}
		}
		if err != nil {
			return nil, errors.Join(err, ls.CloseAll())
		}
		names[sp.Name] = true
		ls.order = append(ls.order, key)
		ls.items[key] = e
	}
	return ls, nil
}

// Sockets returns the current (not removed) sockets, in spec order.
func (ls *ListenerSet) Sockets() []*fdpass.Socket {
	var out []*fdpass.Socket
	for _, k := range ls.order {
		if e := ls.items[k]; !e.removed {
			out = append(out, e.sock)
		}
	}
	return out
}

// current describes the current (not removed) listeners for a driver,
// without recording a user.
func (ls *ListenerSet) current() []proxyctl.Listener {
	var out []proxyctl.Listener
	for _, k := range ls.order {
		if e := ls.items[k]; !e.removed {
			out = append(out, listenerOf(e.sock))
		}
	}
	return out
}

// acquire records gen as a user of every current listener and returns them
// for its driver (for a steered address, gen's own member, bound now). The
// descriptors stay valid until Release(gen). On error nothing is held.
func (ls *ListenerSet) acquire(gen lifecycle.Gen) ([]proxyctl.Listener, error) {
	var out []proxyctl.Listener
	for _, k := range ls.order {
		e := ls.items[k]
		if e.removed {
			continue
		}
		l, err := e.listenerFor(gen)
		if err != nil {
			for _, k := range ls.order {
				if e := ls.items[k]; e.steer != nil {
					_ = e.steer.release(gen)
				}
			}
			return nil, err
		}
		out = append(out, l)
	}
	for _, k := range ls.order {
		if e := ls.items[k]; !e.removed {
			e.users[gen] = true
		}
	}
	return out, nil
}

// Release drops gen from every listener's users and closes removed
// listeners nobody uses any more. Releasing a gen that holds nothing is an
// error, so that counting mistakes show.
func (ls *ListenerSet) Release(gen lifecycle.Gen) error {
	held := false
	var errs []error
	for _, k := range append([]listenerKey(nil), ls.order...) {
		e := ls.items[k]
		if !e.users[gen] {
			continue
		}
		held = true
		delete(e.users, gen)
		if e.steer != nil {
			errs = append(errs, e.steer.release(gen))
		}
		if e.removed && len(e.users) == 0 {
			errs = append(errs, ls.closeEntry(k))
		}
	}
	if !held && len(ls.order) > 0 {
		errs = append(errs, fmt.Errorf("release generation %d: it holds no listener", gen))
	}
	return errors.Join(errs...)
}

func (ls *ListenerSet) closeEntry(k listenerKey) error {
	e := ls.items[k]
	delete(ls.items, k)
	for i, x := range ls.order {
		if x == k {
			ls.order = append(ls.order[:i], ls.order[i+1:]...)
			break
		}
	}
	if e.steer != nil {
		return errors.Join(e.sock.Close(), e.steer.close())
	}
	return errors.Join(e.sock.Close(), e.sock.Unlink())
}

// inodes returns the inodes of every shared socket in the set, removed
// ones included: a generation holding any of them still serves. A steered
// address's members are left out: each is its generation's own, and a
// draining generation's member receives only its own connections' packets.
func (ls *ListenerSet) inodes() map[uint64]bool {
	out := map[uint64]bool{}
	for _, e := range ls.items {
		if e.steer == nil {
			out[e.sock.Inode()] = true
		}
	}
	return out
}

// ReleaseAll closes baton's descriptors without unlinking unix socket
// paths: another baton (an upgrade) holds the sockets now.
func (ls *ListenerSet) ReleaseAll() error {
	var errs []error
	for _, k := range ls.order {
		e := ls.items[k]
		errs = append(errs, e.sock.Close())
		if e.steer != nil {
			// The maps stay as they are: this group's program steers
			// until the new baton attaches its own.
			errs = append(errs, e.steer.group.Release())
		}
	}
	ls.order, ls.items = nil, map[listenerKey]*listenerEntry{}
	return errors.Join(errs...)
}

// CloseAll closes every socket (baton's copies; generations keep theirs).
func (ls *ListenerSet) CloseAll() error {
	var errs []error
	for _, k := range append([]listenerKey(nil), ls.order...) {
		errs = append(errs, ls.closeEntry(k))
	}
	return errors.Join(errs...)
}

// Len is the number of sockets held.
func (ls *ListenerSet) Len() int { return len(ls.order) }

// handover describes the set for another baton; Fd is each socket's own
// descriptor (borrowed).
func (ls *ListenerSet) handover() []ListenerHandover {
	var out []ListenerHandover
	for _, k := range ls.order {
		e := ls.items[k]
		l := ListenerHandover{Spec: e.sock.Spec().String(), Inode: e.sock.Inode(), Removed: e.removed, Fd: e.sock.Fd(), Where: e.where, Steered: e.steer != nil}
		for g := range e.users {
			l.Users = append(l.Users, g)
		}
		out = append(out, l)
		if e.steer != nil {
			out = append(out, e.steer.handover(e.sock.Spec())...)
		}
	}
	return out
}

// add puts an adopted socket in the set with its users.
func (ls *ListenerSet) add(sock *fdpass.Socket, removed bool, users []lifecycle.Gen, where string) {
	k := listenerKey(sock.Spec().Key())
	if ls.items[k] != nil {
		_ = sock.Close() // already held
		return
	}
	e := &listenerEntry{sock: sock, users: map[lifecycle.Gen]bool{}, removed: removed, where: where}
	for _, g := range users {
		e.users[g] = true
	}
	ls.order = append(ls.order, k)
	ls.items[k] = e
}
