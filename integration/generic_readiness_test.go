package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestGenericReadiness guards the generic driver's readiness: by default a
// generation is ready only on READY=1 on its NOTIFY_SOCKET, so a server that
// never sends it fails its start (first start or reload) after
// --ready-timeout with a message that says so, and the serving generation is
// untouched; --ready-after and --ready-probe make such a server start.
func TestGenericReadiness(t *testing.T) {
	const readyTimeout = 2 * time.Second
	// env -u NOTIFY_SOCKET execs the server without the variable, in the
	// same process, so LISTEN_PID still matches.
	silent := func(g *genericRun) []string {
		return []string{"/usr/bin/env", "-u", "NOTIFY_SOCKET", g.act, "-config", g.cfg}
	}

	t.Run("first-start-without-ready", func(t *testing.T) {
		start := time.Now()
		g := startGeneric(t, 0, []string{"--ready-timeout", readyTimeout.String()}, silent, batontest.StartOptions{NoWait: true})
		code, err := g.b.ExitCode(readyTimeout + 15*time.Second)
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		lines := firstStartFailure(t, g, code, took, "no READY=1 on NOTIFY_SOCKET")
		t.Logf("baton exited %d after %s: %q", code, took.Round(time.Millisecond), lines)
		if took < readyTimeout {
			t.Errorf("gave up after %s, before --ready-timeout %s", took, readyTimeout)
		}
		if left := batontest.Descendants(g.b.Pid()); len(left) > 0 {
			t.Errorf("processes left: %v", left)
		}
	})

	t.Run("reload-without-ready", func(t *testing.T) {
		// The same command starts a READY=1 server until the file quiet
		// exists, then one without NOTIFY_SOCKET.
		var quiet string
		g := startGeneric(t, 0, []string{"--ready-timeout", readyTimeout.String()}, func(g *genericRun) []string {
			quiet = filepath.Join(g.dir, "quiet")
			return sh(fmt.Sprintf("if [ -e %s ]; then exec /usr/bin/env -u NOTIFY_SOCKET %s -config %s; fi; exec %s -config %s",
				shq(quiet), shq(g.act), shq(g.cfg), shq(g.act), shq(g.cfg)))
		}, batontest.StartOptions{})
		gen1, pid1 := g.status(t).Active()
		if err := os.WriteFile(quiet, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		writeConf(t, g.cfg, activatedConf(2))
		res := g.b.CLI("reload")
		t.Logf("reload of a server that never sends READY=1: exit %d after %s: %s", res.Code, res.Took.Round(time.Millisecond), strings.TrimSpace(res.Stderr))
		if res.Code != 1 {
			t.Errorf("exit %d, want 1", res.Code)
		}
		for _, w := range []string{"not ready in time", "not ready after 2s", "no READY=1 on NOTIFY_SOCKET", "--ready-probe or --ready-after"} {
			if !strings.Contains(res.Stderr, w) {
				t.Errorf("stderr lacks %q", w)
			}
		}
		if res.Took < readyTimeout {
			t.Errorf("reload failed after %s, before --ready-timeout %s", res.Took, readyTimeout)
		}
		st := g.status(t)
		if gen, pid := st.Active(); gen != gen1 || pid != pid1 {
			t.Errorf("after the failed reload generation %d pid %d is active, want %d pid %d", gen, pid, gen1, pid1)
		}
		batontest.Eventually(t, 10*time.Second, func() error {
			if st := g.status(t); len(st.Generations) != 1 {
				return fmt.Errorf("generations %+v, want only %d", st.Generations, gen1)
			}
			return nil
		})
		if v := g.get(t); v != "1" {
			t.Errorf("answers from version %q, want 1", v)
		}
		if err := os.Remove(quiet); err != nil {
			t.Fatal(err)
		}
		if gen, _ := g.reload(t); gen <= gen1 {
			t.Errorf("reload of a READY=1 server: generation %d", gen)
		}
		if v := g.get(t); v != "2" {
			t.Errorf("answers from version %q, want 2", v)
		}
	})

	t.Run("ready-after", func(t *testing.T) {
		const after = 300 * time.Millisecond
		g := startGeneric(t, 0, []string{"--ready-timeout", readyTimeout.String(), "--ready-after", after.String()}, silent, batontest.StartOptions{})
		for v := 2; v <= 3; v++ {
			writeConf(t, g.cfg, activatedConf(v))
			res := g.b.CLI("reload")
			t.Logf("--ready-after %s: reload to version %d: exit %d after %s", after, v, res.Code, res.Took.Round(time.Millisecond))
			if res.Code != 0 {
				t.Fatalf("exit %d: %s", res.Code, res.Stderr)
			}
			if res.Took < after {
				t.Errorf("reload acknowledged after %s, before --ready-after %s", res.Took, after)
			}
			if got := g.get(t); got != fmt.Sprint(v) {
				t.Errorf("answers from version %q, want %d", got, v)
			}
		}
	})

	t.Run("ready-probe", func(t *testing.T) {
		batontest.RequireBinary(t, "curl")
		port := batontest.FreePort(t)
		probe := fmt.Sprintf("curl -fsS -o /dev/null http://127.0.0.1:%d/", port)
		g := startGeneric(t, port, []string{"--ready-timeout", readyTimeout.String(), "--ready-probe", probe}, silent, batontest.StartOptions{})
		for v := 2; v <= 3; v++ {
			writeConf(t, g.cfg, activatedConf(v))
			res := g.b.CLI("reload")
			t.Logf("--ready-probe %q: reload to version %d: exit %d after %s", probe, v, res.Code, res.Took.Round(time.Millisecond))
			if res.Code != 0 {
				t.Fatalf("exit %d: %s", res.Code, res.Stderr)
			}
			if got := g.get(t); got != fmt.Sprint(v) {
				t.Errorf("answers from version %q, want %d", got, v)
			}
		}
	})

	t.Run("ready-probe-failing", func(t *testing.T) {
		start := time.Now()
		g := startGeneric(t, 0, []string{"--ready-timeout", readyTimeout.String(), "--ready-probe", "echo probe says no >&2; exit 3"}, silent, batontest.StartOptions{NoWait: true})
		code, err := g.b.ExitCode(readyTimeout + 15*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		lines := firstStartFailure(t, g, code, took, `readiness probe \"/bin/sh -c echo probe says no >&2; exit 3\"`, "exit status 3", "probe says no")
		t.Logf("failing probe: baton exited %d after %s: %q", code, took.Round(time.Millisecond), lines)
	})
}

// firstStartFailure asserts how baton reports a first generation that was
// not ready in time: exit status 1, and a last line and a "reload failed" log
// line that both say so with the readiness check's last error (the words in
// why); it returns both lines.
func firstStartFailure(t *testing.T, g *genericRun, code int, took time.Duration, why ...string) []string {
	t.Helper()
	if code != 1 {
		t.Errorf("baton exit %d, want 1", code)
	}
	if took < 2*time.Second {
		t.Errorf("gave up after %s, before --ready-timeout 2s", took)
	}
	log := g.b.Log()
	last := batontest.LogLines(log, "baton: first generation failed: generation 1: not ready in time: not ready after 2s (last check: ")
	failed := batontest.LogLines(log, "reload failed", `"gen": 1,`, "not ready after 2s (last check: ")
	if len(last) != 1 {
		t.Errorf("baton's last words do not say the first generation was not ready after 2s:\n%s", g.b.LogTail(5))
	}
	if len(failed) != 1 {
		t.Fatalf("no \"reload failed\" line for generation 1 with its last check:\n%s", g.b.LogTail(5))
	}
	for _, w := range why {
		if !strings.Contains(failed[0], w) {
			t.Errorf("the failure %q lacks %q", failed[0], w)
		}
		// The last line is plain text; the log line is escaped.
		if plain := strings.ReplaceAll(w, `\"`, `"`); len(last) == 1 && !strings.Contains(last[0], plain) {
			t.Errorf("the last line %q lacks %q", last[0], plain)
		}
	}
	return append(last, failed...)
}
