package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// backoffStatus is the part of `baton status --json` the backoff shows in.
type backoffStatus struct {
	ConsecutiveCrashes int            `json:"consecutive_crashes"`
	RestartAt          *time.Time     `json:"restart_at"`
	Counters           map[string]int `json:"counters"`
	Generations        []struct {
		Gen         int        `json:"generation"`
		State       string     `json:"state"`
		Replacement bool       `json:"replacement"`
		ReadyAt     *time.Time `json:"ready_at"`
	} `json:"generations"`
}

// TestCrashBackoffVisible guards that a crash of the active generation
// starts a replacement at once, with backoff when it keeps crashing
// (docs/design.md, "A reload, step by step"), and README's promise that it shows: a generation that crashes
// 300 ms after it starts (a shell wrapper around examples/activated kills it
// while a file exists) is replaced at once after the first crash, then after
// 0.5 s, 1 s, 2 s; `baton status` shows consecutive_crashes and restart_at,
// the metrics baton_consecutive_crashes and
// baton_replacement_backoff_seconds. Once the file is gone the next
// replacement stays up and restart_at clears.
func TestCrashBackoffVisible(t *testing.T) {
	metrics := fmt.Sprintf("127.0.0.1:%d", batontest.FreePort(t))
	var crashFile string
	g := startGeneric(t, 0, []string{"--metrics", metrics}, func(g *genericRun) []string {
		crashFile = filepath.Join(g.dir, "crash")
		return sh(fmt.Sprintf("if [ -e %s ]; then (sleep 0.3; kill -KILL $$) 3>&- & fi; exec %s -config %s",
			shq(crashFile), shq(g.act), shq(g.cfg)))
	}, batontest.StartOptions{})
	gen1, pid1 := g.status(t).Active()
	if err := os.WriteFile(crashFile, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := batontest.SignalPids([]int{pid1}, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()

	restartAt := map[int]time.Time{}       // first restart_at seen, by consecutive_crashes
	restartLeft := map[int]time.Duration{} // restart_at - now when first seen
	var maxBackoff, maxConsecutiveMetric float64
	var st backoffStatus
	var healedAt time.Time
	var statusText string
	lastScrape := time.Time{}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("not settled 15 s after the first crash: last status %+v\n%s", st, g.b.LogTail(30))
		}
		raw, err := g.b.RawStatus()
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		now := time.Now()
		st = backoffStatus{}
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		if st.RestartAt != nil {
			if _, ok := restartAt[st.ConsecutiveCrashes]; !ok {
				restartAt[st.ConsecutiveCrashes] = *st.RestartAt
				restartLeft[st.ConsecutiveCrashes] = st.RestartAt.Sub(now)
			}
		}
		if now.Sub(lastScrape) >= 100*time.Millisecond {
			lastScrape = now
			m := backoffMetrics(t, metrics)
			maxBackoff = max(maxBackoff, m["baton_replacement_backoff_seconds"])
			maxConsecutiveMetric = max(maxConsecutiveMetric, m["baton_consecutive_crashes"])
		}
		if st.ConsecutiveCrashes == 4 && st.RestartAt != nil && healedAt.IsZero() {
			// Waiting out the third backoff (2 s): show it to a person, and
			// make the next replacement healthy.
			statusText = g.b.CLI("status").Stdout
			if err := os.Remove(crashFile); err != nil {
				t.Fatal(err)
			}
			healedAt = time.Now()
		}
		if !healedAt.IsZero() && st.RestartAt == nil && backoffSettled(st, now) {
			break
		}
		wait := time.NewTimer(20 * time.Millisecond)
		<-wait.C
	}
	t.Logf("generation %d killed; settled %s later; final status: consecutive_crashes %d, restart_at %v, counters %v",
		gen1, time.Since(killedAt).Round(time.Millisecond), st.ConsecutiveCrashes, st.RestartAt, st.Counters)
	for n := 2; n <= 4; n++ {
		t.Logf("consecutive_crashes %d: restart_at %v, first seen %s before it", n, restartAt[n].Format("15:04:05.000"), restartLeft[n].Round(time.Millisecond))
	}
	t.Logf("metrics: baton_replacement_backoff_seconds up to %.3f, baton_consecutive_crashes up to %.0f", maxBackoff, maxConsecutiveMetric)
	t.Logf("`baton status` while waiting:\n%s", statusText)

	log := g.b.Log()
	exited := backoffLogTimes(t, log, "generation exited")
	started := backoffLogTimes(t, log, "generation started", `"replacement": true`)
	want := []time.Duration{0, 500 * time.Millisecond, time.Second, 2 * time.Second}
	for i, backoff := range want {
		gen := gen1 + i
		ex, okE := exited[gen]
		sa, okS := started[gen+1]
		if !okE || !okS {
			t.Errorf("baton's log lacks the exit of generation %d (%t) or the replacement start of generation %d (%t)", gen, okE, gen+1, okS)
			continue
		}
		gap := sa.Sub(ex)
		line := fmt.Sprintf("crash %d: generation %d exited %s, replacement generation %d started %s later (backoff %s)",
			i+1, gen, ex.Format("15:04:05.000"), gen+1, gap, backoff)
		if ra, ok := restartAt[i+1]; ok {
			line += fmt.Sprintf("; status restart_at was %s after the exit", ra.Sub(ex).Round(time.Millisecond))
			if d := ra.Sub(ex); d < backoff-5*time.Millisecond || d > backoff+200*time.Millisecond {
				t.Errorf("crash %d: restart_at %s after the exit, want %s", i+1, d, backoff)
			}
		} else if backoff > 0 {
			t.Errorf("crash %d: status never showed restart_at with consecutive_crashes %d", i+1, i+1)
		}
		t.Log(line)
		if gap < backoff-20*time.Millisecond || gap > backoff+600*time.Millisecond {
			t.Errorf("crash %d: the replacement started %s after the exit, want about %s", i+1, gap, backoff)
		}
	}
	if len(started) != 4 {
		t.Errorf("%d replacements started, want 4 (3 that crashed, 1 that stayed): %v", len(started), started)
	}
	// counters.crashes counts active generations that crashed: generation 1
	// and each crashing replacement that became ready within its 300 ms (on
	// a loaded machine one may not; its early exit still counts towards the
	// backoff, as consecutive_crashes).
	ready := backoffLogTimes(t, log, "generation ready")
	wantCrashes := 1
	for gen := gen1 + 1; gen <= gen1+3; gen++ {
		if _, ok := ready[gen]; ok {
			wantCrashes++
		}
	}
	t.Logf("%d of the 3 crashing replacements became ready before they crashed", wantCrashes-1)
	if st.Counters["crashes"] != wantCrashes || st.ConsecutiveCrashes != 4 || wantCrashes < 2 {
		t.Errorf("counters.crashes %d, consecutive_crashes %d; want %d and 4", st.Counters["crashes"], st.ConsecutiveCrashes, wantCrashes)
	}
	if maxBackoff <= 0 || maxBackoff > 2.0 || maxConsecutiveMetric < 3 {
		t.Errorf("metrics never showed the backoff: baton_replacement_backoff_seconds max %.3f (want in (0, 2]), baton_consecutive_crashes max %.0f (want ≥ 3)", maxBackoff, maxConsecutiveMetric)
	}
	m := backoffMetrics(t, metrics)
	t.Logf("metrics once healthy: baton_child_crashes_total %.0f, baton_consecutive_crashes %.0f, baton_replacement_backoff_seconds %.3f",
		m["baton_child_crashes_total"], m["baton_consecutive_crashes"], m["baton_replacement_backoff_seconds"])
	if m["baton_child_crashes_total"] != float64(wantCrashes) || m["baton_consecutive_crashes"] != 4 || m["baton_replacement_backoff_seconds"] != 0 {
		t.Errorf("metrics once healthy: %v", m)
	}
	if !strings.Contains(statusText, "replacement after 4 crashes in a row starts in") {
		t.Errorf("`baton status` during the backoff does not show it:\n%s", statusText)
	}
	if v := g.get(t); v != "1" {
		t.Errorf("the healthy replacement answers from version %q, want 1", v)
	}
}

// backoffSettled reports whether st has an active replacement that has been
// ready for more than a second (past the 300 ms the crashing wrapper lives).
func backoffSettled(st backoffStatus, now time.Time) bool {
	for _, g := range st.Generations {
		if g.State == "active" && g.Replacement && g.ReadyAt != nil && now.Sub(*g.ReadyAt) > time.Second {
			return true
		}
	}
	return false
}

var backoffGenField = regexp.MustCompile(`"gen": (\d+),`)

// backoffLogTimes returns, by generation, the time of the first line of baton's
// console log that contains every one of subs.
func backoffLogTimes(t *testing.T, log string, subs ...string) map[int]time.Time {
	t.Helper()
	out := map[int]time.Time{}
	for _, line := range batontest.LogLines(log, subs...) {
		m := backoffGenField.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		gen, _ := strconv.Atoi(m[1])
		at, err := batontest.LogTime(line)
		if err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if _, ok := out[gen]; !ok {
			out[gen] = at
		}
	}
	return out
}

// backoffMetrics reads the unlabelled samples of baton's /metrics.
func backoffMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(val, 64); err == nil {
			out[name] = v
		}
	}
	return out
}
