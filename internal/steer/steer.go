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
//     generation only, never a draining one nor one not yet ready.
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
	"golang.org/x/sys/unix"
)

// MaxMembers bounds the members of one group: the generations holding one
// QUIC address at once (the active one and those draining).
const MaxMembers = 255

// noSlot is the active map's value while no member is active: slot 0 of
// the socket array is never used (a socket may sit in one slot only).
const noSlot = 0

// Group is one address's reuseport group, its program and maps. Its
// methods are safe for concurrent use.
type Group struct {
	addr netip.AddrPort

	mu      sync.Mutex
	prog    *ebpf.Program
	socks   *ebpf.Map // REUSEPORT_SOCKARRAY: slot -> member
	slots   *ebpf.Map // HASH: 8-byte cookie key -> slot
	active  *ebpf.Map // ARRAY of one: the active member's slot, or noSlot
	members map[int]*Member
	current *Member // the active member
	closed  bool
}

// Member is one socket of a group: bound, non-blocking, close-on-exec.
type Member struct {
	g      *Group
	fd     int
	slot   uint32
	cookie uint64
}

// FD is the member's descriptor, owned by the member.
func (m *Member) FD() int { return m.fd }

// Cookie is the member's socket cookie (SO_COOKIE).
func (m *Member) Cookie() uint64 { return m.cookie }

// NewGroup creates the program and maps for addr. Members are bound by
// Add; the program is attached to the group with the first one.
func NewGroup(addr netip.AddrPort) (*Group, error) {
	socks, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "baton_socks",
		Type:       ebpf.ReusePortSockArray,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: MaxMembers + 1,
	})
	if err != nil {
		return nil, fmt.Errorf("steering for %s: socket array: %w", addr, err)
	}
	slots, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "baton_slots",
		Type:       ebpf.Hash,
		KeySize:    8,
		ValueSize:  4,
		MaxEntries: MaxMembers,
	})
	if err != nil {
		socks.Close()
		return nil, fmt.Errorf("steering for %s: cookie map: %w", addr, err)
	}
	active, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "baton_active",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: 1,
	})
	if err != nil {
		socks.Close()
		slots.Close()
		return nil, fmt.Errorf("steering for %s: active map: %w", addr, err)
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "baton_steer",
		Type:         ebpf.SkReuseport,
		AttachType:   ebpf.AttachSkReuseportSelect,
		Instructions: program(socks.FD(), slots.FD(), active.FD()),
		License:      "Apache-2.0",
	})
	if err != nil {
		socks.Close()
		slots.Close()
		active.Close()
		return nil, fmt.Errorf("steering for %s: load program: %w", addr, err)
	}
	return &Group{addr: addr, prog: prog, socks: socks, slots: slots, active: active, members: make(map[int]*Member)}, nil
}

// Add binds a new member: SO_REUSEPORT and SO_REUSEADDR (HAProxy binds
// its per-connection sockets to the address with SO_REUSEADDR), then
// registers its cookie. It receives nothing until a datagram names its
// cookie or it is marked active.
func (g *Group) Add() (*Member, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil, errors.New("steering group closed")
	}
	slot, ok := g.freeSlot()
	if !ok {
		return nil, fmt.Errorf("steering for %s: %d members already", g.addr, MaxMembers)
	}
	fd, err := g.bind()
	if err != nil {
		return nil, fmt.Errorf("steering for %s: %w", g.addr, err)
	}
	m := &Member{g: g, fd: fd, slot: slot}
	fail := func(what string, err error) (*Member, error) {
		_ = g.slots.Delete(cookieKey(m.cookie))
		_ = g.socks.Delete(m.slot)
		unix.Close(fd)
		return nil, fmt.Errorf("steering for %s: %s: %w", g.addr, what, err)
	}
	if m.cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE); err != nil {
		return fail("SO_COOKIE", err)
	}
	if len(g.members) == 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, g.prog.FD()); err != nil {
			return fail("attach program", err)
		}
	}
	if err := g.socks.Update(m.slot, uint64(fd), ebpf.UpdateAny); err != nil {
		return fail("socket array", err)
	}
	if err := g.slots.Update(cookieKey(m.cookie), m.slot, ebpf.UpdateAny); err != nil {
		return fail("cookie map", err)
	}
	g.members[fd] = m
	return m, nil
}

func (g *Group) bind() (int, error) {
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
	for _, opt := range []int{unix.SO_REUSEPORT, unix.SO_REUSEADDR} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("setsockopt: %w", err)
		}
	}
	if family == unix.AF_INET6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("setsockopt IPV6_V6ONLY: %w", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind: %w", err)
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
	return nil
}

// Close removes the member from the maps and closes baton's descriptor; the
// socket leaves the group once every process holding it has closed it.
// Closing the active member leaves datagrams without a named cookie to the
// kernel's own choice among the rest until another is marked active.
func (m *Member) Close() error {
	g := m.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.members[m.fd] != m {
		return nil
	}
	delete(g.members, m.fd)
	if g.current == m {
		_ = g.active.Update(uint32(0), uint32(noSlot), ebpf.UpdateAny)
		g.current = nil
	}
	_ = g.slots.Delete(cookieKey(m.cookie))
	_ = g.socks.Delete(m.slot)
	return unix.Close(m.fd)
}

// Close closes every member, the program and the maps.
func (g *Group) Close() error {
	g.mu.Lock()
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
	g.closed = true
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
// destination connection ID, else the active member. If neither can be
// selected (no active member yet), the kernel's hash decides.
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
