package proc

// Start scheduling: a generation that starts while another one serves can
// run at a higher nice level and/or on a subset of baton's CPUs
// (--start-nice, --start-cpus), so that parsing a big configuration does
// not take CPU time from the serving generation; once it is active, its
// threads get baton's own values back (docs/design.md, "Starting
// generations: nice and CPUs").
//
// Nice and CPU affinity belong to a thread on Linux, and a child inherits
// those of the thread that forks it. So the fork runs on a goroutine of its
// own, locked to its OS thread, which sets the start values on that thread
// only, forks, and ends without unlocking: the Go runtime then ends the
// thread too, and no other goroutine of baton ever runs niced or pinned. The
// exec shim, when a start uses it, inherits the values like the proxy.

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// StartSched is how a generation that starts while another serves is
// scheduled until it is active. The zero value changes nothing.
type StartSched struct {
	Nice int         // nice level of the starting generation, 1..19; 0: baton's own
	CPUs unix.CPUSet // the CPUs it runs on; empty: baton's own
	own  schedValues // baton's own values, read by NewStartSched
	cpus string      // CPUs as given, for messages
}

// schedValues are one thread's nice level and CPU affinity.
type schedValues struct {
	nice int
	cpus unix.CPUSet
}

// maxStartNice is the highest nice level Linux has.
const maxStartNice = 19

// Off reports whether ss changes nothing.
func (ss *StartSched) Off() bool { return ss == nil || (ss.Nice == 0 && ss.CPUs.Count() == 0) }

// String is ss as the flags give it, for logs.
func (ss *StartSched) String() string {
	if ss.Off() {
		return "off"
	}
	var parts []string
	if ss.Nice != 0 {
		parts = append(parts, "nice "+strconv.Itoa(ss.Nice))
	}
	if ss.CPUs.Count() != 0 {
		parts = append(parts, "cpus "+ss.cpus)
	}
	return strings.Join(parts, ", ")
}

// NewStartSched checks the start nice level and CPU list against baton's own
// scheduling and returns what a starting generation gets (nil when both are
// off). rlimits are the children's limits: RLIMIT_NICE among them (or
// baton's own) decides, without CAP_SYS_NICE, whether a generation's nice
// can be lowered again once it is active; a nice that could not be undone
// is refused, since the generation would then serve niced.
func NewStartSched(nice int, cpus string, rlimits []Rlimit) (*StartSched, error) {
	if nice < 0 || nice > maxStartNice {
		return nil, startNiceError(fmt.Errorf("nice level %d: want one from 1 to %d (0: off)", nice, maxStartNice))
	}
	own, err := ownSched()
	if err != nil {
		return nil, err
	}
	ss := &StartSched{Nice: nice, own: own, cpus: cpus}
	if cpus != "" {
		if ss.CPUs, err = ParseCPUList(cpus); err != nil {
			return nil, startCPUsError(fmt.Errorf("CPU list %q: %w", cpus, err))
		}
		for cpu := range maxCPUs {
			if ss.CPUs.IsSet(cpu) && !own.cpus.IsSet(cpu) {
				return nil, startCPUsError(fmt.Errorf("CPU list %q: CPU %d is not among the CPUs baton may run on (%s)", cpus, cpu, FormatCPUList(own.cpus)))
			}
		}
	}
	if nice != 0 {
		if nice <= own.nice {
			return nil, startNiceError(fmt.Errorf("nice level %d: baton itself runs at nice %d, so a starting generation would not yield to the serving one; give a level above %d", nice, own.nice, own.nice))
		}
		if err := canRenice(own.nice, rlimits); err != nil {
			return nil, startNiceError(fmt.Errorf("nice level %d: %w", nice, err))
		}
	}
	if ss.Off() {
		return nil, nil
	}
	return ss, nil
}

// SettingError is a start scheduling setting NewStartSched refused.
// Setting names it as the Go API does (StartNice, StartCPUs), so that a
// command line can name its own flag where it wraps the error; the text
// says what is wrong without it.
type SettingError struct {
	Setting string
	Err     error
}

func (e *SettingError) Error() string { return e.Err.Error() }

func (e *SettingError) Unwrap() error { return e.Err }

func startNiceError(err error) error { return &SettingError{Setting: "StartNice", Err: err} }

func startCPUsError(err error) error { return &SettingError{Setting: "StartCPUs", Err: err} }

// canRenice reports why baton could not set a child's nice back to nice:
// lowering a nice level needs CAP_SYS_NICE, or the child's RLIMIT_NICE soft
// limit at least 20-nice (the kernel checks the target's limit).
func canRenice(nice int, rlimits []Rlimit) error {
	capable := hasCap(unix.CAP_SYS_NICE)
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NICE, &lim); err != nil && !capable {
		return fmt.Errorf("getrlimit nice: %w", err)
	}
	soft := lim.Cur
	for _, r := range rlimits {
		if r.Resource == unix.RLIMIT_NICE {
			soft = r.Soft
		}
	}
	return reniceLimitErr(nice, capable, soft)
}

// reniceLimitErr is canRenice's rule: with CAP_SYS_NICE (capable) or a
// nice rlimit (soft) of at least 20-nice, a nice level can be lowered to
// nice.
func reniceLimitErr(nice int, capable bool, soft uint64) error {
	need := uint64(20 - nice)
	if capable || soft >= need {
		return nil
	}
	return fmt.Errorf("baton could not set an active generation's nice back to %d: that needs CAP_SYS_NICE (run baton as root) or a nice limit of at least %d "+
		"(now %s: raise it with `ulimit -e %d` or LimitNICE=%d in the systemd unit before starting baton, or rlimit nice=%d for the children, within baton's hard limit)",
		nice, need, limitString(soft), need, need, need)
}

// ownSched reads baton's own nice level and CPU affinity, from its main
// thread (whose values the other threads share when baton starts).
func ownSched() (schedValues, error) {
	pid := os.Getpid()
	nice, err := threadNice(pid)
	if err != nil {
		return schedValues{}, fmt.Errorf("read baton's nice level: %w", err)
	}
	var cpus unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &cpus); err != nil {
		return schedValues{}, fmt.Errorf("read baton's CPU affinity: %w", err)
	}
	return schedValues{nice: nice, cpus: cpus}, nil
}

// threadNice is thread tid's nice level (getpriority(2) returns 20-nice).
func threadNice(tid int) (int, error) {
	p, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil {
		return 0, err
	}
	return 20 - p, nil
}

// wrap returns fork run on a thread of its own with ss's values, which the
// child inherits; with ss off, fork itself. The caller's goroutine waits.
func (ss *StartSched) wrap(fork func() (int, error)) func() (int, error) {
	if ss.Off() {
		return fork
	}
	return func() (int, error) {
		type result struct {
			pid int
			err error
		}
		done := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			// Not unlocked: when this goroutine ends, the runtime ends its
			// thread, the only one with the start values. (The main thread
			// cannot end; there ss.restore puts baton's values back first.)
			if err := ss.apply(); err != nil {
				ss.restore()
				done <- result{0, fmt.Errorf("set the starting generation's scheduling (%s): %w", ss, err)}
				return
			}
			pid, err := fork()
			ss.restore()
			done <- result{pid, err}
		}()
		r := <-done
		return r.pid, r.err
	}
}

// apply sets ss's values on the calling thread.
func (ss *StartSched) apply() error {
	if ss.Nice != 0 {
		if err := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), ss.Nice); err != nil {
			return fmt.Errorf("setpriority: %w", err)
		}
	}
	if ss.CPUs.Count() != 0 {
		if err := unix.SchedSetaffinity(0, &ss.CPUs); err != nil {
			return fmt.Errorf("sched_setaffinity: %w", err)
		}
	}
	return nil
}

// restore puts baton's own values back on the calling thread when it is
// baton's main thread, which the runtime parks instead of ending it; then
// the goroutine may leave it. Any other thread ends with its goroutine.
func (ss *StartSched) restore() {
	if unix.Gettid() != os.Getpid() {
		return
	}
	if unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), ss.own.nice) == nil && unix.SchedSetaffinity(0, &ss.own.cpus) == nil {
		runtime.UnlockOSThread()
	}
}

// SchedReset is what a reset of an active generation's scheduling did.
type SchedReset struct {
	Threads int   // threads that got baton's values back (nice, CPUs or both)
	Kept    int   // threads the proxy had changed itself (left as they are)
	Err     error // the first failure; nil if none
}

// Reset gives every thread of pids still at ss's start values baton's own
// values back: a nice level still ss.Nice is set to baton's, an affinity
// still exactly ss.CPUs to baton's mask. A thread the proxy moved or
// reniced itself (HAProxy's cpu-map, tune.renice.runtime) keeps its values.
// Threads a thread creates while this runs are caught by listing each
// process's threads again until no new one shows (bounded).
func (ss *StartSched) Reset(pids []int) SchedReset {
	var res SchedReset
	seen := map[int]bool{}
	for pass := 0; pass < 4; pass++ {
		fresh := 0
		for _, pid := range pids {
			for _, tid := range Threads(pid) {
				if seen[tid] {
					continue
				}
				seen[tid] = true
				fresh++
				ss.resetThread(tid, &res)
			}
		}
		if fresh == 0 {
			break
		}
	}
	return res
}

// resetThread resets one thread (see Reset); a thread that is gone is no
// failure.
func (ss *StartSched) resetThread(tid int, res *SchedReset) {
	fail := func(what string, err error) {
		if res.Err == nil && !errors.Is(err, unix.ESRCH) {
			res.Err = fmt.Errorf("%s of thread %d: %w", what, tid, err)
		}
	}
	changed, kept := false, false
	if ss.Nice != 0 {
		switch nice, err := threadNice(tid); {
		case err != nil:
			fail("read nice", err)
		case nice != ss.Nice:
			kept = true
		default:
			if err := unix.Setpriority(unix.PRIO_PROCESS, tid, ss.own.nice); err != nil {
				fail(fmt.Sprintf("set nice %d", ss.own.nice), err)
			} else {
				changed = true
			}
		}
	}
	if ss.CPUs.Count() != 0 {
		var cpus unix.CPUSet
		switch err := unix.SchedGetaffinity(tid, &cpus); {
		case err != nil:
			fail("read CPU affinity", err)
		case cpus != ss.CPUs:
			kept = true
		default:
			if err := unix.SchedSetaffinity(tid, &ss.own.cpus); err != nil {
				fail("set CPU affinity", err)
			} else {
				changed = true
			}
		}
	}
	if changed {
		res.Threads++
	} else if kept {
		res.Kept++
	}
}

// Threads lists the thread ids of pid (none once it is gone).
func Threads(pid int) []int {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		return nil
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out
}
