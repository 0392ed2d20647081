package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/batontest"
)

// TestGenericListenFdNames: the generic driver hands each listener as fds
// 3, 4, ... in --listen order, with LISTEN_FDS, LISTEN_FDNAMES from the
// listener names and LISTEN_PID equal to the server's own pid (set by the
// exec shim, so a shell that execs the server passes it on unchanged): two
// listeners web and admin arrive as "2 web:admin PID PID".
func TestGenericListenFdNames(t *testing.T) {
	act := batontest.BuildBinary(t, "./examples/activated")
	dir := batontest.ShortTempDir(t)
	cfg, envFile := filepath.Join(dir, "activated.conf"), filepath.Join(dir, "env")
	writeConf(t, cfg, activatedConf(1))
	web, admin := batontest.FreePort(t), batontest.FreePort(t)
	b := batontest.StartBaton(t, []string{"--proxy", "generic",
		"-l", fmt.Sprintf("web=tcp://127.0.0.1:%d", web), "-l", fmt.Sprintf("admin=tcp://127.0.0.1:%d", admin), "--",
		"/bin/sh", "-c", fmt.Sprintf(`echo "$LISTEN_FDS $LISTEN_FDNAMES $LISTEN_PID $$" > %[1]s; readlink /proc/$$/fd/3 /proc/$$/fd/4 >> %[1]s; exec %[2]s -config %[3]s`,
			shq(envFile), shq(act), shq(cfg)),
	}, batontest.StartOptions{})
	st, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	_, pid := st.Active()
	data, err := os.ReadFile(envFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	t.Logf("the shell baton started saw LISTEN_FDS LISTEN_FDNAMES LISTEN_PID $$ = %q and fds 3, 4 = %q; generation pid %d", lines[0], lines[1:], pid)
	if want := fmt.Sprintf("2 web:admin %d %d", pid, pid); lines[0] != want {
		t.Errorf("environment %q, want %q", lines[0], want)
	}
	if len(st.Listeners) != 2 {
		t.Fatalf("status lists listeners %+v, want 2", st.Listeners)
	}
	// fd 3 is web's socket, fd 4 admin's, in --listen order.
	want := []string{fmt.Sprintf("socket:[%d]", st.Listeners[0].Inode), fmt.Sprintf("socket:[%d]", st.Listeners[1].Inode)}
	if st.Listeners[0].Addr != fmt.Sprintf("127.0.0.1:%d", web) || !slices.Equal(lines[1:], want) {
		t.Errorf("fds 3, 4 were %q, want web's then admin's socket %q (listeners %+v)", lines[1:], want, st.Listeners)
	}
	// The server holds both (it wraps them in fds of its own).
	held := heldInodes(t, pid)
	for _, l := range st.Listeners {
		if !held[l.Inode] {
			t.Errorf("the server (pid %d) does not hold listener %s (inode %d)", pid, l.Addr, l.Inode)
		}
	}
	for _, port := range []int{web, admin} {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Err != nil || r.Status != 200 || r.Gen != "1" {
			t.Errorf("GET http://%s/: %d %q %v", addr, r.Status, r.Gen, r.Err)
		}
	}
	// The exec'd server took the sockets: /proc/PID/exe is activated.
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); exe != act {
		t.Errorf("generation pid %d runs %s, want %s", pid, exe, act)
	}
}

// heldInodes is the set of socket inodes open in pid.
func heldInodes(t *testing.T, pid int) map[uint64]bool {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		link, _ := os.Readlink(filepath.Join(dir, e.Name()))
		var ino uint64
		if _, err := fmt.Sscanf(link, "socket:[%d]", &ino); err == nil {
			out[ino] = true
		}
	}
	return out
}

// TestGenericSignals: --drain-signal and --stop-signal reach the old
// generation. examples/activated (Go, handling only SIGTERM and SIGINT)
// ignores SIGWINCH and dies of SIGHUP: with --drain-signal SIGWINCH it keeps
// its sockets, so the reload is acknowledged only once --drain-timeout
// passed and the hard stop, SIGHUP, ended it with status 128+1. With the
// defaults, SIGTERM drains it and it exits 0.
func TestGenericSignals(t *testing.T) {
	sigLine := func(log string, kind string, sig unix.Signal) []string {
		return batontest.LogLines(log, "signal generation", `"gen": 1,`, `"kind": "`+kind+`"`, `"signal": "`+unix.SignalName(sig)+`"`)
	}
	t.Run("configured", func(t *testing.T) {
		const drain = time.Second
		g := startGeneric(t, 0, []string{"--drain-signal", "SIGWINCH", "--stop-signal", "HUP", "--drain-timeout", drain.String(), "--kill-grace", "5s"},
			plainActivated, batontest.StartOptions{})
		_, pid1 := g.status(t).Active()
		writeConf(t, g.cfg, activatedConf(2))
		res := g.b.CLI("reload")
		t.Logf("reload with --drain-signal SIGWINCH (ignored) --stop-signal HUP --drain-timeout %s: exit %d after %s", drain, res.Code, res.Took.Round(time.Millisecond))
		if res.Code != 0 {
			t.Fatalf("exit %d: %s", res.Code, res.Stderr)
		}
		if res.Took < drain {
			t.Errorf("reload acknowledged after %s while the old generation, which ignores its drain signal, held the sockets until the %s drain timeout", res.Took, drain)
		}
		var exited []string
		batontest.Eventually(t, 10*time.Second, func() error {
			if exited = batontest.LogLines(g.b.Log(), "generation exited", `"gen": 1,`); len(exited) == 0 {
				return fmt.Errorf("generation 1 (pid %d) has not exited", pid1)
			}
			return nil
		})
		log := g.b.Log()
		drainL, stopL := sigLine(log, "drain", unix.SIGWINCH), sigLine(log, "stop", unix.SIGHUP)
		for _, l := range slices.Concat(drainL, stopL, exited) {
			t.Logf("baton's log: %s", l)
		}
		if len(drainL) != 1 || len(stopL) != 1 {
			t.Errorf("generation 1 got %d drain (SIGWINCH) and %d stop (SIGHUP) signals in baton's log, want 1 each", len(drainL), len(stopL))
		}
		if !strings.Contains(exited[0], `"status": 129`) {
			t.Errorf("generation 1 exit %q, want status 129 (killed by SIGHUP)", exited[0])
		}
		if kills := batontest.LogLines(log, "signal generation", `"gen": 1,`, `"kind": "kill"`); len(kills) > 0 {
			t.Errorf("generation 1 needed SIGKILL: %q", kills)
		}
		if st := g.status(t); st.Counters["hard_stops"] != 1 {
			t.Errorf("counters %v, want hard_stops 1", st.Counters)
		}
		if v := g.get(t); v != "2" {
			t.Errorf("answers from version %q, want 2", v)
		}
	})
	t.Run("default", func(t *testing.T) {
		g := startGeneric(t, 0, nil, plainActivated, batontest.StartOptions{})
		writeConf(t, g.cfg, activatedConf(2))
		res := g.b.CLI("reload")
		t.Logf("reload with the default signals: exit %d after %s", res.Code, res.Took.Round(time.Millisecond))
		if res.Code != 0 {
			t.Fatalf("exit %d: %s", res.Code, res.Stderr)
		}
		var exited []string
		batontest.Eventually(t, 10*time.Second, func() error {
			if exited = batontest.LogLines(g.b.Log(), "generation exited", `"gen": 1,`); len(exited) == 0 {
				return fmt.Errorf("generation 1 has not exited")
			}
			return nil
		})
		drainL := sigLine(g.b.Log(), "drain", unix.SIGTERM)
		t.Logf("baton's log: %q %q", drainL, exited)
		if len(drainL) != 1 || !strings.Contains(exited[0], `"status": 0`) {
			t.Errorf("want one SIGTERM drain and exit status 0 for generation 1")
		}
		if st := g.status(t); st.Counters["hard_stops"] != 0 {
			t.Errorf("counters %v, want no hard stop", st.Counters)
		}
	})
}

// TestGenericCheckCommand: a failing --check-command blocks the reload with
// exit 1 and the command's own output; the old generation keeps serving.
func TestGenericCheckCommand(t *testing.T) {
	g := startGeneric(t, 0, []string{"--check-command", "{act} -check -config {cfg}"}, plainActivated, batontest.StartOptions{})
	gen1, pid1 := g.status(t).Active()
	writeConf(t, g.cfg, "version=2\nbogus=1\n")
	res := g.b.CLI("reload")
	t.Logf("reload with a config the check refuses: exit %d after %s: %s", res.Code, res.Took.Round(time.Millisecond), strings.TrimSpace(res.Stderr))
	if res.Code != 1 {
		t.Errorf("exit %d, want 1", res.Code)
	}
	for _, w := range []string{"config check failed", g.cfg + `:2: unknown key "bogus"`, "exit status 1"} {
		if !strings.Contains(res.Stderr, w) {
			t.Errorf("stderr lacks %q", w)
		}
	}
	st := g.status(t)
	if gen, pid := st.Active(); gen != gen1 || pid != pid1 || len(st.Generations) != 1 {
		t.Errorf("after the refused reload: generation %d pid %d (%d generations), want the untouched %d pid %d", gen, pid, len(st.Generations), gen1, pid1)
	}
	if st.LastReload == nil || !strings.Contains(st.LastReload.Error, `unknown key "bogus"`) {
		t.Errorf("status last_reload %+v, want the check's output", st.LastReload)
	}
	if v := g.get(t); v != "1" {
		t.Errorf("answers from version %q, want 1", v)
	}
	writeConf(t, g.cfg, activatedConf(3))
	if gen, pid := g.reload(t); gen <= gen1 || pid == pid1 {
		t.Errorf("reload of a good config: generation %d pid %d", gen, pid)
	}
	if v := g.get(t); v != "3" {
		t.Errorf("answers from version %q, want 3", v)
	}
}

// TestGenericNofile guards docs/design.md's invariant 6 for a socket-activated server: it
// gets the NOFILE of --rlimit, not baton's inherited soft 1024. The shell
// that execs the server records what baton set; a Go server then raises its
// own soft limit to the hard one, which /proc shows.
func TestGenericNofile(t *testing.T) {
	for _, c := range []struct {
		rlimit     string
		soft, hard string
	}{
		{"nofile=3000", "3000", "3000"},
		{"nofile=2048:4096", "2048", "4096"},
	} {
		t.Run(c.rlimit, func(t *testing.T) {
			so, _ := lowNofileShell(t)
			var rec string
			g := startGeneric(t, 0, []string{"--rlimit", c.rlimit}, func(g *genericRun) []string {
				rec = filepath.Join(g.dir, "limits")
				return sh(fmt.Sprintf("grep 'Max open files' /proc/self/limits > %s; exec %s -config %s", shq(rec), shq(g.act), shq(g.cfg)))
			}, so)
			data, err := os.ReadFile(rec)
			if err != nil {
				t.Fatal(err)
			}
			set := strings.Fields(strings.TrimPrefix(strings.TrimSpace(string(data)), "Max open files"))
			set = set[:min(len(set), 2)] // soft, hard (then the unit)
			st := g.status(t)
			gen, pid := st.Active()
			soft, hard, err := batontest.Nofile(pid)
			if err != nil {
				t.Fatal(err)
			}
			view := st.Gen(gen)
			t.Logf("--rlimit %s: the exec'd shell had NOFILE %q; activated (pid %d) /proc soft %s hard %s; status %v", c.rlimit, set, pid, soft, hard, view.Nofile)
			if len(set) < 2 || set[0] != c.soft || set[1] != c.hard {
				t.Errorf("the shell baton started had NOFILE %q, want %s/%s", set, c.soft, c.hard)
			}
			// Go raises its own soft limit towards the hard one at start.
			if s, lo, hi := atoi(t, soft), atoi(t, c.soft), atoi(t, c.hard); hard != c.hard || s < lo || s > hi {
				t.Errorf("activated has NOFILE %s/%s, want hard %s and soft between %s and %s", soft, hard, c.hard, c.soft, c.hard)
			}
			if c.soft == c.hard && soft != c.soft {
				t.Errorf("activated has soft NOFILE %s, want %s", soft, c.soft)
			}
			if len(view.Pids) != 1 || view.Pids[0] != pid || fmt.Sprint(view.Nofile[0][0]) != soft || fmt.Sprint(view.Nofile[0][1]) != hard {
				t.Errorf("status says processes %v NOFILE %v, want pid %d with %s/%s as in /proc", view.Pids, view.Nofile, pid, soft, hard)
			}
		})
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
