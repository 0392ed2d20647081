package supervisor

// Tracking: which processes belong to a generation. Every process a
// generation spawns counts until it exits, also one that leaves its process
// group or session (a daemon: setsid, double fork): for "holds the socket",
// readiness, drain, the deadlines and stop. Two mechanisms, chosen once per
// baton (docs/design.md, "Tracking a generation's processes"):
//
//   - cgroup v2, where baton may create one: each generation starts in its
//     own cgroup (cgroup_linux.go); membership is cgroup.procs, the kill at
//     a deadline cgroup.kill.
//   - the fallback: the generation's process group, the tree below its
//     leader, and the orphans re-parented to baton (the subreaper) whose
//     environment carries the generation's marker, BATON_GENERATION.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// strayWait bounds the wait at exit for the processes killed then.
const strayWait = 2 * time.Second

// markerVar is the environment variable that names a process's
// generation: TRACKID.GEN:MAC (RunDir.markerValue).
const markerVar = proc.MarkerVar

// trackingHandover is what a next baton (upgrade) or a restarted one (state
// file) needs to keep tracking the generations: the tracking ID in their
// markers and the cgroup subtree ("" without one). Both are checked before
// use (validTrackID, cgroupTree.adopt).
type trackingHandover struct {
	ID     string `json:"id"`
	Cgroup string `json:"cgroup,omitempty"`
}

// genTrack is how a generation's processes are found, fixed when it starts
// (or is adopted).
type genTrack struct {
	cgroup string
	marker string
	reaper int
}

// newTrackID names this supervisor's markers and cgroup subtree: baton's
// pid and start time, unique on the host until reboot, and 32 random bits
// (several supervisors in one process: tests).
func newTrackID() string {
	ticks, _ := proc.StartTicks(os.Getpid())
	var r [4]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%d-%d-%s", os.Getpid(), ticks, hex.EncodeToString(r[:]))
}

// validTrackID accepts exactly PID-STARTTIME-RANDOM (decimal, decimal, 8
// lowercase hex digits).
func validTrackID(id string) bool {
	f := strings.Split(id, "-")
	return len(f) == 3 && isDigits(f[0], "0123456789", 10) && isDigits(f[1], "0123456789", 20) &&
		len(f[2]) == 8 && isDigits(f[2], "0123456789abcdef", 8)
}

// isDigits reports whether s is 1 to max characters of digits.
func isDigits(s, digits string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune(digits, c) {
			return false
		}
	}
	return true
}

// marker is gen's BATON_GENERATION value.
func (s *Supervisor) marker(gen lifecycle.Gen) string {
	return s.run.markerValue(s.trackID, gen)
}

// procs names rt's processes now.
func (rt *genRuntime) procs() proc.GenProcs {
	g := proc.GenProcs{Pgid: rt.proc.Pid(), Cgroup: rt.track.cgroup, Marker: rt.track.marker, Reaper: rt.track.reaper}
	select {
	case <-rt.proc.Done():
	default:
		g.Leader = g.Pgid
	}
	return g
}

// startCgroup creates gen's cgroup and returns it with a descriptor for
// CLONE_INTO_CGROUP (the caller closes it); ("", -1) when the generation
// starts without one. The first call logs which mechanism this baton uses.
func (s *Supervisor) startCgroup(rt *genRuntime) (string, int) {
	dir, fd, first, err := s.cgroups.create(rt.gen)
	switch {
	case first && err != nil:
		s.log.Info("tracking generations without cgroup v2: by process group, process tree and environment marker", zap.String("reason", err.Error()))
	case first:
		s.log.Info("tracking generations with cgroup v2", zap.String("cgroup", s.cgroups.dir), zap.Strings("swept", s.cgroups.swept))
	case err != nil && !errors.Is(err, s.cgroups.off):
		rt.log.Warn("generation starts without a cgroup: tracked by process group, tree and marker", zap.Error(err))
	}
	if err != nil {
		return "", -1
	}
	return dir, fd
}

// members lists rt's live processes (empty on a read error).
func (s *Supervisor) members(rt *genRuntime) []int {
	pids, _ := s.procfs.Members(rt.procs())
	return pids
}

// alive reports whether any process of rt lives (zombies do not count:
// after an upgrade the generations' zombies belong to whoever inherited
// them, which may reap them late). A read error counts as alive.
func (s *Supervisor) alive(rt *genRuntime) bool {
	if rt.track.cgroup != "" {
		if populated, err := cgroupPopulated(rt.track.cgroup); err == nil {
			return populated
		}
	}
	g := rt.procs()
	if pids, err := s.procfs.Members(g); err != nil || len(pids) > 0 {
		return true
	}
	if !proc.GroupAlive(g.Pgid) {
		return false
	}
	pids, err := s.procfs.ScanMembers(g)
	return err != nil || len(pids) > 0
}

// killGeneration SIGKILLs every process of rt: the cgroup at once
// (cgroup.kill), else its process group and each member.
func (s *Supervisor) killGeneration(rt *genRuntime) error {
	if rt.track.cgroup != "" {
		err := cgroupKill(rt.track.cgroup)
		if err == nil {
			return nil
		}
		if !errors.Is(err, errNoCgroupKill) {
			rt.log.Warn("cgroup.kill failed: killing each process", zap.Error(err))
		}
	}
	err := rt.proc.SignalGroup(unix.SIGKILL)
	if errors.Is(err, proc.ErrDone) {
		err = nil
	}
	s.signalEach(s.members(rt), unix.SIGKILL, 0)
	return err
}

// signalEscapees sends sig to rt's processes outside its process group:
// the leader cannot relay a hard stop to a daemon that left it.
func (s *Supervisor) signalEscapees(rt *genRuntime, sig unix.Signal) {
	s.signalEach(s.members(rt), sig, rt.proc.Pid())
}

// signalEach signals every pid not in process group skipGroup (0: none
// skipped). Errors are those of processes that exited meanwhile.
func (s *Supervisor) signalEach(pids []int, sig unix.Signal, skipGroup int) {
	for _, pid := range pids {
		if skipGroup > 0 {
			if pg, err := unix.Getpgid(pid); err != nil || pg == skipGroup {
				continue
			}
		}
		_ = unix.Kill(pid, sig)
	}
}

// owner tells which pids baton's starter registered (generation leaders,
// checks, probes).
type owner interface {
	Owns(pid int) bool
}

// strays lists baton's children that belong to no live generation and
// that baton did not start: orphans whose generation cannot be told (their
// marker removed, their cgroup left). Runs on the loop.
func (s *Supervisor) strays() []int {
	o, ok := s.starter.(owner)
	if !ok {
		return nil
	}
	children := proc.Children(os.Getpid())
	if len(children) == 0 {
		return nil
	}
	known := map[int]bool{}
	for _, rt := range s.gens {
		if rt.proc != nil {
			for _, pid := range s.members(rt) {
				known[pid] = true
			}
		}
	}
	var out []int
	for _, pid := range children {
		if known[pid] || o.Owns(pid) {
			continue
		}
		if st, err := proc.ReadStat(pid); err == nil && st.State != 'Z' && st.PPid == os.Getpid() {
			out = append(out, pid)
		}
	}
	return out
}

// reportStrays logs, once per pid, the orphans no generation claims; they
// are killed at stop. Runs on the loop.
func (s *Supervisor) reportStrays() {
	var fresh []int
	for _, pid := range s.strays() {
		if !s.reported[pid] {
			s.reported[pid] = true
			fresh = append(fresh, pid)
		}
	}
	if len(fresh) > 0 {
		s.log.Warn("processes of no generation re-parented to baton (their generation cannot be told): they are killed at stop", zap.Ints("pids", fresh))
	}
}

// endTracking runs once every generation is gone (stop, not a handover):
// it kills the orphans no generation claims and what is left in cgroups of
// generations not adopted, waits for them (bounded), and removes baton's
// cgroup subtree.
func (s *Supervisor) endTracking() {
	if s.handedOver.Load() {
		return
	}
	strays := s.strays()
	if len(strays) > 0 {
		s.log.Warn("killing processes of no generation", zap.Ints("pids", strays))
		s.signalEach(strays, unix.SIGKILL, 0)
	}
	left := s.cgroups.leftovers()
	for _, dir := range left {
		if pids, _ := proc.CgroupProcs(dir); len(pids) > 0 {
			s.log.Warn("killing what is left in a cgroup of no live generation", zap.String("cgroup", dir), zap.Ints("pids", pids))
			if err := cgroupKill(dir); err != nil {
				s.signalEach(pids, unix.SIGKILL, 0)
			}
		}
	}
	gone := func() bool {
		for _, pid := range strays {
			if st, err := proc.ReadStat(pid); err == nil && st.State != 'Z' {
				return false
			}
		}
		for _, dir := range left {
			if populated, err := cgroupPopulated(dir); err == nil && populated {
				return false
			}
		}
		return true
	}
	if len(strays)+len(left) > 0 {
		ctx, cancel := context.WithTimeout(s.loopCtx, strayWait)
		if !s.pollUntil(ctx, gone) {
			s.log.Warn("processes of no generation still alive at exit")
		}
		cancel()
	}
	var errs []error
	for _, dir := range left {
		errs = append(errs, s.cgroups.remove(dir))
	}
	errs = append(errs, s.cgroups.close())
	if err := errors.Join(errs...); err != nil {
		s.log.Warn("remove cgroups", zap.Error(err))
	}
}

// endTrackingOnce runs endTracking the first time it is called.
func (s *Supervisor) endTrackingOnce() {
	if !s.trackingEnded {
		s.trackingEnded = true
		s.endTracking()
	}
}

// adoptTracking carries on the previous baton's tracking (before its
// generations are adopted): its tracking ID, which the adopted generations'
// markers hold and later ones will (generation numbers never repeat), and
// its cgroup subtree, when it is where this baton would have created it
// (cgroupTree.adopt): new generations then join it, and it is removed at
// exit. It returns the previous ID, "" when unknown or malformed.
func (s *Supervisor) adoptTracking(t *trackingHandover) string {
	if t == nil || !validTrackID(t.ID) {
		if t != nil {
			s.log.Warn("tracking ID of the previous baton refused: its generations are tracked by process group and tree", zap.String("id", t.ID))
		}
		return ""
	}
	s.trackID, s.cgroups.id = t.ID, t.ID
	if t.Cgroup == "" {
		return t.ID
	}
	if err := s.cgroups.adopt(t.Cgroup, t.ID); err != nil {
		s.log.Warn("cgroup of the previous baton not adopted: its generations are tracked by process group, tree and marker",
			zap.String("cgroup", t.Cgroup), zap.Error(err))
	}
	return t.ID
}

// adoptedTrack is how an adopted generation's processes are found: its
// cgroup in the adopted subtree, its marker, and as reaper its leader's
// parent now (the subreaper that inherited it: baton's init, or PID 1),
// where its orphans go too.
func (s *Supervisor) adoptedTrack(gh GenHandover, prevID string) genTrack {
	return adoptedTrack(s.cgroups, s.run, gh, prevID)
}

func adoptedTrack(cg *cgroupTree, rd *RunDir, gh GenHandover, prevID string) genTrack {
	t := genTrack{cgroup: cg.adopted(gh.Gen)}
	if prevID != "" {
		t.marker = rd.markerValue(prevID, gh.Gen)
	}
	if st, err := proc.ReadStat(gh.Pid); err == nil {
		t.reaper = st.PPid
	}
	return t
}

// markerTracking is the tracking of a previous baton that left no trusted
// state file, from the tracking ID in its generations' proven markers (the
// newest generation's), else from the cgroup a leader is in when that is
// BASE/baton-ID/gen-N (nginx overwrites its environment, marker included):
// its cgroup subtree is BASE/baton-ID, where that baton created it, when
// that directory exists (cgroupTree.adopt checks it again). nil when no
// valid ID is found, or when the ID's pid and start time name a live
// process: that baton runs, and its subtree is not this one's to take over.
func markerTracking(leaders map[lifecycle.Gen]leader) *trackingHandover {
	base, baseErr := ownCgroup()
	var id string
	var newest lifecycle.Gen
	for gen, l := range leaders {
		lid := l.ID
		if !validTrackID(lid) && baseErr == nil {
			lid = cgroupTrackID(l.Pid, gen, base)
		}
		if validTrackID(lid) && gen > newest {
			id, newest = lid, gen
		}
	}
	if id == "" {
		return nil
	}
	f := strings.Split(id, "-")
	pid, _ := strconv.Atoi(f[0])
	if ticks, err := proc.StartTicks(pid); err == nil && strconv.FormatUint(ticks, 10) == f[1] {
		return nil
	}
	t := &trackingHandover{ID: id}
	if baseErr == nil {
		var st unix.Stat_t
		if dir := filepath.Join(base, cgroupName+id); unix.Lstat(dir, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			t.Cgroup = dir
		}
	}
	return t
}

// cgroupTrackID is the tracking ID of the subtree pid's cgroup lies in
// when that cgroup is base/baton-ID/gen-GEN; "" otherwise.
func cgroupTrackID(pid int, gen lifecycle.Gen, base string) string {
	b, err := readProcLimited(pid, "cgroup", 64<<10)
	if err != nil {
		return ""
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		p, ok := strings.CutPrefix(l, "0::")
		if !ok {
			continue
		}
		dir, err := cgroupPath(p)
		if err != nil || filepath.Base(dir) != "gen-"+strconv.Itoa(int(gen)) || filepath.Dir(filepath.Dir(dir)) != base {
			return ""
		}
		id, ok := strings.CutPrefix(filepath.Base(filepath.Dir(dir)), cgroupName)
		if ok && validTrackID(id) {
			return id
		}
	}
	return ""
}

// recoveredProcs names the processes of each recovered generation as the
// supervisor adopting them will (adoptedTrack): the cgroup of the previous
// baton's subtree (when cgroupTree.adopt accepts it), the marker, and the
// leader's parent as reaper, so a socket that only a daemon of the
// generation holds is found and taken back.
func recoveredProcs(h *Handover, rd *RunDir) map[lifecycle.Gen]proc.GenProcs {
	cg := newCgroupTree("", false)
	var id string
	if h.Tracking != nil && validTrackID(h.Tracking.ID) {
		id = h.Tracking.ID
		if h.Tracking.Cgroup != "" && cg.adopt(h.Tracking.Cgroup, id) != nil {
			cg.dir = ""
		}
	}
	out := map[lifecycle.Gen]proc.GenProcs{}
	for _, g := range h.Gens {
		t := adoptedTrack(cg, rd, g, id)
		out[g.Gen] = proc.GenProcs{Pgid: g.Pid, Leader: g.Pid, Cgroup: t.cgroup, Marker: t.marker, Reaper: t.reaper}
	}
	return out
}

// genProcs names generation g's processes for taking its sockets back:
// as recoveredProcs found them, else its process group and tree.
func (h *Handover) genProcs(g GenHandover) proc.GenProcs {
	if p, ok := h.procs[g.Gen]; ok {
		return p
	}
	return proc.GenProcs{Pgid: g.Pid, Leader: g.Pid}
}

// noteRemnants reports the processes left in the adopted subtree's cgroups
// of generations that were not adopted (their leader gone): no generation
// claims them, and they are killed at stop.
func (s *Supervisor) noteRemnants(adopted map[lifecycle.Gen]bool) {
	for _, dir := range s.cgroups.leftovers() {
		gen, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "gen-"))
		if err != nil || adopted[lifecycle.Gen(gen)] {
			continue
		}
		if pids, _ := proc.CgroupProcs(dir); len(pids) > 0 {
			s.log.Warn("processes of a generation that was not adopted (its leader is gone): they are killed at stop",
				zap.Int("gen", gen), zap.Ints("pids", pids))
		}
	}
}
