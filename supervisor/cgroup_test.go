package supervisor

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	for _, tc := range []struct {
		line string
		want mountEntry
		ok   bool
	}{
		{"40 22 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw",
			mountEntry{root: "/", point: "/sys/fs/cgroup/unified", fstype: "cgroup2"}, true},
		{"29 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate",
			mountEntry{root: "/", point: "/sys/fs/cgroup", fstype: "cgroup2", readOnly: true}, true},
		{`51 40 0:37 /a\040b /mnt/c\134d rw shared:1 master:2 - cgroup2 none rw`,
			mountEntry{root: "/a b", point: `/mnt/c\d`, fstype: "cgroup2"}, true},
		{"40 22 0:37 / /x rw", mountEntry{}, false},
	} {
		got, ok := parseMountinfo(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseMountinfo(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestKernelVersion(t *testing.T) {
	for release, want := range map[string][2]int{
		"6.1.0-18-amd64": {6, 1}, "5.7": {5, 7}, "5.10.0+": {5, 10}, "4.19.0-26-cloud-amd64": {4, 19}, "x": {0, 0},
	} {
		if got := kernelVersion(release); got != want {
			t.Errorf("kernelVersion(%q) = %v, want %v", release, got, want)
		}
	}
}

func TestValidTrackID(t *testing.T) {
	for id, want := range map[string]bool{
		"123-456-0a1b2c3d": true, newTrackID(): true,
		"123-456": false, "123-456-0A1B2C3D": false, "123-456-0a1b2c3": false, "-456-0a1b2c3d": false,
		"1/2-456-0a1b2c3d": false, "../x-1-0a1b2c3d": false, "123-456-0a1b2c3d-1": false, "": false,
	} {
		if got := validTrackID(id); got != want {
			t.Errorf("validTrackID(%q) = %v, want %v", id, got, want)
		}
	}
}

// What a handover or state file says about the cgroup subtree is trusted
// only when it is exactly BASE/baton-ID below baton's own cgroup, a
// directory of cgroup v2: anything else is refused and changes nothing.
func TestCgroupAdoptTrustsOnlyItsOwnPlace(t *testing.T) {
	if err := cgroupUsable(); err != nil {
		t.Skipf("no writable cgroup v2 here: %v", err)
	}
	prev := newCgroupTree(newTrackID(), false)
	dir, fd, _, err := prev.create(1)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	t.Cleanup(func() { _ = prev.remove(dir); _ = prev.close() })
	base := filepath.Dir(prev.dir)
	plain := t.TempDir()
	link := filepath.Join(plain, "link")
	if err := os.Symlink(prev.dir, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, id string
	}{
		{"another ID", prev.dir, newTrackID()},
		{"malformed ID", prev.dir, "1-2"},
		{"ID with a path", filepath.Join(base, "baton-../x"), "../x"},
		{"a generation's cgroup", dir, prev.id},
		{"outside cgroupfs", filepath.Join(plain, cgroupName+prev.id), prev.id},
		{"a symlink", link, prev.id},
		{"baton's own cgroup", base, prev.id},
	} {
		t.Run(tc.name, func(t *testing.T) {
			next := newCgroupTree(newTrackID(), false)
			if err := next.adopt(tc.path, tc.id); err == nil || next.dir != "" {
				t.Errorf("adopt(%q, %q) = %v, subtree %q; want a refusal and nothing adopted", tc.path, tc.id, err, next.dir)
			}
		})
	}
	next := newCgroupTree(newTrackID(), true)
	if err := next.adopt(prev.dir, prev.id); err == nil {
		t.Error("a tree disabled by --no-cgroup adopted a subtree")
	}
	next = newCgroupTree(newTrackID(), false)
	if err := next.adopt(prev.dir, prev.id); err != nil || next.dir != prev.dir || next.adopted(1) != dir || next.adopted(2) != "" {
		t.Errorf("adopt of the previous baton's subtree: %v, dir %q, gen 1 %q, gen 2 %q", err, next.dir, next.adopted(1), next.adopted(2))
	}
}

// What a baton killed and never restarted left is removed by the next one
// made in the same cgroup, as long as nothing runs in it; a live baton's
// subtree is kept.
func TestSweepCgroupsRemovesOnlyGoneEmptySubtrees(t *testing.T) {
	if err := cgroupUsable(); err != nil {
		t.Skipf("no writable cgroup v2 here: %v", err)
	}
	base, err := ownCgroup()
	if err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(base, cgroupName+"999999999-5-0a0b0c0d") // no such pid
	live := filepath.Join(base, cgroupName+newTrackID())           // this process
	for _, d := range []string{gone, filepath.Join(gone, "gen-3"), live, filepath.Join(live, "gen-1")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{filepath.Join(gone, "gen-3"), gone, filepath.Join(live, "gen-1"), live} {
			_ = unix.Rmdir(d)
		}
	})
	swept := sweepCgroups(base) // and whatever else gone batons left here
	if !slices.Contains(swept, gone) || slices.Contains(swept, live) {
		t.Errorf("swept %q, want %s and not %s", swept, gone, live)
	}
	if _, err := os.Stat(filepath.Join(live, "gen-1")); err != nil {
		t.Errorf("a live baton's subtree was touched: %v", err)
	}
}
