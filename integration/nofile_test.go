package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/batonproxy/baton/batontest"
)

// TestNofile guards docs/design.md's invariant 6 and the 1024 incident with
// HAProxy and nginx: baton is started with a soft NOFILE of 1024 and the
// host's hard limit, and every process of the proxy (HAProxy's master and
// worker, nginx's master and workers, with no limit of their own in the
// config) gets the NOFILE baton sets, not the 1024 baton inherited, also
// after a reload; status reports what /proc shows.
func TestNofile(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		eachProxy(t, func(t *testing.T, f proxyFixture) {
			so, rec := lowNofileShell(t)
			p := f.start(t, nil, so)
			text, err := os.ReadFile(p.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(text), f.ownNofile) {
				t.Fatalf("the config sets %s", f.ownNofile)
			}
			want := defaultNofile(t, shellNofile(t, rec, p.b))
			f.settled(t, p)
			checkNofile(t, p, want, want)
		})
	})
	t.Run("rlimit-flag", func(t *testing.T) {
		eachProxy(t, func(t *testing.T, f proxyFixture) {
			so, rec := lowNofileShell(t)
			p := f.start(t, []string{"--rlimit", "nofile=4096:8192"}, so)
			shellNofile(t, rec, p.b)
			f.settled(t, p)
			checkNofile(t, p, 4096, 8192)
			f.write(t, p, 2, false)
			gen, _ := p.reload(t)
			// Only the new generation's processes once the old one is gone.
			if g, _ := f.settled(t, p).Active(); g != gen {
				t.Fatalf("active generation %d, want the reloaded %d", g, gen)
			}
			checkNofile(t, p, 4096, 8192)
		})
	})
}

// lowNofileShell starts baton with a soft NOFILE of 1024 (the incident's
// inherited limit) and records what the shell handed over.
func lowNofileShell(t *testing.T) (batontest.StartOptions, string) {
	rec := filepath.Join(batontest.ShortTempDir(t), "limits")
	return batontest.StartOptions{Shell: "ulimit -Sn 1024 && grep 'Max open files' /proc/self/limits > " + rec}, rec
}

// shellNofile reads the recorded limits: soft must be 1024; it returns the
// hard limit baton inherited.
func shellNofile(t *testing.T, rec string, b *batontest.Baton) string {
	t.Helper()
	data, err := os.ReadFile(rec)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(string(data)), "Max open files"))
	if len(f) < 2 || f[0] != "1024" {
		t.Fatalf("the shell that started baton has %q, want a soft NOFILE of 1024", data)
	}
	soft, hard, err := batontest.Nofile(b.Pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("baton started with NOFILE soft %s hard %s; /proc shows baton itself at soft %s hard %s", f[0], f[1], soft, hard)
	return f[1]
}

// defaultNofile is baton's default NOFILE for a hard limit as /proc prints
// it: min(hard, 1048576).
func defaultNofile(t *testing.T, hard string) uint64 {
	t.Helper()
	want := uint64(1 << 20)
	if hard != "unlimited" {
		h, err := strconv.ParseUint(hard, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		want = min(h, want)
	}
	return want
}

// checkNofile asserts that every serving proxy process (from status and
// from the process tree below baton) has NOFILE soft/hard in /proc, and that
// status reports the same values.
func checkNofile(t *testing.T, p *accProxy, soft, hard uint64) {
	t.Helper()
	res := p.b.CLI("status", "--json")
	if res.Code != 0 {
		t.Fatalf("baton status --json: exit %d: %s", res.Code, res.Stderr)
	}
	var st batontest.Status
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		t.Fatal(err)
	}
	gen, leader := st.Active()
	g := st.Gen(gen)
	if g == nil || len(g.Pids) < 2 {
		t.Fatalf("active generation %d: %+v, want a master and a worker", gen, g)
	}
	desc := batontest.Descendants(p.b.Pid())
	fromStatus := slices.Sorted(slices.Values(g.Pids))
	slices.Sort(desc)
	if !slices.Equal(fromStatus, desc) {
		t.Errorf("status lists processes %v, baton's descendants are %v", fromStatus, desc)
	}
	wantS, wantH := strconv.FormatUint(soft, 10), strconv.FormatUint(hard, 10)
	all := slices.Concat(fromStatus, desc)
	slices.Sort(all)
	all = slices.Compact(all)
	for _, pid := range all {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		s, h, err := batontest.Nofile(pid)
		if err != nil {
			t.Errorf("pid %d: %v", pid, err)
			continue
		}
		role := "worker"
		if pid == leader {
			role = "master"
		}
		t.Logf("generation %d %s pid %d (%s): /proc NOFILE soft %s hard %s", gen, role, pid, exe, s, h)
		if s != wantS || h != wantH {
			t.Errorf("pid %d (%s): NOFILE %s/%s, want %s/%s", pid, exe, s, h, wantS, wantH)
		}
	}
	compatFigure(t, "generation %d: %d processes, /proc NOFILE %s/%s", gen, len(all), wantS, wantH)
	for i, pid := range g.Pids {
		if got := g.Nofile[i]; got != [2]uint64{soft, hard} {
			t.Errorf("baton status --json says pid %d has NOFILE %d/%d, want %d/%d as in /proc", pid, got[0], got[1], soft, hard)
		}
	}
}
