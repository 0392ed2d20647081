package integration

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// missingStatsSocket is a global line `haproxy -c` accepts but the process
// that binds it fails on: a stats socket in a directory that does not
// exist. HAProxy 3.1+ binds it in the worker (the master whose first worker
// fails then exits), older versions in the master.
const missingStatsSocket = "    stats socket /nonexistent-baton-test-dir/admin.sock\n"

// TestHAProxyStartFailure guards docs/design.md's invariant 2 where the config check cannot:
// a generation that passes `haproxy -c` but fails while starting ends the
// reload as soon as it exits — not at --ready-timeout — with HAProxy's own
// words, and the serving generation is untouched; at the first start,
// `baton run` exits non-zero the same way.
func TestHAProxyStartFailure(t *testing.T) {
	breakConfig := func(t *testing.T, text string) string {
		t.Helper()
		if !strings.HasPrefix(text, "global\n") {
			t.Fatalf("config does not start with global:\n%s", text)
		}
		return "global\n" + missingStatsSocket + strings.TrimPrefix(text, "global\n")
	}
	t.Run("reload", func(t *testing.T) {
		p := startAccProxy(t, batontest.HAProxyOpts{}, []string{"--ready-timeout", "30s"}, batontest.StartOptions{})
		gen1, pid1 := p.status(t).Active()
		text := p.write(t, 2)
		writeConf(t, p.cfg, breakConfig(t, text))
		res := p.b.CLI("reload")
		t.Logf("reload to a config that fails at start: exit %d after %s, stderr:\n%s", res.Code, res.Took.Round(time.Millisecond), res.Stderr)
		compatFigure(t, "reload failed with exit %d after %s with HAProxy's words; generation %d kept serving", res.Code, res.Took.Round(time.Millisecond), gen1)
		if res.Code != 1 {
			t.Errorf("exit %d, want 1", res.Code)
		}
		if res.Took > 10*time.Second {
			t.Errorf("the failed reload took %s: it must end when the generation exits, not at --ready-timeout", res.Took)
		}
		if !strings.Contains(res.Stderr, "nonexistent-baton-test-dir") {
			t.Errorf("stderr does not carry HAProxy's error naming the socket path")
		}
		st := p.status(t)
		if gen, pid := st.Active(); gen != gen1 || pid != pid1 || len(st.Generations) != 1 {
			t.Errorf("after the failed reload: active %d pid %d, %d generations; want generation %d pid %d alone", gen, pid, len(st.Generations), gen1, pid1)
		}
		if g := p.get(t); g != "1" {
			t.Errorf("answers from version %q, want 1", g)
		}
		// The failed generation's config passed its check but never
		// served: a crash replacement must run the serving one's.
		if err := batontest.SignalPids(st.Gen(gen1).Pids, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		batontest.Eventually(t, 15*time.Second, func() error {
			st, err := p.b.Status()
			if err != nil {
				return err
			}
			if g, _ := st.Active(); g <= gen1 {
				return fmt.Errorf("no replacement for generation %d yet: %+v", gen1, st.Generations)
			}
			return nil
		})
		if g := p.get(t); g != "1" {
			t.Errorf("the crash replacement answers from version %q, want the serving config's 1", g)
		}
		p.write(t, 3)
		p.reload(t)
		if g := p.get(t); g != "3" {
			t.Errorf("after the fixed reload answers from version %q, want 3", g)
		}
	})
	t.Run("first-start", func(t *testing.T) {
		haproxy := batontest.RequireBinary(t, "haproxy")
		port := batontest.FreePort(t)
		cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
		writeConf(t, cfg, breakConfig(t, batontest.HAProxyAcceptanceConfig(batontest.HAProxyOpts{Port: port, Version: 1})))
		start := time.Now()
		b := batontest.StartBaton(t, []string{"-l", "tcp://127.0.0.1:" + strconv.Itoa(port), "--", haproxy, "-f", cfg}, batontest.StartOptions{NoWait: true})
		code, err := b.ExitCode(20 * time.Second)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%v\n%s", err, b.LogTail(20))
		}
		t.Logf("baton run with a config that fails at start: exit %d after %s", code, took.Round(time.Millisecond))
		if code == 0 {
			t.Errorf("baton run exited 0")
		}
		if log := b.Log(); !strings.Contains(log, "nonexistent-baton-test-dir") {
			t.Errorf("baton's output does not carry HAProxy's error naming the socket path:\n%s", b.LogTail(20))
		}
	})
}
