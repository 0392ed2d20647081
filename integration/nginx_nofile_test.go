package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

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

// TestNginxNofile guards docs/design.md's invariant 6 and the 1024 incident with nginx: with
// no worker_rlimit_nofile in the config, the master and every worker get the
// NOFILE baton sets, not the soft 1024 baton inherited, also after a reload.
func TestNginxNofile(t *testing.T) {
	conf := func(v int) func(int) string {
		return func(port int) string { return nginxConf(t, port, v, nil, nil) }
	}
	t.Run("default", func(t *testing.T) {
		so, rec := lowNofileShell(t)
		p := startNginxAcc(t, conf(1), nil, so)
		if strings.Contains(batontest.NginxConfig(p.port, 1, nil, nil), "worker_rlimit_nofile") {
			t.Fatal("the config sets worker_rlimit_nofile")
		}
		want := defaultNofile(t, shellNofile(t, rec, p.b))
		waitNginxSettled(t, p)
		checkNofile(t, p, want, want)
	})
	t.Run("rlimit-flag", func(t *testing.T) {
		so, rec := lowNofileShell(t)
		p := startNginxAcc(t, conf(1), []string{"--rlimit", "nofile=4096:8192"}, so)
		shellNofile(t, rec, p.b)
		waitNginxSettled(t, p)
		checkNofile(t, p, 4096, 8192)
		writeConf(t, p.cfg, conf(2)(p.port))
		gen, _ := p.reload(t)
		if g, _ := waitNginxSettled(t, p).Active(); g != gen {
			t.Fatalf("active generation %d, want the reloaded %d", g, gen)
		}
		checkNofile(t, p, 4096, 8192)
	})
}

// TestNginxNofileIncident shows the incident the default prevents: with
// worker_connections 2000 and a NOFILE of 1024 (here forced with --rlimit,
// in the incident inherited from a wrapper) nginx says so at start, on
// stderr, which baton logs; with baton's default limit it does not.
func TestNginxNofileIncident(t *testing.T) {
	const warning = "worker_connections exceed open file resource limit"
	conf := func(port int) string {
		return nginxConf(t, port, 1, nil, nil, [2]string{"worker_connections 1024;", "worker_connections 2000;"})
	}
	t.Run("nofile-1024", func(t *testing.T) {
		so, _ := lowNofileShell(t)
		p := startNginxAcc(t, conf, []string{"--rlimit", "nofile=1024"}, so)
		waitNginxSettled(t, p)
		checkNofile(t, p, 1024, 1024)
		var lines []string
		batontest.Eventually(t, 5*time.Second, func() error {
			if lines = batontest.LogLines(p.b.Log(), "proxy output", warning); len(lines) == 0 {
				return fmt.Errorf("no %q in baton's log", warning)
			}
			return nil
		})
		for _, l := range lines {
			t.Logf("baton's log: %s", l)
		}
		if len(batontest.LogLines(p.b.Log(), "2000 "+warning+": 1024")) == 0 {
			t.Errorf("the warning does not name 2000 connections and the limit 1024")
		}
	})
	t.Run("default", func(t *testing.T) {
		so, rec := lowNofileShell(t)
		p := startNginxAcc(t, conf, nil, so)
		want := defaultNofile(t, shellNofile(t, rec, p.b))
		waitNginxSettled(t, p)
		checkNofile(t, p, want, want)
		// The log is complete up to the generation's start: nginx warns
		// before it forks its workers, which checkNofile has seen.
		if lines := batontest.LogLines(p.b.Log(), warning); len(lines) > 0 {
			t.Errorf("with NOFILE %d nginx still warns: %q", want, lines)
		}
		t.Logf("NOFILE %d: %d proxy output lines, none with %q", want, len(batontest.LogLines(p.b.Log(), "proxy output")), warning)
	})
}
