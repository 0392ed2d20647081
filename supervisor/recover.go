package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Recover works out what a baton starting on a control path takes over
// from a previous baton that died: the generations found in the run
// directory by their markers (see genmarker_linux.go), with what the state
// file at statePath says about them when it can be trusted and lists the
// same processes. Only a running writer stops baton from starting:
//
//   - a state file whose writer still runs (same pid and start time: a
//     baton that lost its lock file) makes Recover adopt nothing and fail
//     with errControlInUse naming that pid: two batons must not supervise
//     the same generations;
//   - a state file that cannot be trusted (not baton's, too large,
//     truncated, another format, another run directory, inconsistent) is
//     renamed to PATH.bad and reported at ERROR; the generations are then
//     recognised by their markers alone: the newest one is active, the
//     others are told to drain;
//   - a generation the state file lists that is not proven (no marker,
//     another process, a directory outside the run directory) is reported
//     by pid at WARN and never signalled, and its directory never removed;
//   - a generation found by its marker that the state file does not list
//     (one starting when baton died) is adopted and told to drain.
//
// It returns nil when nothing is left to adopt.
func Recover(statePath string, rd *RunDir, log *zap.Logger) (*Handover, error) {
	h, refused, err := trustedState(statePath, rd, log)
	if err != nil {
		return nil, err
	}
	leaders := rd.findLeaders()
	found := maps.Clone(leaders)
	for _, r := range refused {
		log.Warn("state file lists a generation baton does not adopt: it is not signalled and its directory is not removed; stop it yourself if it is a leftover",
			zap.Int("gen", int(r.Gen)), zap.Int("pid", r.Pid), zap.String("reason", r.Reason))
	}
	out := &Handover{ControlFd: -1, LockFd: -1, InitFd: -1, MetricsFd: -1}
	if h != nil {
		*out = *h
		out.Gens = nil
		for _, g := range h.Gens {
			if l, ok := leaders[g.Gen]; ok && l.Pid == g.Pid && l.Ticks == g.StartTicks {
				out.Gens = append(out.Gens, g)
				delete(leaders, g.Gen)
				continue
			}
			reportUnproven(log, g, leaders)
		}
	}
	for _, gen := range sortedGens(leaders) {
		l := leaders[gen]
		log.Warn("generation found by its marker, not in a trusted state file: adopting it (the newest is active if no listed generation is; the others are told to drain)",
			zap.Int("gen", int(gen)), zap.Int("pid", l.Pid))
		out.Gens = append(out.Gens, GenHandover{Gen: gen, Pid: l.Pid, StartTicks: l.Ticks, Dir: rd.genDir(gen), Pidfd: -1, Output: -1})
	}
	if len(out.Gens) == 0 {
		return nil, nil
	}
	if out.Tracking == nil {
		out.Tracking = markerTracking(found)
	}
	out.procs = recoveredProcs(out, rd)
	for gen := range rd.genDirs() {
		out.Machine.LastGen = max(out.Machine.LastGen, gen) // new generations never reuse a directory
	}
	return out, nil
}

// trustedState reads and validates the state file; a file that cannot be
// trusted is moved aside and reported (nil returned). A trusted file whose
// writer still runs is an error (errControlInUse).
func trustedState(path string, rd *RunDir, log *zap.Logger) (*Handover, []genRefusal, error) {
	sf, err := readStateFile(path)
	if sf == nil && err == nil {
		return nil, nil, nil
	}
	var h *Handover
	var refused []genRefusal
	if err == nil {
		h, refused, err = validateState(sf, rd.Path)
	}
	if err == nil {
		if ticks, terr := proc.StartTicks(sf.BatonPid); terr == nil && ticks == sf.BatonStartTicks {
			return nil, nil, fmt.Errorf("%w: the baton that wrote the state file %s (pid %d) still runs: not adopting its generations (two batons must not supervise them); stop it first", errControlInUse, path, sf.BatonPid)
		}
		return h, refused, nil
	}
	bad := path + ".bad"
	moveErr := os.Rename(path, bad)
	log.Error("state file not trusted: moved aside; the generations are recognised by their markers alone",
		zap.String("path", path), zap.String("moved_to", bad), zap.NamedError("move", moveErr), zap.Error(err))
	for _, g := range listedPids(path, bad) {
		refused = append(refused, genRefusal{Gen: g.Gen, Pid: g.Pid, Reason: "listed in an untrusted state file"})
	}
	return nil, refused, nil
}

// listedPids reads, for the report only, the generations an untrusted
// state file names (when it parses at all).
func listedPids(paths ...string) []GenHandover {
	for _, p := range paths {
		data, err := readOwnFile(p, stateLimit)
		if err != nil {
			continue
		}
		var sf struct {
			Gens []GenHandover `json:"gens"`
		}
		if json.Unmarshal(data, &sf) == nil {
			return sf.Gens
		}
		return nil
	}
	return nil
}

// reportUnproven logs a generation the state file lists whose process is
// not proven to be that generation's leader.
func reportUnproven(log *zap.Logger, g GenHandover, leaders map[lifecycle.Gen]leader) {
	ticks, err := proc.StartTicks(g.Pid)
	if err != nil || ticks != g.StartTicks {
		log.Info("generation listed in the state file has exited", zap.Int("gen", int(g.Gen)), zap.Int("pid", g.Pid))
		return
	}
	reason := fmt.Sprintf("pid %d does not carry generation %d's marker", g.Pid, g.Gen)
	if l, ok := leaders[g.Gen]; ok {
		reason = fmt.Sprintf("generation %d's leader is pid %d", g.Gen, l.Pid)
	}
	log.Warn("state file lists a process baton cannot prove it started: not adopted, not signalled; stop it yourself if it is a leftover",
		zap.Int("gen", int(g.Gen)), zap.Int("pid", g.Pid), zap.String("reason", reason))
}

func sortedGens(m map[lifecycle.Gen]leader) []lifecycle.Gen {
	out := make([]lifecycle.Gen, 0, len(m))
	for g := range m {
		out = append(out, g)
	}
	slices.Sort(out)
	return out
}

// removeIfExists removes path; a missing file is no error.
func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// RecoverListeners builds the listener set of a baton restarted after a
// crash: each spec's socket is taken back (pidfd_getfd) from a live process
// of a generation h lists (proven by Recover), so the same socket carries
// on: the socket the state file recorded for it, else a listening TCP
// socket bound to its address that those processes hold. A spec nobody
// holds any more is bound anew. found counts the sockets taken back. With
// specs nil (the listeners come from the proxy's configuration) the
// recorded listeners are recovered with their users and removed flags (a
// removed one nobody holds any more is dropped); without a record, the
// listening TCP sockets the generations hold.
func RecoverListeners(h *Handover, specs []fdpass.Spec, pfs ProcFS) (ls *ListenerSet, found int, err error) {
	recorded := map[string]ListenerHandover{}
	members := map[string][]ListenerHandover{}
	fromConfig := specs == nil
	for _, l := range h.Listeners {
		if sp, err := fdpass.ParseSpec(l.Spec); err == nil {
			if l.MemberOf != 0 {
				members[sp.Key()] = append(members[sp.Key()], l)
				continue
			}
			recorded[sp.Key()] = l
			if fromConfig {
				specs = append(specs, sp)
			}
		}
	}
	live := map[lifecycle.Gen]bool{}
	var all []lifecycle.Gen
	for _, g := range h.Gens {
		live[g.Gen] = true
		all = append(all, g.Gen)
	}
	if fromConfig && len(h.Listeners) == 0 {
		specs = append(heldTCPSpecs(h, pfs), heldUDPSpecs(h, pfs)...)
	}
	ls = &ListenerSet{items: map[listenerKey]*listenerEntry{}}
	for _, sp := range specs {
		rec, ok := recorded[sp.Key()]
		users, removed := all, false
		if fromConfig && ok {
			users, removed = nil, rec.Removed
			for _, g := range rec.Users {
				if live[g] {
					users = append(users, g)
				}
			}
		}
		// A UDP address recorded as a steered group (or not recorded) is
		// recovered as one; one recorded as a shared socket (a baton
		// without steering) is taken back as that socket, like TCP.
		if !sp.IsStream() && sp.Scheme != fdpass.Unix && (!ok || rec.Steered) && steeringRefused() == nil {
			n, err := ls.recoverSteered(h, sp, members[sp.Key()], removed, users, rec.Where, pfs)
			var refused *steeringError
			switch {
			case errors.As(err, &refused):
				steeringState.Lock()
				steeringState.refused = refused.err
				steeringState.Unlock()
			case errors.Is(err, errSharedUDP):
				// taken back below, as one socket
			case err != nil:
				return nil, 0, errors.Join(explainBusy(sp, err), ls.CloseAll())
			default:
				found += n
				continue
			}
		}
		var sock *fdpass.Socket
		if ok {
			sock = takeBack(h, sp, rec.Inode, pfs)
		}
		if sock == nil {
			sock = takeBackByAddr(h, sp, pfs)
		}
		switch {
		case sock != nil:
			found++
		case fromConfig && removed:
			continue // nobody holds it and the active config does not want it
		default:
			if sock, err = fdpass.Listen(sp); err != nil {
				return nil, 0, errors.Join(explainBusy(sp, err), ls.CloseAll())
			}
		}
		ls.add(sock, removed, users, rec.Where)
	}
	return ls, found, nil
}

// takeBack finds the socket with this inode in a listed generation's
// processes and duplicates it into baton.
func takeBack(h *Handover, sp fdpass.Spec, inode uint64, pfs ProcFS) *fdpass.Socket {
	for _, g := range h.Gens {
		pidfd, err := proc.OpenPidfd(g.Pid, g.StartTicks)
		if err != nil {
			continue
		}
		unix.Close(pidfd)
		pids, _ := pfs.Members(h.genProcs(g))
		for _, pid := range pids {
			fdnum := proc.FindSocketFd(pid, inode)
			if fdnum < 0 {
				continue
			}
			pfd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			fd, err := proc.TakeFd(pfd, fdnum)
			unix.Close(pfd)
			if err != nil {
				continue
			}
			if sock, err := fdpass.Adopt(sp, fd); err == nil && sock.Inode() == inode {
				return sock
			} else if err == nil {
				sock.Close()
			}
		}
	}
	return nil
}

// takeBackByAddr takes back a listening TCP socket, or an unconnected UDP
// one, bound to sp's address that a listed generation's process holds (no
// inode recorded for it).
func takeBackByAddr(h *Handover, sp fdpass.Spec, pfs ProcFS) *fdpass.Socket {
	if sp.Scheme == fdpass.Unix || len(h.Gens) == 0 {
		return nil
	}
	if !sp.IsStream() {
		for _, inode := range heldUDPMembers(h, sp, pfs) {
			if sock := takeBack(h, sp, inode, pfs); sock != nil {
				return sock
			}
		}
		return nil
	}
	listening, err := fdpass.ListeningTCP()
	if err != nil {
		return nil
	}
	for _, l := range listening {
		if l.Addr.String() != sp.Addr {
			continue
		}
		if sock := takeBack(h, sp, l.Inode, pfs); sock != nil {
			return sock
		}
	}
	return nil
}

// heldTCPSpecs lists the addresses of the listening TCP sockets the
// generations of h hold, as specs.
func heldTCPSpecs(h *Handover, pfs ProcFS) []fdpass.Spec {
	listening, err := fdpass.ListeningTCP()
	if err != nil {
		return nil
	}
	return heldSpecs(h, pfs, "tcp", listening)
}

// heldUDPSpecs lists the addresses of the unconnected UDP sockets the
// generations of h hold (their steered members, or a shared socket), as
// specs.
func heldUDPSpecs(h *Handover, pfs ProcFS) []fdpass.Spec {
	socks, err := fdpass.DiagUDP(1 << fdpass.TCPClose)
	if err != nil {
		return nil
	}
	return heldSpecs(h, pfs, "udp", socks)
}

func heldSpecs(h *Handover, pfs ProcFS, scheme string, socks []fdpass.ListenInfo) []fdpass.Spec {
	byInode := map[uint64]string{}
	for _, l := range socks {
		byInode[l.Inode] = l.Addr.String()
	}
	seen := map[string]bool{}
	var out []fdpass.Spec
	for _, g := range h.Gens {
		for inode := range h.socketInodes(g, pfs) {
			addr, ok := byInode[inode]
			if !ok || seen[addr] {
				continue
			}
			if sp, err := fdpass.ParseSpec(scheme + "://" + addr); err == nil {
				seen[addr] = true
				out = append(out, sp)
			}
		}
	}
	slices.SortFunc(out, func(a, b fdpass.Spec) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

// heldUDPMembers finds, without a record, the unconnected UDP socket bound
// to sp's address that each generation of h holds: its member (or the
// shared socket), by generation.
func heldUDPMembers(h *Handover, sp fdpass.Spec, pfs ProcFS) map[lifecycle.Gen]uint64 {
	socks, err := fdpass.DiagUDP(1 << fdpass.TCPClose)
	if err != nil {
		return nil
	}
	onAddr := map[uint64]bool{}
	for _, s := range socks {
		if s.Addr.String() == sp.Addr {
			onAddr[s.Inode] = true
		}
	}
	out := map[lifecycle.Gen]uint64{}
	for _, g := range h.Gens {
		for inode := range h.socketInodes(g, pfs) {
			if onAddr[inode] {
				out[g.Gen] = inode
			}
		}
	}
	return out
}

// socketInodes is the union of the socket inodes g's processes hold.
func (h *Handover) socketInodes(g GenHandover, pfs ProcFS) map[uint64]bool {
	out := map[uint64]bool{}
	pids, _ := pfs.Members(h.genProcs(g))
	for _, pid := range pids {
		inodes, err := pfs.SocketInodes(pid)
		if err != nil {
			continue
		}
		for inode := range inodes {
			out[inode] = true
		}
	}
	return out
}
