package integration

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestReloadWaitsForStoppedGenerationSaysSo: an old generation that cannot
// act on its drain signal (SIGSTOPped HAProxy) keeps the listeners, and the
// reload waits for its hard stop and kill. That wait is not silent:
// `baton reload` on a terminal (a pty from script(1)) prints every few
// seconds which generation still holds the listeners, its connections and
// its deadline; baton logs one WARN for it, half the drain timeout after
// the drain signal here (5 s with longer drain timeouts).
func TestReloadWaitsForStoppedGenerationSaysSo(t *testing.T) {
	scriptBin, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) not installed: no pty for baton reload")
	}
	const drain, grace = 8 * time.Second, time.Second
	p := startAccProxy(t, batontest.HAProxyOpts{}, []string{"--drain-timeout", drain.String(), "--kill-grace", grace.String()}, batontest.StartOptions{})
	st := p.status(t)
	gen1, pid1 := st.Active()
	pids := st.Gen(gen1).Pids
	if err := batontest.SignalPids(pids, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if _, ok := batontest.PollUntil(5*time.Second, time.Millisecond, func() bool { return batontest.Stopped(pids) }); !ok {
		t.Fatalf("generation %d (pids %v) not stopped 5 s after SIGSTOP", gen1, pids)
	}
	p.write(t, 2)

	ctx, cancel := context.WithTimeout(context.Background(), drain+grace+30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, scriptBin, "-qfec", fmt.Sprintf("%s reload -c %s", p.b.Bin, p.b.Control), "/dev/null").CombinedOutput()
	took := time.Since(start)
	text := strings.ReplaceAll(string(out), "\r", "")
	t.Logf("baton reload on a pty: %v after %s:\n%s", err, took.Round(time.Millisecond), text)
	if err != nil || !strings.Contains(text, "reloaded: generation") {
		t.Fatalf("baton reload on a pty: %v, want success", err)
	}
	waiting := batontest.LogLines(text, "waiting:", fmt.Sprintf("generation %d (pid %d) draining for", gen1, pid1), "connections, hard stop at")
	if len(waiting) < 2 {
		t.Errorf("%d progress lines naming draining generation %d (pid %d), want at least 2 in %s", len(waiting), gen1, pid1, took.Round(time.Second))
	}
	if took < drain {
		t.Errorf("reload acknowledged after %s, before the drain deadline %s", took.Round(time.Millisecond), drain)
	}
	log := p.b.Log()
	sel := fmt.Sprintf(`"gen": %d,`, gen1)
	wantLevel(t, log, "WARN", 1, "old generation still holds the listeners after its drain signal", sel, `"signal": "SIGUSR1"`)
	wantLevel(t, log, "WARN", 1, "signal generation: drain deadline passed, hard stop", sel)
	wantLevel(t, log, "WARN", 1, "signal generation: still running after the hard stop, kill", sel)
	if held := batontest.LogLines(log, "old generation still holds the listeners", sel); len(held) == 1 {
		t.Logf("WARN line: %s", held[0])
	}
	// Without a terminal, no progress: stdout and stderr stay for the result.
	res := p.b.CLI("reload")
	if res.Code != 0 || strings.Contains(res.Stdout+res.Stderr, "waiting:") {
		t.Errorf("baton reload without a terminal: exit %d, output %q", res.Code, res.Stdout+res.Stderr)
	}
}
