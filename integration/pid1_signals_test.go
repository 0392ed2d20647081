package integration

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestPID1ForwardsSignals guards README's "Containers": baton's PID 1 init
// forwards HUP (reload: a new generation serves) and QUIT (fast stop: an
// in-flight request does not hold the exit, though --drain-timeout is 60 s)
// to the supervisor, and exits with the supervisor's status: 128+9 when the
// supervisor is SIGKILLed. The namespace is empty afterwards.
func TestPID1ForwardsSignals(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	batontest.RequireBinary(t, "unshare")

	t.Run("hup-reloads-quit-stops-fast", func(t *testing.T) {
		slow := batontest.StartSlowBackend(t, 30*time.Second)
		port := batontest.FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
		o := batontest.HAProxyOpts{Port: port, Version: 1, BackendPort: slow.Port}
		writeConf(t, cfg, batontest.HAProxyAcceptanceConfig(o))
		nb := batontest.StartBatonPID1(t, []string{"-l", "tcp://" + addr, "--drain-timeout", "60s", "--", haproxy, "-f", cfg}, batontest.StartOptions{})
		pid1Split(t, nb, true)

		o.Version = 2
		writeConf(t, cfg, batontest.HAProxyAcceptanceConfig(o))
		if err := nb.SignalInit(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var st batontest.Status
		took, ok := batontest.PollUntil(10*time.Second, 10*time.Millisecond, func() bool {
			var err error
			st, err = nb.Status()
			gen, _ := st.Active()
			return err == nil && gen == 2 && st.Counters["reloads_ok"] == 1
		})
		r := batontest.HTTPGet(addr, "/", 5*time.Second)
		t.Logf("SIGHUP to PID 1: generation 2 active %t after %s (counters %v); GET: %d X-Gen %q", ok, took.Round(time.Millisecond), st.Counters, r.Status, r.Gen)
		if !ok || r.Status != 200 || r.Gen != "2" {
			t.Fatalf("SIGHUP to PID 1 did not reload: status %+v, GET %+v\n%s", st, r, nb.LogTail(20))
		}

		held := make(chan batontest.HTTPResult, 1)
		go func() { held <- batontest.HTTPGet(addr, "/slow", 40*time.Second) }()
		if err := slow.WaitSlow(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := nb.SignalInit(syscall.SIGQUIT); err != nil {
			t.Fatal(err)
		}
		quitAt := time.Now()
		code, err := nb.ExitCode(15 * time.Second)
		stopTook := time.Since(quitAt)
		var res batontest.HTTPResult
		select {
		case res = <-held:
		case <-time.After(10 * time.Second):
			res.Err = fmt.Errorf("still waiting")
		}
		t.Logf("SIGQUIT to PID 1 with a request in flight: exit status %d (%v) after %s; the held request: status %d, err %v",
			code, err, stopTook.Round(time.Millisecond), res.Status, res.Err)
		if err != nil || code != 0 {
			t.Fatalf("exit status %d (%v), want 0\n%s", code, err, nb.LogTail(20))
		}
		if stopTook > 5*time.Second {
			t.Errorf("fast stop took %s: the in-flight request held it like a drain", stopTook)
		}
		log := nb.Log()
		if quit := batontest.LogLines(log, "signal received", `"signal": "SIGQUIT"`); len(quit) != 1 {
			t.Errorf("the supervisor logged %d SIGQUITs, want 1 (forwarded by the init): %q", len(quit), quit)
		}
		if stops := batontest.LogLines(log, "signal generation", `"gen": 2,`, `"kind": "stop"`); len(stops) != 1 {
			t.Errorf("generation 2 got %d hard stops, want 1: %q", len(stops), stops)
		}
		if left := pid1Left(nb); len(left) > 0 {
			t.Errorf("processes of the namespace left: %v", left)
		}
	})

	t.Run("supervisor-sigkill-exits-137", func(t *testing.T) {
		port := batontest.FreePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
		writeConf(t, cfg, batontest.HAProxyConfig(port, 1, nil, nil))
		nb := batontest.StartBatonPID1(t, []string{"-l", "tcp://" + addr, "--", haproxy, "-f", cfg}, batontest.StartOptions{})
		sup := pid1Split(t, nb, true)
		before := pid1Left(nb)
		if err := batontest.SignalPids([]int{sup}, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		code, err := nb.ExitCode(15 * time.Second)
		t.Logf("SIGKILL to the supervisor (host pid %d): the init exited %d (%v); namespace before: %v", sup, code, err, before)
		if err != nil || code != 128+int(syscall.SIGKILL) {
			t.Fatalf("exit status %d (%v), want %d", code, err, 128+int(syscall.SIGKILL))
		}
		if left := pid1Left(nb); len(left) > 0 {
			t.Errorf("processes of the namespace (HAProxy's) left after its init exited: %v", left)
		}
	})
}
