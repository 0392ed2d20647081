package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/procfs"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// supervised is a baton the upgrade tests drive: a plain one or PID 1 of a
// namespace (whose status pids are the namespace's).
type supervised interface {
	Status() (batontest.Status, error)
	CLI(args ...string) batontest.CLIResult
	LogTail(n int) string
}

// upgradeRig is baton supervising HAProxy on one port, with a config whose
// answers name its version.
type upgradeRig struct {
	b       supervised
	hostPid func(pid int) int // status pid → host pid
	port    int
	addr    string
	cfg     string
	version int
	extra   []string // HAProxy defaults lines
}

func (r *upgradeRig) write(t *testing.T, v int) {
	t.Helper()
	r.version = v
	writeConf(t, r.cfg, batontest.HAProxyConfig(r.port, v, nil, r.extra))
}

func newUpgradeRig(t *testing.T, extra []string) *upgradeRig {
	port := batontest.FreePort(t)
	r := &upgradeRig{port: port, addr: fmt.Sprintf("127.0.0.1:%d", port), extra: extra,
		cfg: filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg"), hostPid: func(p int) int { return p }}
	r.write(t, 1)
	return r
}

func (r *upgradeRig) args(t *testing.T) []string {
	return []string{"-l", "tcp://" + r.addr, "--drain-timeout", "30s", "--", batontest.RequireBinary(t, "haproxy"), "-f", r.cfg}
}

// status asks until baton answers (an upgrade's new baton may answer 503
// "handed over" for a moment).
func (r *upgradeRig) status(t *testing.T) batontest.Status {
	t.Helper()
	var st batontest.Status
	var err error
	if _, ok := batontest.PollUntil(15*time.Second, 10*time.Millisecond, func() bool {
		st, err = r.b.Status()
		return err == nil
	}); !ok {
		t.Fatalf("status: %v\n%s", err, r.b.LogTail(30))
	}
	return st
}

// settled waits until the active generation is the only one (the older
// ones drained and exited) and returns the status then.
func (r *upgradeRig) settled(t *testing.T) batontest.Status {
	t.Helper()
	var st batontest.Status
	if _, ok := batontest.PollUntil(20*time.Second, 20*time.Millisecond, func() bool {
		st = r.status(t)
		return len(st.Generations) == 1 && st.Generations[0].State == "active"
	}); !ok {
		t.Fatalf("older generations still there after 20 s: %+v\n%s", st.Generations, r.b.LogTail(30))
	}
	return st
}

// reload writes the next version and reloads; it returns the ack.
func (r *upgradeRig) reload(t *testing.T) load.Ack {
	t.Helper()
	v := r.version + 1
	r.write(t, v)
	res := r.b.CLI("reload", "--json")
	if res.Code != 0 {
		t.Fatalf("reload to v%d: exit %d: %s%s\n%s", v, res.Code, res.Stdout, res.Stderr, r.b.LogTail(30))
	}
	return load.Ack{At: time.Now(), Version: v}
}

// genPids is generation → leader pid.
func genPids(st batontest.Status) map[int]int {
	out := map[int]int{}
	for _, g := range st.Generations {
		out[g.Gen] = g.Pid
	}
	return out
}

// upgradeResult is one `baton upgrade`.
type upgradeResult struct {
	took           time.Duration
	oldPid, newPid int // as status shows them
	before, after  map[int]int
}

// upgrade runs `baton upgrade` on a settled baton and checks that another
// baton answers with the same generations.
func (r *upgradeRig) upgrade(t *testing.T) upgradeResult {
	t.Helper()
	before := r.settled(t)
	res := r.b.CLI("upgrade", "--json")
	if res.Code != 0 {
		t.Fatalf("baton upgrade: exit %d: %s%s\n%s", res.Code, res.Stdout, res.Stderr, r.b.LogTail(40))
	}
	var out struct {
		OldPid int `json:"old_pid"`
		NewPid int `json:"new_pid"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		t.Fatalf("baton upgrade --json: %v: %q", err, res.Stdout)
	}
	var after batontest.Status
	batontest.PollUntil(10*time.Second, 10*time.Millisecond, func() bool {
		after = r.status(t)
		return after.Pid != before.Pid
	})
	u := upgradeResult{took: res.Took, oldPid: before.Pid, newPid: after.Pid, before: genPids(before), after: genPids(after)}
	if after.Pid == before.Pid || after.Pid != out.NewPid || out.OldPid != before.Pid {
		t.Fatalf("after the upgrade status shows baton pid %d (before %d); upgrade said %d → %d", after.Pid, before.Pid, out.OldPid, out.NewPid)
	}
	if fmt.Sprint(u.before) != fmt.Sprint(u.after) {
		t.Fatalf("generations before the upgrade %v, after %v", u.before, u.after)
	}
	if !slices.Equal(listenerInodes(before), listenerInodes(after)) {
		t.Fatalf("listener inodes before the upgrade %v, after %v", listenerInodes(before), listenerInodes(after))
	}
	return u
}

func listenerInodes(st batontest.Status) []uint64 {
	var out []uint64
	for _, l := range st.Listeners {
		out = append(out, l.Inode)
	}
	return out
}

// socketFdCount counts pid's descriptors that are the socket with inode.
func socketFdCount(t *testing.T, pid int, inode uint64) int {
	t.Helper()
	fds, err := socketFds(pid, inode)
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// ctxSwitches sums voluntary and involuntary context switches over every
// thread of pid.
func ctxSwitches(t *testing.T, pid int) (voluntary, involuntary int) {
	t.Helper()
	threads, err := procfs.AllThreads(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, th := range threads {
		st, err := th.NewStatus()
		if err != nil {
			continue // the thread ended
		}
		voluntary += int(st.VoluntaryCtxtSwitches)
		involuntary += int(st.NonVoluntaryCtxtSwitches)
	}
	return voluntary, involuntary
}

// replaceFile atomically replaces path with data (mode 0755), as a package
// manager installs a new binary.
func replaceFile(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// killBaton SIGKILLs the baton serving the rig (by its host pid) and waits
// until it is gone.
func (r *upgradeRig) killBaton(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if _, ok := batontest.PollUntil(10*time.Second, 5*time.Millisecond, func() bool { return !batontest.Alive(pid) }); !ok {
		t.Fatalf("baton %d still alive after SIGKILL", pid)
	}
}
