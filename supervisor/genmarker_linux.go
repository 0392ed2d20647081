package supervisor

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// How a baton restarted after a crash knows which processes are its
// generations. A state file says which pid was which generation, but a
// pid and its start time only prove which process it is, not that a baton
// started it. So every generation carries a mark of its run directory, and
// a process is a generation's leader only if:
//
//  1. it leads its own process group (baton starts every generation with
//     setpgid), is not a zombie, and its generation's directory RUN/GEN
//     exists in the run directory (a real directory of baton's uid);
//  2. and either its environment holds BATON_GENERATION=ID.GEN:MAC, which
//     baton puts first in every generation's environment, MAC being an
//     HMAC of RUN/GEN keyed by the run directory's marker file (0600, in
//     the 0700 run directory: only baton's uid can compute it), or it runs
//     as baton's uid (real and effective) and its command line names
//     RUN/GEN/ (HAProxy's -S and -x paths, nginx's -c copy: nginx
//     overwrites its environment when it sets its process title, and
//     keeps the arguments in the title);
//  3. and of the processes that pass 1 and 2 for one generation, it
//     started first (everything a generation spawns starts after its
//     leader).
//
// An unrelated process, or one somebody else started naming baton's
// directories, fails 2; a process a generation daemonized fails 3.

// Bounds of what the proof reads of a process.
const (
	proofEnvironLimit = 1 << 20
	cmdlineLimit      = 1 << 20
)

// leader is a process proven to lead a generation of a run directory.
type leader struct {
	Gen   lifecycle.Gen
	Pid   int
	Ticks uint64
	ID    string // the tracking ID of its marker; "" when proven by its command line
}

// markerValue is generation gen's BATON_GENERATION value: ID.GEN:MAC, ID
// being the supervisor's tracking ID (tracking.go: which processes are the
// generation's) and MAC the proof that baton's uid wrote it (above).
func (r *RunDir) markerValue(id string, gen lifecycle.Gen) string {
	return id + "." + strconv.Itoa(int(gen)) + ":" + r.mac(r.genDir(gen))
}

// genDirs lists the generations whose directory exists in the run
// directory (a real directory of baton's uid).
func (r *RunDir) genDirs() map[lifecycle.Gen]bool {
	ents, err := os.ReadDir(r.Path)
	if err != nil {
		return nil
	}
	out := map[lifecycle.Gen]bool{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n <= 0 || strconv.Itoa(n) != e.Name() || !e.IsDir() {
			continue // IsDir is false for a symbolic link
		}
		if st, err := e.Info(); err == nil && ownerOf(st) == os.Geteuid() {
			out[lifecycle.Gen(n)] = true
		}
	}
	return out
}

// findLeaders scans /proc for the leaders of this run directory's
// generations (see above). It reads every process group leader's stat
// and environment, so it runs only when generation directories exist (a
// previous baton left generations behind).
func (r *RunDir) findLeaders() map[lifecycle.Gen]leader {
	gens := r.genDirs()
	if len(gens) == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := map[lifecycle.Gen]leader{}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		ps, err := proc.ReadStat(pid)
		if err != nil || ps.Pgrp != pid || ps.State == 'Z' {
			continue
		}
		gen, id, ok := r.claim(pid, gens)
		if !ok {
			continue
		}
		if cur, seen := out[gen]; !seen || ps.StartTicks < cur.Ticks || (ps.StartTicks == cur.Ticks && pid < cur.Pid) {
			out[gen] = leader{Gen: gen, Pid: pid, Ticks: ps.StartTicks, ID: id}
		}
	}
	return out
}

// claim returns the generation whose mark pid carries (rule 2), with the
// tracking ID of its marker ("" when its command line proves it).
func (r *RunDir) claim(pid int, gens map[lifecycle.Gen]bool) (lifecycle.Gen, string, bool) {
	env, _ := readProcLimited(pid, "environ", proofEnvironLimit)
	prefix := []byte(markerVar + "=")
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, prefix)
		if !ok {
			continue
		}
		idGen, mac, _ := strings.Cut(string(v), ":")
		dot := strings.LastIndexByte(idGen, '.')
		n, err := strconv.Atoi(idGen[dot+1:])
		gen := lifecycle.Gen(n)
		if err == nil && gens[gen] && hmac.Equal([]byte(mac), []byte(r.mac(r.genDir(gen)))) {
			return gen, idGen[:max(dot, 0)], true
		}
	}
	if !runsAsUs(pid) {
		return 0, "", false
	}
	cmd, _ := readProcLimited(pid, "cmdline", cmdlineLimit)
	base := []byte(r.Path + "/")
	for rest := cmd; ; {
		i := bytes.Index(rest, base)
		if i < 0 {
			return 0, "", false
		}
		rest = rest[i+len(base):]
		end := bytes.IndexByte(rest, '/')
		if end <= 0 {
			continue
		}
		n, err := strconv.Atoi(string(rest[:end]))
		if gen := lifecycle.Gen(n); err == nil && strconv.Itoa(n) == string(rest[:end]) && gens[gen] {
			return gen, "", true
		}
	}
}

// runsAsUs reports whether pid's real and effective uids are baton's.
func runsAsUs(pid int) bool {
	b, err := readProcLimited(pid, "status", 64<<10)
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "Uid:"); ok {
			f := strings.Fields(rest)
			me := strconv.Itoa(os.Geteuid())
			return len(f) >= 2 && f[0] == me && f[1] == me
		}
	}
	return false
}

// readProcLimited reads at most limit bytes of /proc/PID/name.
func readProcLimited(pid int, name string, limit int64) ([]byte, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/" + name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}
