package integration

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/batonproxy/baton/batontest"
)

// TestMetricsAfterScriptedSequence checks README's metrics against a known
// history: two reloads that worked, one refused config, one crash of the
// active generation (kill -9 of its HAProxy worker). Every counter must
// say exactly that, and the per-generation and per-listener gauges must
// match what the kernel says.
func TestMetricsAfterScriptedSequence(t *testing.T) {
	maddr := fmt.Sprintf("127.0.0.1:%d", batontest.FreePort(t))
	p := startAccProxy(t, batontest.HAProxyOpts{}, []string{"--metrics", maddr, "--drain-timeout", "30s"}, batontest.StartOptions{})

	for v := 2; v <= 3; v++ {
		p.write(t, v)
		gen, _ := p.reload(t)
		if got := p.get(t); got != strconv.Itoa(v) {
			t.Fatalf("reload to generation %d: X-Gen %q, want %d", gen, got, v)
		}
	}
	p.write(t, 4, "bogus_keyword on")
	res := p.b.CLI("reload", "--json")
	if res.Code != 1 {
		t.Fatalf("reload of a broken config: exit %d, want 1: %s", res.Code, res.Stderr)
	}
	// --json prints the failure too, on stdout.
	var failed struct {
		OK    *bool  `json:"ok"`
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &failed); err != nil || failed.OK == nil || *failed.OK ||
		failed.Code != "exited_before_ready" || !strings.Contains(failed.Error, "bogus_keyword") {
		t.Errorf("reload --json of a broken config printed %q (%v), want {\"ok\":false,\"code\":\"exited_before_ready\",\"error\":\"…bogus_keyword…\"}", res.Stdout, err)
	}
	p.write(t, 3) // restored on disk, not reloaded

	st := p.status(t)
	gen, _ := st.Active()
	workers := st.Gen(gen).Others()
	if len(workers) != 1 {
		t.Fatalf("generation %d: processes %v, want one worker", gen, st.Gen(gen).Pids)
	}
	if err := batontest.SignalPids(workers, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var replacement, leader int
	batontest.Eventually(t, 15*time.Second, func() error {
		st = p.status(t)
		replacement, leader = st.Active()
		if replacement <= gen || len(st.Generations) != 1 {
			return fmt.Errorf("generations %+v: want only a replacement of generation %d", st.Generations, gen)
		}
		return nil
	})
	if got := p.get(t); got != "3" {
		t.Fatalf("replacement answers X-Gen %q, want 3", got)
	}

	fams := scrapeMetrics(t, maddr)
	soft, _, err := batontest.Nofile(leader)
	if err != nil {
		t.Fatal(err)
	}
	somaxconn := procInt(t, "/proc/sys/net/core/somaxconn")
	g := strconv.Itoa(replacement)
	exact := []struct {
		name   string
		labels map[string]string
		want   string
	}{
		{"baton_reloads_total", map[string]string{"result": "ok"}, "2"},
		{"baton_reloads_total", map[string]string{"result": "failed"}, "1"},
		{"baton_child_crashes_total", nil, "1"},
		{"baton_consecutive_crashes", nil, "1"},
		{"baton_generations", map[string]string{"state": "active"}, "1"},
		{"baton_reload_duration_seconds", nil, "3"}, // the histogram's count
		{"baton_generation_nofile", map[string]string{"generation": g, "limit": "soft"}, soft},
		{"baton_listener_backlog", map[string]string{"addr": p.addr}, strconv.Itoa(somaxconn)},
	}
	for _, e := range exact {
		v, ok := metricValue(fams, e.name, e.labels)
		sel := e.name + labelString(e.labels)
		t.Logf("%s = %v (want %s)", sel, v, e.want)
		if !ok {
			t.Errorf("%s: not exported", sel)
		} else if strconv.FormatFloat(v, 'f', -1, 64) != e.want {
			t.Errorf("%s = %v, want %s", sel, v, e.want)
		}
	}
	drains, _ := metricValue(fams, "baton_signals_total", map[string]string{"kind": "drain", "reason": "reload"})
	fds, fdsOK := metricValue(fams, "baton_generation_open_fds", map[string]string{"generation": g})
	queue, queueOK := metricValue(fams, "baton_listener_accept_queue", map[string]string{"addr": p.addr})
	_, buildOK := metricValue(fams, "baton_build_info", nil)
	_, watchOK := fams["baton_watch_events_total"]
	t.Logf("baton_signals_total{drain,reload} = %v; baton_generation_open_fds{%s} = %v; baton_listener_accept_queue = %v (%t); baton_build_info %t; leader pid %d soft nofile %s; somaxconn %d",
		drains, g, fds, queue, queueOK, buildOK, leader, soft, somaxconn)
	if drains < 2 {
		t.Errorf("baton_signals_total{kind=drain,reason=reload} = %v, want at least 2", drains)
	}
	if !fdsOK || fds <= 0 {
		t.Errorf("baton_generation_open_fds{generation=%s} = %v (exported %t), want > 0", g, fds, fdsOK)
	}
	if !queueOK {
		t.Errorf("baton_listener_accept_queue{addr=%s} not exported", p.addr)
	}
	if !buildOK {
		t.Errorf("baton_build_info not exported")
	}
	if watchOK {
		t.Errorf("baton_watch_events_total exported without --watch")
	}
	for _, state := range []string{"checking", "starting", "draining", "stopping", "killed"} {
		if v, _ := metricValue(fams, "baton_generations", map[string]string{"state": state}); v != 0 {
			t.Errorf("baton_generations{state=%s} = %v, want 0", state, v)
		}
	}
	scriptedSequenceLogLevels(t, p, gen, replacement)
}

// scriptedSequenceLogLevels stops the baton of TestMetricsAfterScriptedSequence
// (a clean stop, with --metrics) and checks that each incident of the
// sequence is one line at the level an alerting rule expects, that the
// stop logged no error, and that no line has a stack trace.
func scriptedSequenceLogLevels(t *testing.T, p *accProxy, crashed, replacement int) {
	if err := p.b.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := p.b.ExitCode(30 * time.Second); code != 0 || err != nil {
		t.Fatalf("baton after SIGTERM: exit %d (%v), want 0", code, err)
	}
	log := p.b.Log()
	wantLevel(t, log, "ERROR", 1, "reload failed")
	wantLevel(t, log, "WARN", 1, "active generation exited unexpectedly", fmt.Sprintf(`"gen": %d,`, crashed), `"status": `)
	wantLevel(t, log, "WARN", 1, "replacement generation started after a crash", fmt.Sprintf(`"gen": %d,`, replacement), fmt.Sprintf(`"replaces": %d,`, crashed))
	if alerts := levelLines(log, "ERROR", "proxy output", "[ALERT]", "bogus_keyword"); len(alerts) == 0 {
		t.Errorf("no HAProxy [ALERT] naming bogus_keyword logged at ERROR")
	}
	// Every ERROR is the broken config's: HAProxy's [ALERT]s (the refused
	// config's, and its master's about the killed worker) and the failed
	// reload. The stop, metrics server included, adds none.
	for _, l := range levelLines(log, "ERROR") {
		if !strings.Contains(l, "[ALERT]") && !strings.Contains(l, "reload failed") {
			t.Errorf("unexpected ERROR line: %s", l)
		}
	}
	noStackTraces(t, log)
	t.Logf("log levels: %d ERROR, %d WARN lines; the stop: %q", len(levelLines(log, "ERROR")), len(levelLines(log, "WARN")), batontest.LogLines(log, "baton stopped"))
}

// TestMetricsBadAddress: a --metrics address that is not HOST:PORT is a
// usage error (exit 2); a busy one fails at once (exit 1); both say why,
// and neither starts a proxy or keeps the listening socket.
func TestMetricsBadAddress(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	bin := batontest.BatonBinary(t)
	for _, c := range []struct {
		addr string
		code int
		msg  string
	}{
		{"nonsense", 2, "want [HOST]:PORT"},
		{"127.0.0.1", 2, "want [HOST]:PORT"},
		{busy.Addr().String(), 1, "address already in use"},
	} {
		port := batontest.FreePort(t)
		dir := batontest.ShortTempDir(t)
		cfg := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(cfg, []byte(batontest.HAProxyConfig(port, 1, nil, nil)), 0o644); err != nil {
			t.Fatal(err)
		}
		res := batontest.RunCLIWith(batontest.RunOpts{Timeout: 20 * time.Second}, bin, "run", "-c", filepath.Join(dir, "b.sock"),
			"-l", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--metrics", c.addr, "--", haproxy, "-f", cfg)
		socks, _ := batontest.ListenSockets(port)
		t.Logf("--metrics %s: exit %d in %s: %s", c.addr, res.Code, res.Took.Round(time.Millisecond), strings.TrimSpace(res.Stderr))
		if res.Code != c.code || !strings.Contains(res.Stderr, "--metrics") || !strings.Contains(res.Stderr, c.msg) {
			t.Errorf("--metrics %s: exit %d, stderr %q; want exit %d naming --metrics and %q", c.addr, res.Code, res.Stderr, c.code, c.msg)
		}
		if len(socks) != 0 {
			t.Errorf("--metrics %s: port %d still has LISTEN sockets %v after baton exited", c.addr, port, socks)
		}
	}
}

// scrapeMetrics reads addr's /metrics in the Prometheus text format.
func scrapeMetrics(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// metricValue is the value of the first sample of family name whose labels
// include labels (a histogram's value is its sample count).
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range labels {
			if have[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		case m.Untyped != nil:
			return m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// labelString renders labels as a selector: {k="v",...}, sorted.
func labelString(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	var parts []string
	for k, v := range labels {
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func procInt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}
