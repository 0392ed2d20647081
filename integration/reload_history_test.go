package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// historyLen is how many finished reloads baton keeps (supervisor.ReloadHistoryLen).
const historyLen = 32

// configDigest is the digest baton reports for a config file: SHA-256 over
// its path, length and content.
func configDigest(path, content string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00", path, len(content))
	h.Write([]byte(content))
	return hex.EncodeToString(h.Sum(nil))
}

// TestHAProxyReloadHistory: after the first start and 40 reloads with real
// HAProxy, every fourth one with a broken config (then fixed by the next),
// `baton status --json` and GET /v1/reloads hold exactly the last 32, in
// order, each with its generation, trigger, outcome, the digest of the
// config it was given and, for the failed ones, HAProxy's own error; the
// counters count 40 reloads (the start is not one), and `baton status`
// prints the newest multi-line error once.
func TestHAProxyReloadHistory(t *testing.T) {
	p := startAccProxy(t, batontest.HAProxyOpts{}, []string{"--drain-timeout", "30s"}, batontest.StartOptions{})
	st0 := p.status(t)
	if len(st0.Reloads) != 1 || st0.Reloads[0].Trigger != "start" || st0.Reloads[0].Outcome != "ok" || st0.Counters["reloads_ok"] != 0 {
		t.Fatalf("after the start: reloads %+v, counters %v; want one start and no reload counted", st0.Reloads, st0.Counters)
	}
	if st0.Config == nil || len(st0.Config.Files) != 1 {
		t.Fatalf("config %+v: want the one -f file", st0.Config)
	}
	path := st0.Config.Files[0]
	if want := configDigest(path, p.write(t, 1)); st0.Config.AppliedDigest != want || st0.Reloads[0].ConfigDigest != want || st0.Config.OnDiskDiffers {
		t.Fatalf("after the start: config %+v, start digest %s; want %s, the same on disk", st0.Config, st0.Reloads[0].ConfigDigest, want)
	}

	type want struct {
		gen     int
		outcome string
		digest  string
	}
	var wants []want
	failed := 0
	start := time.Now()
	for i := 1; i <= 40; i++ {
		var text string
		outcome, code := "ok", 0
		if i%4 == 2 {
			text, outcome, code = p.write(t, i+1, "bogus_keyword on"), "failed", 1
			failed++
		} else {
			text = p.write(t, i+1)
		}
		if res := p.b.CLI("reload"); res.Code != code {
			t.Fatalf("reload %d: exit %d, want %d: %s%s", i, res.Code, code, res.Stdout, res.Stderr)
		}
		wants = append(wants, want{gen: i + 1, outcome: outcome, digest: configDigest(path, text)})
	}
	took := time.Since(start)

	res := p.b.CLI("status", "--json")
	if res.Code != 0 {
		t.Fatalf("baton status --json: exit %d: %s", res.Code, res.Stderr)
	}
	var st batontest.Status
	if err := json.Unmarshal([]byte(res.Stdout), &st); err != nil {
		t.Fatal(err)
	}
	t.Logf("40 reloads (%d failed) in %s; status --json: %d reloads kept, generations %d..%d; counters %v",
		failed, took.Round(time.Millisecond), len(st.Reloads), st.Reloads[0].Gen, st.Reloads[len(st.Reloads)-1].Gen, st.Counters)
	if len(st.Reloads) != historyLen {
		t.Fatalf("status --json has %d reloads, want the last %d", len(st.Reloads), historyLen)
	}
	last := wants[len(wants)-historyLen:]
	for k, r := range st.Reloads {
		w := last[k]
		if r.Gen != w.gen || r.Outcome != w.outcome || r.ConfigDigest != w.digest || r.Trigger != "api" || r.Requests != 1 || r.DurationMs <= 0 {
			t.Errorf("reloads[%d] = generation %d %s %s digest %.12s requests %d %.1f ms; want generation %d %s api digest %.12s, 1 request",
				k, r.Gen, r.Trigger, r.Outcome, r.ConfigDigest, r.Requests, r.DurationMs, w.gen, w.outcome, w.digest)
		}
		if (r.Outcome == "failed") != strings.Contains(r.Error, "unknown keyword 'bogus_keyword'") {
			t.Errorf("reloads[%d] (generation %d, %s): error %q", k, r.Gen, r.Outcome, r.Error)
		}
		if k > 0 && r.At.Before(st.Reloads[k-1].At) {
			t.Errorf("reloads[%d] finished at %s, before reloads[%d] (%s): not in order", k, r.At, k-1, st.Reloads[k-1].At)
		}
	}
	if st.Counters["reloads_ok"] != 40-failed || st.Counters["reloads_failed"] != failed {
		t.Errorf("counters %v, want reloads_ok %d, reloads_failed %d", st.Counters, 40-failed, failed)
	}
	if st.LastReload == nil || st.LastReload.Gen != 41 || st.LastReload.Outcome != "ok" {
		t.Errorf("last_reload %+v, want generation 41 ok", st.LastReload)
	}
	if c := st.Config; c == nil || c.Gen != 41 || c.AppliedDigest != wants[39].digest || c.OnDiskDiffers {
		t.Errorf("config %+v, want generation 41's digest %.12s, the same on disk", c, wants[39].digest)
	}
	gen, _ := st.Active()
	roles := map[string]int{}
	for _, g := range st.Generations {
		if g.Gen == gen {
			for _, pr := range g.Processes {
				roles[pr.Role]++
			}
		}
	}
	if roles["master"] != 1 || roles["worker"] < 1 || len(roles) != 2 {
		t.Errorf("generation %d roles %v, want one master and its workers", gen, roles)
	}

	body, err := p.b.Get("/v1/reloads")
	if err != nil {
		t.Fatal(err)
	}
	var api struct {
		Reloads []batontest.Reload `json:"reloads"`
	}
	if err := json.Unmarshal(body, &api); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(api.Reloads) != fmt.Sprint(st.Reloads) {
		t.Errorf("GET /v1/reloads differs from status --json:\n%v\n%v", api.Reloads, st.Reloads)
	}

	// A broken config written after the last reload: on disk differs.
	p.write(t, 99, "bogus_keyword on")
	if c := p.status(t).Config; c == nil || !c.OnDiskDiffers || c.AppliedDigest != wants[39].digest {
		t.Errorf("config after an edit that was not reloaded: %+v, want on_disk_differs", c)
	}
	// Make the newest failure the last reload: printed in full once.
	if res := p.b.CLI("reload"); res.Code != 1 {
		t.Fatalf("reload of a broken config: exit %d", res.Code)
	}
	human := p.b.CLI("status")
	t.Logf("baton status:\n%s", human.Stdout)
	if n := strings.Count(human.Stdout, "Fatal errors found in configuration"); n != 1 {
		t.Errorf("baton status prints HAProxy's multi-line error %d times, want once", n)
	}
	if !strings.Contains(human.Stdout, "RELOADS (last 10 of 32 kept, oldest first)") || !strings.Contains(human.Stdout, "DIFFERS: not applied") {
		t.Errorf("baton status lacks the reload table or the config line")
	}
}

// TestWatchBrokenReloadMetric: baton_last_reload_success is 1 after the
// start, 0 once a broken config written to a --watch file was refused
// (baton_config_on_disk_differs 1, the record's trigger "watch"), and 1
// again after the fix, with the applied digest of the fixed file.
func TestWatchBrokenReloadMetric(t *testing.T) {
	batontest.RequireBinary(t, "haproxy")
	port := batontest.FreePort(t)
	maddr := fmt.Sprintf("127.0.0.1:%d", batontest.FreePort(t))
	cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
	good := func(v int) string { return batontest.HAProxyConfig(port, v, nil, nil) }
	if err := batontest.WriteFileAtomic(cfg, []byte(good(1))); err != nil {
		t.Fatal(err)
	}
	p := startWatchProxy(t, port, cfg, cfg, "--metrics", maddr)
	gauges := func() (success, differs, at float64) {
		fams := scrapeMetrics(t, maddr)
		var ok bool
		if success, ok = metricValue(fams, "baton_last_reload_success", nil); !ok {
			t.Fatal("baton_last_reload_success not exported")
		}
		differs, _ = metricValue(fams, "baton_config_on_disk_differs", nil)
		at, _ = metricValue(fams, "baton_last_reload_timestamp_seconds", nil)
		return success, differs, at
	}
	s0, d0, at0 := gauges()
	t.Logf("after the start: baton_last_reload_success %v, baton_config_on_disk_differs %v", s0, d0)
	if s0 != 1 || d0 != 0 {
		t.Errorf("after the start: success %v, on disk differs %v; want 1, 0", s0, d0)
	}

	broken := good(2) + "    bogus_keyword on\n"
	if err := batontest.WriteFileAtomic(cfg, []byte(broken)); err != nil {
		t.Fatal(err)
	}
	p.waitWatch(t, 15*time.Second, func(s batontest.WatchedStatus) error {
		if s.Watch.Failed == 0 {
			return fmt.Errorf("the broken config was not tried yet (watch %+v)", *s.Watch)
		}
		return nil
	})
	s1, d1, at1 := gauges()
	st := p.status(t)
	lr := st.Reloads[len(st.Reloads)-1]
	t.Logf("after the broken watch reload: baton_last_reload_success %v, baton_config_on_disk_differs %v, timestamp +%.3f s; newest record generation %d %s %s",
		s1, d1, at1-at0, lr.Gen, lr.Trigger, lr.Outcome)
	if s1 != 0 || d1 != 1 || at1 <= at0 {
		t.Errorf("after the broken watch reload: success %v, on disk differs %v, timestamp %v (before %v); want 0, 1, later", s1, d1, at1, at0)
	}
	if lr.Trigger != "watch" || lr.Outcome != "failed" || !strings.Contains(lr.Error, "bogus_keyword") {
		t.Errorf("newest reload record %+v, want the watch's failed reload with HAProxy's words", lr)
	}

	if err := batontest.WriteFileAtomic(cfg, []byte(good(3))); err != nil {
		t.Fatal(err)
	}
	p.waitServed(t, 15*time.Second, 3)
	batontest.Eventually(t, 10*time.Second, func() error {
		if s, _, _ := gauges(); s != 1 {
			return fmt.Errorf("baton_last_reload_success %v after the fix", s)
		}
		return nil
	})
	s2, d2, _ := gauges()
	fams := scrapeMetrics(t, maddr)
	st = p.status(t)
	applied, ok := metricValue(fams, "baton_config_applied_info", map[string]string{"digest": st.Config.AppliedDigest})
	want := configDigest(st.Config.Files[0], good(3))
	t.Logf("after the fix: baton_last_reload_success %v, baton_config_on_disk_differs %v, baton_config_applied_info{digest=%.12s} %v", s2, d2, st.Config.AppliedDigest, applied)
	if s2 != 1 || d2 != 0 || !ok || applied != 1 || st.Config.AppliedDigest != want {
		t.Errorf("after the fix: success %v, on disk differs %v, applied info %v (%t) for %.12s; want 1, 0, 1 for %.12s", s2, d2, applied, ok, st.Config.AppliedDigest, want)
	}
}
