package supervisor

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// realState is a state file a harness supervisor wrote (generation 2
// active, 1 draining): the seed of FuzzReadState.
func realState(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// stateOf returns a state file for run directory run listing gen with
// pid and ticks (active) and directory dir.
func stateOf(t testing.TB, run string, gen lifecycle.Gen, pid int, ticks uint64, dir string) []byte {
	t.Helper()
	sf := stateFile{Version: stateVersion, RunDir: run, BatonStartTicks: 1}
	sf.BatonPid = 999999
	sf.Machine.LastGen = gen
	sf.Machine.Gens = []lifecycle.GenInfo{{Gen: gen, State: lifecycle.Active, Pid: pid}}
	sf.Gens = []GenHandover{{Gen: gen, Pid: pid, StartTicks: ticks, Dir: dir, Pidfd: -1, Output: -1}}
	b, err := json.Marshal(sf)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadState: no file is no state; garbage and other formats are
// errors naming the file; a real state file reads back; a symbolic link,
// a file of another uid and an oversized file are refused.
func TestReadState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "b.sock.state")
	if h, err := readState(path); h != nil || err != nil {
		t.Fatalf("missing file: %v, %v; want nil, nil", h, err)
	}
	for _, bad := range []string{"{not json", `{"baton_pid":12,"gens":[{"generation":3,"pid":77,"start_ticks":9}]}`} {
		must(t, os.WriteFile(path, []byte(bad), 0o600))
		if _, err := readState(path); err == nil || !strings.Contains(err.Error(), path) {
			t.Fatalf("%q: %v, want an error naming %s", bad, err, path)
		}
	}
	must(t, os.WriteFile(path, realState(t), 0o600))
	h, err := readState(path)
	if err != nil || len(h.Gens) != 2 || h.Gens[1].Gen != 2 || h.Gens[1].StartTicks == 0 {
		t.Fatalf("readState = %+v, %v", h, err)
	}
	link := filepath.Join(dir, "link.state")
	must(t, os.Symlink(path, link))
	if _, err := readState(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("symbolic link: %v, want a refusal", err)
	}
	big := filepath.Join(dir, "big.state")
	must(t, os.WriteFile(big, make([]byte, stateLimit+1), 0o600))
	if _, err := readState(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized: %v, want a refusal", err)
	}
	if os.Geteuid() == 0 {
		must(t, os.Chown(path, 65534, -1))
		if _, err := readState(path); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Errorf("another uid's file: %v, want a refusal", err)
		}
	}
}

// TestDecodeStateRefuses: what a state file says about itself must hold.
func TestDecodeStateRefuses(t *testing.T) {
	edit := func(f func(m map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal(realState(t), &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	gens := func(m map[string]any) []any { return m["gens"].([]any) }
	machineGens := func(m map[string]any) []any { return m["machine"].(map[string]any)["generations"].([]any) }
	cases := []struct {
		name, data, want string
	}{
		{"truncated", string(realState(t)[:200]), "unexpected end"},
		{"version", edit(func(m map[string]any) { m["version"] = 0 }), "format version 0"},
		{"no-writer", edit(func(m map[string]any) { m["baton_pid"] = 1 }), "no writer"},
		{"run-dir", edit(func(m map[string]any) { m["run_dir"] = "../x" }), "clean absolute path"},
		{"gen-twice", edit(func(m map[string]any) { m["gens"] = append(gens(m), gens(m)[0]) }), "listed twice"},
		{"two-active", edit(func(m map[string]any) { machineGens(m)[0].(map[string]any)["State"] = 3 }), "2 active"},
		{"checking", edit(func(m map[string]any) { machineGens(m)[0].(map[string]any)["State"] = 1 }), "is checking"},
		{"no-machine-state", edit(func(m map[string]any) { m["machine"].(map[string]any)["generations"] = machineGens(m)[:1] }), "has no lifecycle state"},
		{"above-last", edit(func(m map[string]any) { m["machine"].(map[string]any)["last_generation"] = 1 }), "above the last generation"},
		{"listener-user", edit(func(m map[string]any) {
			m["listeners"].([]any)[0].(map[string]any)["users"] = []int{7}
		}), "user generation 7"},
		{"listener-spec", edit(func(m map[string]any) { m["listeners"].([]any)[0].(map[string]any)["spec"] = "bogus://x" }), "bogus"},
	}
	// A steered UDP listener: its anchor record, then one member per
	// generation.
	udp := func(members ...map[string]any) func(m map[string]any) {
		return func(m map[string]any) {
			ls := append(m["listeners"].([]any), map[string]any{"spec": "udp_127.0.0.1_5353=udp://127.0.0.1:5353", "inode": 7, "users": []int{1, 2}, "fd": -1, "steered": true})
			for _, mb := range members {
				ls = append(ls, mb)
			}
			m["listeners"] = ls
		}
	}
	member := func(gen int) map[string]any {
		return map[string]any{"spec": "udp_127.0.0.1_5353=udp://127.0.0.1:5353", "inode": 10 + gen, "fd": -1, "member_of": gen}
	}
	cases = append(cases,
		struct{ name, data, want string }{"member-twice", edit(udp(member(1), member(1))), "member of generation 1 listed twice"},
		struct{ name, data, want string }{"member-unlisted-gen", edit(udp(member(9))), "member of generation 9 listed twice or of a generation not listed"},
		struct{ name, data, want string }{"member-without-group", edit(func(m map[string]any) {
			m["listeners"] = append(m["listeners"].([]any), member(1))
		}), "without its steered listener before it"},
	)
	if _, err := decodeState([]byte(edit(udp(member(1), member(2))))); err != nil {
		t.Errorf("a steered listener with its members: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeState([]byte(c.data))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("decodeState: %v, want %q", err, c.want)
			}
		})
	}
	if _, err := decodeState(realState(t)); err != nil {
		t.Fatalf("the real state file: %v", err)
	}
}

// TestValidateStateRefusesGenerations: a generation whose directory is not
// RUN/GEN, or whose config copies are outside it, is refused by pid;
// last good copies outside RUN/last-good and a pid file naming no kept
// generation are dropped; a state of another run directory is refused.
func TestValidateStateRefusesGenerations(t *testing.T) {
	const run = "/run/baton/b.sock.d"
	sf, err := decodeState(stateOf(t, run, 3, 4242, 9, "/etc/nginx/conf.d"))
	if err != nil {
		t.Fatal(err)
	}
	h, refused, err := validateState(sf, run)
	if err != nil || len(h.Gens) != 0 || len(h.Machine.Gens) != 0 || len(refused) != 1 || refused[0].Pid != 4242 || !strings.Contains(refused[0].Reason, "/etc/nginx/conf.d") {
		t.Fatalf("dir outside: %+v %+v %v", h, refused, err)
	}
	if _, _, err := validateState(sf, "/other.d"); err == nil || !strings.Contains(err.Error(), "not of /other.d") {
		t.Errorf("another run directory: %v", err)
	}
	sf, _ = decodeState(stateOf(t, run, 3, 4242, 9, run+"/3"))
	sf.Gens[0].Config = map[string]string{"/etc/haproxy/haproxy.cfg": "/etc/shadow"}
	if _, refused, _ := validateState(sf, run); len(refused) != 1 || !strings.Contains(refused[0].Reason, "/etc/shadow") {
		t.Errorf("config copy outside: %+v", refused)
	}
	sf.Gens[0].Config = map[string]string{"/etc/haproxy/haproxy.cfg": run + "/3/config/0-haproxy.cfg"}
	sf.LastGood = map[string]string{"/etc/haproxy/haproxy.cfg": run + "/../evil"}
	sf.PidFile = api.PidFileState{Path: "/etc/passwd", Pid: 1234}
	h, refused, err = validateState(sf, run)
	if err != nil || len(refused) != 0 || len(h.Gens) != 1 || h.LastGood != nil || h.PidFile.Path != "" {
		t.Errorf("kept %+v (last good %v, pid file %+v), refused %+v, %v", h.Gens, h.LastGood, h.PidFile, refused, err)
	}
}

// TestStateWriteFullDisk guards the failed state write: on a full disk
// (a 16 KiB tmpfs) the write fails, no PATH.tmp is left, the stale state
// file is removed rather than left to mislead, the failure is logged at
// WARN, and the next step writes it again once there is room.
func TestStateWriteFullDisk(t *testing.T) {
	requireRoot(t)
	dir := shortDir(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16k,mode=0700"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	state := filepath.Join(dir, "b.sock.state")
	h := newHarness(t, harnessOpts{stateFile: state})
	h.start()
	waitFor(t, shortWait, "the first state file", func() bool { _, err := os.Stat(state); return err == nil })
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for { // until the disk is full
		if _, err := f.Write(make([]byte, 1024)); err != nil {
			break
		}
	}
	f.Close()
	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, shortWait, "the WARN of the failed write", func() bool {
		return h.logs.FilterMessageSnippet("state file not updated").Len() > 0
	})
	if _, err := os.Lstat(state + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp after the failed write: %v", filepath.Base(state), err)
	}
	// The stale file was removed; removing it freed room, so a later step
	// (generation 1 exiting) may have written a fresh one: never one that
	// still lists generation 1 as live, which is what the stale one did.
	if b, err := os.ReadFile(state); err == nil && strings.Contains(string(b), `"generation": 1,`) {
		t.Errorf("stale state file left after the failed write:\n%s", b)
	}
	must(t, os.Remove(filler))
	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, shortWait, "the state file written again", func() bool {
		b, err := os.ReadFile(state)
		return err == nil && strings.Contains(string(b), `"generation": 3`)
	})
	if _, err := os.Lstat(state + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left: %v", state, err)
	}
}

// TestWriteFileAtomicStaleTmp: a stale PATH.tmp (even a symbolic link to
// somebody's file) is unlinked, never written through.
func TestWriteFileAtomicStaleTmp(t *testing.T) {
	dir := t.TempDir()
	victim := filepath.Join(dir, "victim")
	must(t, os.WriteFile(victim, []byte("keep"), 0o644))
	path := filepath.Join(dir, "b.sock.state")
	must(t, os.Symlink(victim, path+".tmp"))
	if err := writeFileAtomic(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("written through the stale link: %q", b)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("state %q", b)
	}
	if _, err := os.Lstat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf(".tmp left: %v", err)
	}
}
