package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/proxyctl"
)

// copiedDriver is the fake driver with config copies: baton copies files
// for each generation, so status shows the applied config's digest.
type copiedDriver struct {
	*fakeDriver
	file *string
}

func (d copiedDriver) ConfigFiles() ([]string, error) { return []string{*d.file}, nil }

// The history keeps the last ReloadHistoryLen, oldest first.
func TestReloadHistoryKeepsLast(t *testing.T) {
	var h reloadHistory
	for i := 1; i <= api.ReloadHistoryLen+8; i++ {
		h.add(api.ReloadRecord{Gen: i})
	}
	got := h.list()
	if len(got) != api.ReloadHistoryLen || got[0].Gen != 9 || got[len(got)-1].Gen != api.ReloadHistoryLen+8 {
		t.Fatalf("history of %d: generations %d..%d, want %d: 9..%d", len(got), got[0].Gen, got[len(got)-1].Gen, api.ReloadHistoryLen, api.ReloadHistoryLen+8)
	}
	got[0].Gen = -1
	if h.list()[0].Gen != 9 {
		t.Error("list returned the history itself, not a copy")
	}
}

// The history, the applied config and the reload gauges across a start, a
// changed file on disk, a reload, a failed reload on SIGHUP and a fixed
// one: the first start is a start (not an ok reload), each record has its
// trigger, outcome, digest and error, and on_disk_differs follows the file.
func TestReloadHistoryConfigAndGauges(t *testing.T) {
	m := NewMetrics("test")
	var cfgFile string
	h := newHarness(t, harnessOpts{metrics: m, driver: func(d *fakeDriver) proxyctl.Driver {
		return copiedDriver{fakeDriver: d, file: &cfgFile}
	}})
	cfgFile = filepath.Join(h.dir, "proxy.cfg")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgFile, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("version 1\n")
	h.start()

	st := h.status()
	if len(st.Reloads) != 1 || st.Reloads[0].Trigger != api.TriggerStart || st.Reloads[0].Outcome != api.OutcomeOK || st.Counters.ReloadsOK != 0 {
		t.Fatalf("after the start: reloads %+v, counters %+v; want one start, no reload counted", st.Reloads, st.Counters)
	}
	if st.LastReload == nil || st.LastReload.Trigger != api.TriggerStart {
		t.Errorf("last_reload %+v, want the start", st.LastReload)
	}
	c := st.Config
	if c == nil || c.Gen != 1 || len(c.AppliedDigest) != 64 || c.OnDiskDiffers || c.OnDiskDigest != c.AppliedDigest || st.Reloads[0].ConfigDigest != c.AppliedDigest {
		t.Fatalf("config %+v (start digest %s), want generation 1's digest, the same on disk", c, st.Reloads[0].ConfigDigest)
	}
	v1 := c.AppliedDigest
	if g := h.active(st); len(g.Processes) == 0 || g.Processes[0].Role != "leader" {
		t.Errorf("processes %+v, want the generic roles (leader first)", g.Processes)
	}
	wantGauge(t, m, "baton_last_reload_success", 1)
	wantGauge(t, m, "baton_config_on_disk_differs", 0)

	write("version 2\n")
	st = h.status()
	if !st.Config.OnDiskDiffers || st.Config.OnDiskDigest == v1 || st.Config.AppliedDigest != v1 {
		t.Fatalf("config after the file changed: %+v, want on_disk_differs", st.Config)
	}
	v2 := st.Config.OnDiskDigest
	wantGauge(t, m, "baton_config_on_disk_differs", 1)

	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	h.setCheck("line 3: unknown directive 'lisen'\nline 4: and another")
	ctx, cancel := context.WithTimeout(context.Background(), longWait)
	defer cancel()
	if _, err := h.sup.ReloadBy(ctx, api.TriggerSignal); err == nil {
		t.Fatal("reload with a failing check succeeded")
	}
	wantGauge(t, m, "baton_last_reload_success", 0)
	st = h.status()
	if st.Config.AppliedDigest != v2 || st.Config.OnDiskDiffers || st.Config.Gen != 2 {
		t.Errorf("config %+v, want generation 2's digest %s, the same on disk", st.Config, v2)
	}
	want := []string{"1 start ok " + v1[:12], "2 api ok " + v2[:12], "3 sighup failed " + v2[:12]}
	if got := historyLines(st.Reloads); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("history:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if e := st.Reloads[2].Error; !strings.Contains(e, "generation 3") || !strings.Contains(e, "unknown directive 'lisen'") {
		t.Errorf("failed reload's error %q, want the generation and the check's words", e)
	}
	if st.LastReload == nil || st.LastReload.Gen != 3 || st.LastReload.Outcome != api.OutcomeFailed {
		t.Errorf("last_reload %+v, want generation 3 failed", st.LastReload)
	}

	h.setCheck("ok")
	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	wantGauge(t, m, "baton_last_reload_success", 1)
	if n := histogramCount(t, m, "baton_reload_duration_seconds"); n != 3 {
		t.Errorf("reload duration histogram counted %d, want 3 (the start is not a reload)", n)
	}
	got, err := h.sup.Reloads(ctx)
	if err != nil || len(got) != 4 || got[3].Gen != 4 || got[3].Outcome != api.OutcomeOK {
		t.Errorf("Reloads() = %+v, %v; want 4 records ending with generation 4 ok", got, err)
	}
}

func historyLines(recs []api.ReloadRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, fmt.Sprintf("%d %s %s %s", r.Gen, r.Trigger, r.Outcome, r.ConfigDigest[:min(12, len(r.ConfigDigest))]))
	}
	return out
}

func gather(t *testing.T, m *Metrics, name string) *dto.MetricFamily {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f
		}
	}
	return nil
}

func wantGauge(t *testing.T, m *Metrics, name string, want float64) {
	t.Helper()
	f := gather(t, m, name)
	if f == nil || len(f.Metric) != 1 || f.Metric[0].GetGauge().GetValue() != want {
		t.Errorf("%s = %v, want %v", name, f, want)
	}
}

func histogramCount(t *testing.T, m *Metrics, name string) uint64 {
	t.Helper()
	f := gather(t, m, name)
	if f == nil || len(f.Metric) != 1 {
		t.Fatalf("%s: %v", name, f)
	}
	return f.Metric[0].GetHistogram().GetSampleCount()
}

// snakeCase is every JSON key of the status and history answers.
var snakeCase = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// Every key of GET /v1/status and GET /v1/reloads is snake_case (the
// operator's complaint was "nofile": {"Soft", "Hard"}), with every optional
// part present: a failed reload, the config, a draining generation.
func TestControlJSONKeysSnakeCase(t *testing.T) {
	var cfgFile string
	h := newHarness(t, harnessOpts{driver: func(d *fakeDriver) proxyctl.Driver {
		return copiedDriver{fakeDriver: d, file: &cfgFile}
	}})
	cfgFile = filepath.Join(h.dir, "proxy.cfg")
	if err := os.WriteFile(cfgFile, []byte("v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.drv.queueModes("linger=10000") // generation 1 drains for 10 s
	h.start()
	sock := serveControl(t, h)
	if _, err := h.reload(); err != nil {
		t.Fatal(err)
	}
	h.setCheck("broken")
	_, _ = h.reload()
	for _, path := range []string{"/v1/status", "/v1/reloads"} {
		resp := call(t, sock, http.MethodGet, path)
		if resp.code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, resp.code, resp.body)
		}
		var doc any
		if err := json.Unmarshal([]byte(resp.body), &doc); err != nil {
			t.Fatal(err)
		}
		keys := map[string]bool{}
		walkKeys(doc, "", keys)
		for k := range keys {
			if !snakeCase.MatchString(k[strings.LastIndex(k, ".")+1:]) {
				t.Errorf("GET %s: key %s is not snake_case", path, k)
			}
		}
		t.Logf("GET %s: %d distinct keys", path, len(keys))
		for _, want := range map[string][]string{
			"/v1/status":  {"generations.processes.nofile.soft", "generations.processes.role", "generations.drain_started_at", "reloads.trigger", "reloads.config_digest", "reloads.error", "config.on_disk_differs", "last_reload.outcome"},
			"/v1/reloads": {"reloads.trigger", "reloads.outcome", "reloads.duration_ms", "reloads.error"},
		}[path] {
			if !keys[want] {
				t.Errorf("GET %s lacks %s", path, want)
			}
		}
	}
}

// walkKeys records every object key in v by its path (array levels left out).
func walkKeys(v any, prefix string, keys map[string]bool) {
	switch v := v.(type) {
	case map[string]any:
		for k, sub := range v {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			keys[p] = true
			walkKeys(sub, p, keys)
		}
	case []any:
		for _, sub := range v {
			walkKeys(sub, prefix, keys)
		}
	}
}
