package supervisor

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/steer"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Steered UDP listeners (docs/design.md, "UDP and QUIC listeners"). A UDP
// address is held as a reuseport group of baton's own sockets: an anchor
// baton keeps for its whole life and never hands out (it holds the address
// and the group), and one member per generation, created when the
// generation starts and closed when it is forgotten. baton's eBPF program
// sends a datagram to the member whose cookie begins its QUIC connection
// ID, and every other datagram to the active generation's member. Where
// the kernel refuses the program (no CAP_BPF and CAP_NET_ADMIN, nor CAP_SYS_ADMIN), the address falls back to
// one socket every generation shares.

// steered is the group of one UDP address.
type steered struct {
	group   *steer.Group
	anchor  *steer.Member
	members map[lifecycle.Gen]*steer.Member
}

// steeringState remembers whether the kernel refused steering, so that
// the fallback is logged once.
var steeringState struct {
	sync.Mutex
	refused error
}

// steeringRefused is the error that made steering unavailable, if any.
func steeringRefused() error {
	steeringState.Lock()
	defer steeringState.Unlock()
	return steeringState.refused
}

// bindEntry creates the entry of a spec: a steered group for UDP where the
// kernel allows it, else one socket.
func bindEntry(sp fdpass.Spec) (*listenerEntry, error) {
	if sp.IsStream() || sp.Scheme == fdpass.Unix || steeringRefused() != nil {
		s, err := fdpass.Listen(sp)
		if err != nil {
			return nil, err
		}
		return &listenerEntry{sock: s, users: map[lifecycle.Gen]bool{}}, nil
	}
	st, err := newSteered(sp, -1, true, false)
	var refused *steeringError
	if errors.As(err, &refused) {
		steeringState.Lock()
		steeringState.refused = refused.err
		steeringState.Unlock()
		return bindEntry(sp)
	}
	if err != nil {
		return nil, err
	}
	return st.entry(sp)
}

// errSharedUDP: the generations share one UDP socket on the address (no
// steered group to recover).
var errSharedUDP = errors.New("a shared UDP socket, not a steered group")

// steeringError is the kernel refusing the program or its maps.
type steeringError struct{ err error }

func (e *steeringError) Error() string { return e.err.Error() }

// newSteered creates the group of sp and its anchor (the group's sink): a
// new one (exclusive: the bind fails if any other socket holds the
// address), or anchorFd (taken over) when it is not -1. With recovering
// (a restart after a crash) the group's program is attached only once a
// member is marked active: meanwhile the dead baton's keeps steering.
func newSteered(sp fdpass.Spec, anchorFd int, exclusive, recovering bool) (*steered, error) {
	closeAnchor := func() {
		if anchorFd >= 0 {
			unix.Close(anchorFd)
		}
	}
	ap, err := netip.ParseAddrPort(sp.Addr)
	if err != nil {
		closeAnchor()
		return nil, fmt.Errorf("listen %s: %w", sp.Addr, err)
	}
	g, err := steer.NewGroup(ap, steer.Options{V6Only: sp.V6Only, FreeBind: sp.FreeBind, Alone: aloneOnAddress})
	if err != nil {
		closeAnchor()
		return nil, &steeringError{err}
	}
	if recovering {
		g.DeferAttach()
	}
	st := &steered{group: g, members: map[lifecycle.Gen]*steer.Member{}}
	if anchorFd >= 0 {
		st.anchor, err = g.Adopt(anchorFd)
	} else {
		st.anchor, err = g.Add(exclusive)
	}
	if err == nil {
		err = st.anchor.SetSink()
	}
	if err != nil {
		_ = g.Close()
		return nil, fmt.Errorf("listen %s://%s: %w", sp.Scheme, sp.Addr, err)
	}
	return st, nil
}

// aloneOnAddress fails with EADDRINUSE if an unconnected UDP socket other
// than fd is bound to addr (or to the wildcard address of its family on
// that port): SO_REUSEPORT would let a socket of baton's own user, such as
// a second baton's, into the group, and that baton's program would steer
// it.
func aloneOnAddress(fd int, addr netip.AddrPort) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	socks, err := fdpass.DiagUDP(1 << fdpass.TCPClose)
	if err != nil {
		return nil // sock_diag unavailable: the bind's own checks stand
	}
	for _, s := range socks {
		same := s.Addr == addr || s.Addr.Port() == addr.Port() && s.Addr.Addr().IsUnspecified() && s.Addr.Addr().Is4() == addr.Addr().Is4()
		if same && s.Inode != st.Ino {
			return fmt.Errorf("%w: UDP socket inode %d (owner uid %d) is bound to %s: another baton, or a process of baton's user, holds it (baton doctor names it)", unix.EADDRINUSE, s.Inode, s.UID, s.Addr)
		}
	}
	return nil
}

// adoptMember makes fd (taken over) gen's member.
func (st *steered) adoptMember(gen lifecycle.Gen, fd int) error {
	m, err := st.group.Adopt(fd)
	if err != nil {
		return err
	}
	if old := st.members[gen]; old != nil {
		_ = old.Close()
	}
	st.members[gen] = m
	return nil
}

// entry wraps the anchor as the entry's socket (a duplicate: status,
// history and the state file name the address by it).
func (st *steered) entry(sp fdpass.Spec) (*listenerEntry, error) {
	fd, err := unix.FcntlInt(uintptr(st.anchor.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listen %s: dup: %w", sp.Addr, err), st.group.Close())
	}
	s, err := fdpass.Adopt(sp, fd)
	if err != nil {
		return nil, errors.Join(err, st.group.Close())
	}
	return &listenerEntry{sock: s, steer: st, users: map[lifecycle.Gen]bool{}}, nil
}

// memberFor returns gen's member, binding it if gen has none.
func (st *steered) memberFor(gen lifecycle.Gen) (*steer.Member, error) {
	if m := st.members[gen]; m != nil {
		return m, nil
	}
	m, err := st.group.Add(false)
	if err != nil {
		return nil, err
	}
	st.members[gen] = m
	return m, nil
}

// release closes gen's member, if any.
func (st *steered) release(gen lifecycle.Gen) error {
	m := st.members[gen]
	if m == nil {
		return nil
	}
	delete(st.members, gen)
	return m.Close()
}

// listenerFor is gen's member as its driver sees it.
func (e *listenerEntry) listenerFor(gen lifecycle.Gen) (proxyctl.Listener, error) {
	if e.steer == nil {
		return listenerOf(e.sock), nil
	}
	m, err := e.steer.memberFor(gen)
	if err != nil {
		return proxyctl.Listener{}, fmt.Errorf("listener %s: %w", e.sock.Addr(), err)
	}
	return proxyctl.Listener{Spec: e.sock.Spec(), Fd: m.FD(), Addr: e.sock.Addr(), Inode: m.Inode()}, nil
}

// setActive marks gen's member active in every steered group it has one
// in: new connections go to gen from now on.
func (ls *ListenerSet) setActive(gen lifecycle.Gen) error {
	var errs []error
	for _, k := range ls.order {
		e := ls.items[k]
		if e.steer == nil {
			continue
		}
		if m := e.steer.members[gen]; m != nil {
			errs = append(errs, m.SetActive())
		} else {
			// An address gen does not serve (removed from its config):
			// new connections there go nowhere, not to a draining
			// generation.
			errs = append(errs, e.steer.group.ClearActive())
		}
	}
	return errors.Join(errs...)
}

// handover describes the members for another baton (after the entry's own
// record): one record per generation's member, Fd borrowed.
func (st *steered) handover(sp fdpass.Spec) []ListenerHandover {
	var out []ListenerHandover
	for gen, m := range st.members {
		out = append(out, ListenerHandover{Spec: sp.String(), Inode: m.Inode(), MemberOf: gen, Fd: m.FD()})
	}
	slices.SortFunc(out, func(a, b ListenerHandover) int { return cmp.Compare(a.MemberOf, b.MemberOf) })
	return out
}

// close closes the group: every member, the anchor, the program and maps.
func (st *steered) close() error { return st.group.Close() }

// adoptSteered rebuilds a steered entry from an upgrade's records: the
// anchor (anchorFd) and each generation's member, taken from fds.
func (ls *ListenerSet) adoptSteered(sp fdpass.Spec, l ListenerHandover, anchorFd int, members []ListenerHandover, fds []int, gens []lifecycle.Gen) error {
	st, err := newSteered(sp, anchorFd, false, false)
	if err != nil {
		for _, m := range members {
			if fd := fdAt(fds, m.Fd); fd >= 0 {
				unix.Close(fd)
			}
		}
		return err
	}
	var errs []error
	for _, m := range members {
		fd := fdAt(fds, m.Fd)
		switch {
		case fd < 0:
			errs = append(errs, fmt.Errorf("generation %d's member: no descriptor", m.MemberOf))
			continue
		case m.Spec != l.Spec || st.members[m.MemberOf] != nil || !slices.Contains(gens, m.MemberOf):
			unix.Close(fd)
			errs = append(errs, fmt.Errorf("member of generation %d: another spec, listed twice, or of a generation not handed over", m.MemberOf))
			continue
		}
		errs = append(errs, st.adoptMember(m.MemberOf, fd))
	}
	if err := errors.Join(errs...); err != nil {
		return errors.Join(err, st.close())
	}
	return ls.addSteered(st, sp, l.Removed, l.Users, l.Where)
}

// addSteered puts a steered entry in the set.
func (ls *ListenerSet) addSteered(st *steered, sp fdpass.Spec, removed bool, users []lifecycle.Gen, where string) error {
	e, err := st.entry(sp)
	if err != nil {
		return err
	}
	k := listenerKey(sp.Key())
	if ls.items[k] != nil {
		return errors.Join(fmt.Errorf("listener %s given twice", sp.Addr), e.sock.Close(), st.close())
	}
	e.removed, e.where = removed, where
	for _, g := range users {
		e.users[g] = true
	}
	ls.order = append(ls.order, k)
	ls.items[k] = e
	return nil
}

// recoverSteered rebuilds a steered entry after a crash: a new anchor
// joins the group the generations' members still form (their program
// keeps steering meanwhile), and each recorded member is taken back from
// its generation by inode. found counts the members taken back.
func (ls *ListenerSet) recoverSteered(h *Handover, sp fdpass.Spec, recs []ListenerHandover, removed bool, users []lifecycle.Gen, where string, pfs ProcFS) (found int, err error) {
	st, err := newSteered(sp, -1, false, true)
	if err != nil {
		return 0, err
	}
	guessed := len(recs) == 0
	if guessed {
		// No record (the state file was lost): the members are the
		// unconnected UDP sockets on the address each generation holds.
		for gen, inode := range heldUDPMembers(h, sp, pfs) {
			recs = append(recs, ListenerHandover{Spec: sp.String(), Inode: inode, MemberOf: gen})
		}
	}
	for _, r := range recs {
		sock := takeBack(h, sp, r.Inode, pfs)
		if sock == nil {
			continue
		}
		fd, err := unix.FcntlInt(uintptr(sock.Fd()), unix.F_DUPFD_CLOEXEC, 0)
		_ = sock.Close()
		if err == nil && guessed {
			if rp, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); rp == 0 {
				// One socket the generations share (a baton without
				// steering bound it): recovered as such.
				unix.Close(fd)
				return 0, errors.Join(errSharedUDP, st.close())
			}
		}
		if err == nil {
			err = st.adoptMember(r.MemberOf, fd)
		}
		if err != nil {
			return 0, errors.Join(err, st.close())
		}
		found++
	}
	return found, ls.addSteered(st, sp, removed, users, where)
}

// steers reports whether gen holds a member of a steered group.
func (ls *ListenerSet) steers(gen lifecycle.Gen) bool {
	for _, e := range ls.items {
		if e.steer != nil && e.steer.members[gen] != nil {
			return true
		}
	}
	return false
}
