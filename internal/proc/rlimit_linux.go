package proc

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxDefaultNofile caps the default NOFILE: container hosts can allow 2^30,
// and HAProxy 2.6 sizes its tables from the limit and then fails to start.
const MaxDefaultNofile = 1 << 20

// Unlimited is RLIM_INFINITY.
const Unlimited = math.MaxUint64

var rlimitNames = map[string]int{
	"as": unix.RLIMIT_AS, "core": unix.RLIMIT_CORE, "cpu": unix.RLIMIT_CPU,
	"data": unix.RLIMIT_DATA, "fsize": unix.RLIMIT_FSIZE, "locks": unix.RLIMIT_LOCKS,
	"memlock": unix.RLIMIT_MEMLOCK, "msgqueue": unix.RLIMIT_MSGQUEUE, "nice": unix.RLIMIT_NICE,
	"nofile": unix.RLIMIT_NOFILE, "nproc": unix.RLIMIT_NPROC, "rss": unix.RLIMIT_RSS,
	"rtprio": unix.RLIMIT_RTPRIO, "rttime": unix.RLIMIT_RTTIME,
	"sigpending": unix.RLIMIT_SIGPENDING, "stack": unix.RLIMIT_STACK,
}

// Rlimit is one resource limit baton sets on every child.
type Rlimit struct {
	Name      string
	Resource  int
	Soft, Max uint64
}

func (r Rlimit) String() string {
	return r.Name + "=" + limitString(r.Soft) + ":" + limitString(r.Max)
}

func limitString(v uint64) string {
	if v == Unlimited {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

// ParseRlimit parses NAME=SOFT[:HARD]; values are numbers or "unlimited".
// HARD defaults to SOFT.
func ParseRlimit(s string) (Rlimit, error) {
	name, vals, ok := strings.Cut(s, "=")
	res, known := rlimitNames[strings.ToLower(name)]
	if !ok || !known {
		return Rlimit{}, fmt.Errorf("bad rlimit %q: want NAME=SOFT[:HARD] with NAME one of %s", s, strings.Join(RlimitNames(), ", "))
	}
	softS, hardS, hasHard := strings.Cut(vals, ":")
	if !hasHard {
		hardS = softS
	}
	soft, err1 := parseLimit(softS)
	hard, err2 := parseLimit(hardS)
	if !hasHard {
		err2 = nil // the same text, already reported
	}
	if err := errors.Join(err1, err2); err != nil {
		return Rlimit{}, fmt.Errorf("bad rlimit %q: %w", s, err)
	}
	if soft > hard {
		return Rlimit{}, fmt.Errorf("bad rlimit %q: soft limit above hard limit", s)
	}
	return Rlimit{Name: strings.ToLower(name), Resource: res, Soft: soft, Max: hard}, nil
}

func parseLimit(s string) (uint64, error) {
	if s == "unlimited" || s == "infinity" {
		return Unlimited, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("limit %q: want a number or unlimited", s)
	}
	return v, nil
}

// RlimitNames lists the names ParseRlimit accepts.
func RlimitNames() []string {
	var out []string
	for n := range rlimitNames {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// EffectiveRlimits merges the configured limits over the defaults: NOFILE
// soft = hard = min(baton's own hard limit, MaxDefaultNofile). It fails when
// a hard limit is above baton's own and baton may not raise it, so that the
// problem shows at start, not as a generation that cannot start.
func EffectiveRlimits(configured []Rlimit) ([]Rlimit, error) {
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &own); err != nil {
		return nil, fmt.Errorf("getrlimit nofile: %w", err)
	}
	n := min(own.Max, MaxDefaultNofile)
	out := []Rlimit{{Name: "nofile", Resource: unix.RLIMIT_NOFILE, Soft: n, Max: n}}
	for _, r := range configured {
		out = replaceRlimit(out, r)
	}
	capable := hasCapSysResource()
	for _, r := range out {
		var cur unix.Rlimit
		if err := unix.Getrlimit(r.Resource, &cur); err != nil {
			return nil, fmt.Errorf("getrlimit %s: %w", r.Name, err)
		}
		if r.Max > cur.Max && !capable {
			return nil, fmt.Errorf("rlimit %s: hard limit %s is above baton's own (%s) and baton lacks CAP_SYS_RESOURCE to raise it",
				r.Name, limitString(r.Max), limitString(cur.Max))
		}
	}
	return out, nil
}

func replaceRlimit(list []Rlimit, r Rlimit) []Rlimit {
	for i := range list {
		if list[i].Resource == r.Resource {
			list[i] = r
			return list
		}
	}
	return append(list, r)
}

// hasCapSysResource reports whether baton may raise hard limits.
func hasCapSysResource() bool { return hasCap(unix.CAP_SYS_RESOURCE) }

// hasCap reports whether baton's effective capabilities include c.
func hasCap(c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<uint(c)) != 0
		}
	}
	return false
}

// harmlessOwn are the resources baton can hold at a child's limits itself
// without risk to its own work: limits on what baton does not use, or
// (nofile) uses little of. CPU time, address space, data, file size,
// processes (threads) and stack could stop baton itself.
var harmlessOwn = map[int]bool{
	unix.RLIMIT_NOFILE: true, unix.RLIMIT_CORE: true, unix.RLIMIT_MEMLOCK: true,
	unix.RLIMIT_MSGQUEUE: true, unix.RLIMIT_NICE: true, unix.RLIMIT_RTPRIO: true,
	unix.RLIMIT_RTTIME: true, unix.RLIMIT_SIGPENDING: true, unix.RLIMIT_LOCKS: true,
}

// minOwnNofile is the lowest soft NOFILE baton takes on itself (unless it
// already ran with less): below it, thousands of listeners and draining
// generations could run baton out of descriptors.
const minOwnNofile = 65536

// TakeOnRlimits sets baton's own limits to rl, the limits of every child,
// when that is harmless to baton (see harmlessOwn), so that children inherit
// them and start without the exec shim (one program start less per
// generation, config check and probe). It returns the limits now held, or
// nil and why not; then every child goes through the shim, as before. It
// must run before any child starts. NOFILE is set with syscall.Setrlimit,
// which also stops the Go runtime from restoring its original soft NOFILE in
// children (the 1024 incident).
func TakeOnRlimits(rl []Rlimit) ([]Rlimit, string) {
	nofile := false
	capable := hasCapSysResource()
	for _, r := range rl {
		if !harmlessOwn[r.Resource] {
			return nil, r.Name + " is not a limit baton holds itself"
		}
		var cur unix.Rlimit
		if err := unix.Getrlimit(r.Resource, &cur); err != nil {
			return nil, err.Error()
		}
		if r.Max < cur.Max && !capable {
			// Lowering its own hard limit could not be undone.
			return nil, fmt.Sprintf("%s: the hard limit is below baton's own and baton lacks CAP_SYS_RESOURCE", r.Name)
		}
		if r.Resource == unix.RLIMIT_NOFILE {
			if r.Soft < min(cur.Cur, minOwnNofile) {
				return nil, fmt.Sprintf("nofile %s is below what baton keeps for itself (%d)", limitString(r.Soft), min(cur.Cur, minOwnNofile))
			}
			nofile = true
		}
	}
	if !nofile {
		return nil, "no nofile limit"
	}
	for _, r := range rl {
		// syscall, not unix: the runtime must learn about NOFILE.
		if err := syscall.Setrlimit(r.Resource, &syscall.Rlimit{Cur: r.Soft, Max: r.Max}); err != nil {
			return nil, fmt.Sprintf("setrlimit %s: %v", r, err)
		}
	}
	return append([]Rlimit(nil), rl...), ""
}

// sameRlimits reports whether a and b set the same limits.
func sameRlimits(a, b []Rlimit) bool {
	if len(a) != len(b) {
		return false
	}
	for _, r := range a {
		found := false
		for _, o := range b {
			if o.Resource == r.Resource {
				found = o.Soft == r.Soft && o.Max == r.Max
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// holdsRlimits reports whether baton's own limits are rl now.
func holdsRlimits(rl []Rlimit) bool {
	for _, r := range rl {
		var cur unix.Rlimit
		if err := unix.Getrlimit(r.Resource, &cur); err != nil || cur.Cur != r.Soft || cur.Max != r.Max {
			return false
		}
	}
	return true
}
