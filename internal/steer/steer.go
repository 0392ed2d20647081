// Package steer keeps a QUIC address's UDP sockets as a reuseport group
// whose members baton creates, one per generation, and steers each
// datagram to a member with an eBPF program baton owns:
//
//   - a datagram whose destination connection ID begins with the socket
//     cookie of a member goes to that member: the connection belongs to the
//     generation that chose that ID (nginx writes its listening socket's
//     SO_COOKIE into the first 8 bytes of every connection ID it issues);
//   - every other datagram, among them every client's first Initial, goes
//     to the member marked active: new connections reach the serving
//     generation only, never a draining one nor one not yet ready;
//   - while no member is active it goes to the group's sink, a member that
//     drops whatever it receives without a word (a client resends its
//     Initial; no ICMP error tells it to give up).
//
// So a draining generation keeps receiving its own connections' packets on
// its own socket until it exits, and a new generation receives nothing
// until baton marks it active. The group admits only sockets of baton's
// user with SO_REUSEPORT; the kernel refuses a member from another user.
package steer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

var memlock sync.Once

// MaxMembers bounds the members of one group: the generations holding one
// QUIC address at once (the active one and those draining).
const MaxMembers = 255

// noSlot is the active map's value while no member is active: members
// take slots from 1.
const noSlot = 0

// Group is one address's reuseport group, its program and maps. Its
// methods are safe for concurrent use.
type Group struct {
	addr netip.AddrPort
	opts Options

	mu       sync.Mutex
	prog     *ebpf.Program
	socks    *ebpf.Map // SOCKMAP: slot -> member (a socket may sit in several, unlike a REUSEPORT_SOCKARRAY: an adopting group fills its own)
	slots    *ebpf.Map // HASH: 8-byte cookie key -> slot
	active   *ebpf.Map // ARRAY of one: the active member's slot, or noSlot
	members  map[int]*Member
	current  *Member // the active member
	sink     *Member // receives, and drops, what no active member takes
	attached bool
	adopted  bool // members were adopted: attach only with an active member
	closed   bool
}

// Member is one socket of a group: bound, non-blocking, close-on-exec.
type Member struct {
	g      *Group
	fd     int
	slot   uint32
	cookie uint64
	inode  uint64
}

// FD is the member's descriptor, owned by the member.
func (m *Member) FD() int { return m.fd }

// Inode is the member's socket inode.
func (m *Member) Inode() uint64 { return m.inode }

// Cookie is the member's socket cookie (SO_COOKIE).
func (m *Member) Cookie() uint64 { return m.cookie }

// Options are the socket options of every member.
type Options struct {
	V6Only   bool // IPV6_V6ONLY, for an IPv6 address
	FreeBind bool // IP_FREEBIND / IPV6_FREEBIND
	// Alone, when set, is asked after an exclusive member's bind, before
	// the member joins the maps or the program is attached: an error (any
	// other socket on the address, such as another baton's group of the
	// same user, which SO_REUSEPORT lets in) undoes the bind.
	Alone func(fd int, addr netip.AddrPort) error
}

// NewGroup creates the program and maps for addr. Members are bound by
// Add; the program is attached to the group with the first one. Port 0
// takes the port the first member gets.
func NewGroup(addr netip.AddrPort, opts Options) (*Group, error) {
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones
	// ignore it, and there this does nothing.
	memlock.Do(func() { _ = rlimit.RemoveMemlock() })
	specs := []struct {
		what string
		spec ebpf.MapSpec
	}{
		{"socket array", ebpf.MapSpec{Name: "baton_socks", Type: ebpf.SockMap, KeySize: 4, ValueSize: 8, MaxEntries: MaxMembers + 1}},
		{"cookie map", ebpf.MapSpec{Name: "baton_slots", Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: MaxMembers}},
		{"active map", ebpf.MapSpec{Name: "baton_active", Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1}},
	}
	var maps []*ebpf.Map
	fail := func(what string, err error) (*Group, error) {
		for _, m := range maps {
			m.Close()
		}
		return nil, fmt.Errorf("steering for %s: %s: %w", addr, what, err)
	}
	for _, sp := range specs {
		m, err := ebpf.NewMap(&sp.spec)
		if err != nil {
			return fail(sp.what, err)
		}
		maps = append(maps, m)
	}
	socks, slots, active := maps[0], maps[1], maps[2]
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "baton_steer",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelect,
		Instructions: program(socks.FD(), slots.FD(), active.FD()),
		License:      "Apache-2.0",
	})
	if err != nil {
		return fail("load program", err)
	}
	return &Group{addr: addr, opts: opts, prog: prog, socks: socks, slots: slots, active: active, members: make(map[int]*Member)}, nil
}

// Add binds a new member with SO_REUSEPORT and SO_REUSEADDR (HAProxy
// binds its per-connection sockets to the address with SO_REUSEADDR) and
// registers it; the group's program is attached with the first member.
// With exclusive the member gets SO_REUSEADDR only once bound, so the bind
// fails if a socket without SO_REUSEPORT, or another user's, holds the
// address: the first member of a new group. A new member receives nothing
// until a datagram names its cookie or it is marked active.
func (g *Group) Add(exclusive bool) (*Member, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("steering group closed")
	}
	fd, err := g.bind(exclusive)
	if err != nil {
		return nil, fmt.Errorf("steering for %s: %w", g.addr, err)
	}
	if exclusive && g.opts.Alone != nil {
		if err := g.opts.Alone(fd, g.addr); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("steering for %s: %w", g.addr, err)
		}
	}
	m, err := g.register(fd)
	if err != nil {
		return nil, err
	}
	if !g.attached && !g.adopted {
		if err := g.attachLocked(); err != nil {
			g.closeLocked(m)
			return nil, err
		}
	}
	return m, nil
}

// Adopt registers fd, a UDP socket bound to the group's address with
// SO_REUSEPORT that baton created earlier (taken over at an upgrade or
// back from a generation after a restart); the member owns fd from then
// on, even on error. The group's program replaces the one attached before
// when a member is marked active: until then the earlier
// program keeps steering.
func (g *Group) Adopt(fd int) (*Member, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		unix.Close(fd)
		return nil, errors.New("steering group closed")
	}
	if err := g.checkMember(fd); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("steering for %s: adopt: %w", g.addr, err)
	}
	g.adopted = true
	return g.register(fd)
}

func (g *Group) checkMember(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return err
	}
	if typ != unix.SOCK_DGRAM {
		return errors.New("not a datagram socket")
	}
	if rp, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT); err != nil || rp == 0 {
		return errors.New("no SO_REUSEPORT: not a member of a reuseport group")
	}
	got, err := boundAddr(fd)
	if err != nil {
		return err
	}
	if g.addr.Port() == 0 && got.Addr() == g.addr.Addr() {
		g.addr = got
	}
	if got != g.addr {
		return fmt.Errorf("bound to %s", got)
	}
	return nil
}

func boundAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockname: %w", err)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), nil
	}
	return netip.AddrPort{}, errors.New("not an inet socket")
}

// DeferAttach keeps the group's program from being attached before a
// member is marked active (as for adopted members): a restarted baton's
// group joins the members the dead baton's program still steers.
func (g *Group) DeferAttach() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.adopted = true
}

// SetSink makes m the group's sink: it receives what no active member
// takes and drops it (a socket filter that accepts nothing), and no
// datagram reaches it by its cookie. baton's anchor is the sink.
func (m *Member) SetSink() error {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.members[m.fd] != m {
		return errors.New("steering: member closed")
	}
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	prog := unix.SockFprog{Len: uint16(len(drop)), Filter: &drop[0]}
	if err := unix.SetsockoptSockFprog(m.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
		return fmt.Errorf("steering for %s: sink filter: %w", g.addr, err)
	}
	if err := g.slots.Delete(cookieKey(m.cookie)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("steering for %s: sink cookie: %w", g.addr, err)
	}
	g.sink = m
	if g.current == nil {
		return g.active.Update(uint32(0), m.slot, ebpf.UpdateAny)
	}
	return nil
}

// ClearActive leaves no member active: what no cookie names goes to the
// sink. The program is attached (again).
func (g *Group) ClearActive() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.current = nil
	if err := g.active.Update(uint32(0), g.fallbackSlot(), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("steering for %s: clear active: %w", g.addr, err)
	}
	return g.attachLocked()
}

// fallbackSlot is the active map's value with no active member.
func (g *Group) fallbackSlot() uint32 {
	if g.sink != nil {
		return g.sink.slot
	}
	return noSlot
}

// Release closes the group's descriptors (members, program, maps) without
// touching the maps: another baton took the group over, and the program
// attached to it, with its maps, carries on until that baton attaches its
// own.
func (g *Group) Release() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	var errs []error
	for fd := range g.members {
		errs = append(errs, unix.Close(fd))
	}
	g.members, g.current, g.sink = map[int]*Member{}, nil, nil
	errs = append(errs, g.prog.Close(), g.socks.Close(), g.slots.Close(), g.active.Close())
	return errors.Join(errs...)
}

// attachLocked attaches the group's program to the reuseport group (through
// any member), replacing the one attached before, if any.
func (g *Group) attachLocked() error {
	for fd := range g.members {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, g.prog.FD()); err != nil {
			return fmt.Errorf("steering for %s: attach program: %w", g.addr, err)
		}
		g.attached = true
		return nil
	}
	return fmt.Errorf("steering for %s: attach program: no member", g.addr)
}

// register puts fd in a free slot and its cookie in the cookie map. On
// error fd is closed.
func (g *Group) register(fd int) (*Member, error) {
	fail := func(what string, err error) (*Member, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("steering for %s: %s: %w", g.addr, what, err)
	}
	slot, ok := g.freeSlot()
	if !ok {
		return fail("add member", fmt.Errorf("%d members already", MaxMembers))
	}
	m := &Member{g: g, fd: fd, slot: slot}
	var err error
	if m.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); err != nil {
		return fail("SO_COOKIE", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail("fstat", err)
	}
	m.inode = st.Ino
	if err := g.socks.Update(m.slot, uint64(fd), ebpf.UpdateAny); err != nil {
		return fail("socket array", err)
	}
	if err := g.slots.Update(cookieKey(m.cookie), m.slot, ebpf.UpdateAny); err != nil {
		_ = g.socks.Delete(m.slot)
		return fail("cookie map", err)
	}
	g.members[fd] = m
	return m, nil
}

func (g *Group) bind(exclusive bool) (int, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(g.addr.Port()), Addr: g.addr.Addr().As4()}
	if g.addr.Addr().Is6() && !g.addr.Addr().Is4In6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(g.addr.Port()), Addr: g.addr.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket: %w", err)
	}
	reuseAddr := func() error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			unix.Close(fd)
			return fmt.Errorf("setsockopt SO_REUSEADDR: %w", err)
		}
		return nil
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("setsockopt SO_REUSEPORT: %w", err)
	}
	if !exclusive {
		if err := reuseAddr(); err != nil {
			return -1, err
		}
	}
	set := func(level, opt, val int, name string) error {
		if err := unix.SetsockoptInt(fd, level, opt, val); err != nil {
			unix.Close(fd)
			return fmt.Errorf("setsockopt %s: %w", name, err)
		}
		return nil
	}
	switch {
	case family == unix.AF_INET6:
		v6only := 0
		if g.opts.V6Only {
			v6only = 1
		}
		err = set(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only, "IPV6_V6ONLY")
		if err == nil && g.opts.FreeBind {
			err = set(unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, 1, "IPV6_FREEBIND")
		}
	case g.opts.FreeBind:
		err = set(unix.IPPROTO_IP, unix.IP_FREEBIND, 1, "IP_FREEBIND")
	}
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
	}
	if exclusive {
		if err := reuseAddr(); err != nil {
			return -1, err
		}
	}
	if g.addr.Port() == 0 {
		got, err := boundAddr(fd)
		if err != nil {
			unix.Close(fd)
			return -1, err
		}
		g.addr = got
	}
	return fd, nil
}

func (g *Group) freeSlot() (uint32, bool) {
	used := make(map[uint32]bool, len(g.members))
	for _, m := range g.members {
		used[m.slot] = true
	}
	for s := uint32(noSlot + 1); s <= MaxMembers; s++ {
		if !used[s] {
			return s, true
		}
	}
	return 0, false
}

// SetActive makes m the member that receives every datagram not naming a
// member's cookie.
func (m *Member) SetActive() error {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.members[m.fd] != m {
		return errors.New("steering: member closed")
	}
	if err := g.active.Update(uint32(0), m.slot, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("steering for %s: mark active: %w", g.addr, err)
	}
	g.current = m
	// Attached again at every activation: adopted members get this
	// group's program, and one a proxy attached instead is replaced.
	return g.attachLocked()
}

// Close removes the member from the maps and closes baton's descriptor; the
// socket leaves the group once every process holding it has closed it.
// Closing the active member leaves datagrams without a named cookie to the
// kernel's own choice among the rest until another is marked active.
func (m *Member) Close() error {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closeLocked(m)
}

func (g *Group) closeLocked(m *Member) error {
	if g.members[m.fd] != m {
		return nil
	}
	delete(g.members, m.fd)
	if g.sink == m {
		g.sink = nil
	}
	if g.current == m || g.current == nil {
		g.current = nil
		_ = g.active.Update(uint32(0), g.fallbackSlot(), ebpf.UpdateAny)
	}
	_ = g.slots.Delete(cookieKey(m.cookie))
	_ = g.socks.Delete(m.slot)
	return unix.Close(m.fd)
}

// Close closes every member, the program and the maps.
func (g *Group) Close() error {
	g.mu.Lock()
	g.closed = true // no Add from now on
	members := make([]*Member, 0, len(g.members))
	for _, m := range g.members {
		members = append(members, m)
	}
	g.mu.Unlock()
	var errs []error
	for _, m := range members {
		errs = append(errs, m.Close())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	errs = append(errs, g.prog.Close(), g.socks.Close(), g.slots.Close(), g.active.Close())
	return errors.Join(errs...)
}

// cookieKey is the cookie map's key for a cookie: its 8 bytes in network
// order, as they appear at the start of a connection ID.
func cookieKey(c uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, c)
}

// Offsets in the datagram as the program sees it: the data begins at the
// UDP header. QUIC (RFC 9000, section 17): the first byte's high bit says
// long header; a long header's destination connection ID length is at
// byte 5 and the ID follows it; a short header's ID starts at byte 1.
const (
	udpHeader    = 8
	longHeader   = 0x80
	longDCIDLen  = udpHeader + 5
	longDCID     = udpHeader + 6
	shortDCID    = udpHeader + 1
	cookieLength = 8
	skPass       = 1
)

// program is the SK_REUSEPORT program: the member whose cookie begins the
// destination connection ID, else the active member (the sink while none
// is). It never returns SK_DROP: for UDP that makes the kernel answer with
// an ICMP port unreachable, and a client gives up. If no selection can be
// made (no slot, a failed select), the kernel's hash picks a member.
func program(socksFD, slotsFD, activeFD int) asm.Instructions {
	const (
		ctx    = asm.R6
		offset = asm.R8
		// stack: the cookie key at -16, the slot at -4, a scratch byte at -24
		keyOff  = -16
		slotOff = -4
		byteOff = -24
	)
	loadBytes := func(off asm.Register, dst int16, n int32) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, ctx),
			asm.Mov.Reg(asm.R2, off),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, int32(dst)),
			asm.Mov.Imm(asm.R4, n),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, "active"),
		}
	}
	insns := asm.Instructions{asm.Mov.Reg(ctx, asm.R1)}
	insns = append(insns, asm.Mov.Imm(offset, udpHeader))
	insns = append(insns, loadBytes(offset, byteOff, 1)...)
	insns = append(insns,
		asm.LoadMem(asm.R7, asm.RFP, byteOff, asm.Byte),
		asm.Mov.Imm(offset, shortDCID),
		asm.And.Imm(asm.R7, longHeader),
		asm.JEq.Imm(asm.R7, 0, "key"),
		asm.Mov.Imm(offset, longDCIDLen),
	)
	insns = append(insns, loadBytes(offset, byteOff, 1)...)
	insns = append(insns,
		asm.LoadMem(asm.R7, asm.RFP, byteOff, asm.Byte),
		asm.JLT.Imm(asm.R7, cookieLength, "active"),
		asm.Mov.Imm(offset, longDCID),
	)
	key := loadBytes(offset, keyOff, cookieLength)
	key[0] = key[0].WithSymbol("key")
	insns = append(insns, key...)
	insns = append(insns,
		asm.LoadMapPtr(asm.R1, slotsFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, keyOff),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "active"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
		asm.StoreMem(asm.RFP, slotOff, asm.R7, asm.Word),
		asm.Mov.Reg(asm.R1, ctx),
		asm.LoadMapPtr(asm.R2, socksFD),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, slotOff),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.StoreImm(asm.RFP, slotOff, 0, asm.Word).WithSymbol("active"),
		asm.LoadMapPtr(asm.R1, activeFD),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, slotOff),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "pass"),
		asm.LoadMem(asm.R7, asm.R0, 0, asm.Word),
		asm.JEq.Imm(asm.R7, noSlot, "pass"),
		asm.StoreMem(asm.RFP, slotOff, asm.R7, asm.Word),
		asm.Mov.Reg(asm.R1, ctx),
		asm.LoadMapPtr(asm.R2, socksFD),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, slotOff),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnSkSelectReuseport.Call(),
		asm.Mov.Imm(asm.R0, skPass).WithSymbol("pass"),
		asm.Return(),
	)
	return insns
}
