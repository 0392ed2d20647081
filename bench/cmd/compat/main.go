// Command compat writes docs/compat.md from the version matrix's test
// results: one `go test -json` stream per proxy version (scripts/matrix
// names each NAME-VERSION.json), each check a set of integration tests that
// ran with that version selected. A check passes when every one of its
// tests that ran passed; its figures are the tests' "compat: " log lines.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// check is one column of the matrix: the tests that show it, per proxy.
// skipOK: a version may lack the feature (a build without QUIC), and its
// tests then skip themselves; "skipped" is no failure there, while a test
// that never ran is one.
type check struct {
	name           string
	haproxy, nginx []string
	skipOK         bool
}

var checks = []check{
	{"storm, new connections", []string{"TestReloadStorm/haproxy"}, []string{"TestReloadStorm/nginx"}, false},
	{"storm, keep-alive", []string{"TestHAProxyReloadStorm/keep-alive"}, []string{"TestNginxKeepAliveMinTimeout", "TestNginxKeepAliveFloor/keepalive-30s"}, false},
	{"broken config", []string{"TestBrokenConfigReload/haproxy", "TestHAProxyStartFailure/reload", "TestHAProxyStartFailure/first-start"}, []string{"TestBrokenConfigReload/nginx"}, false},
	{"kill -9", []string{"TestHAProxyKill9ServingProcessUnderLoad/worker", "TestHAProxyKill9ServingProcessUnderLoad/master"}, []string{"TestNginxKill9GenerationUnderLoad"}, false},
	{"drain deadline", []string{"TestHAProxyDrainDeadlineAndKill/hard-stop-ends-haproxy", "TestHAProxyDrainDeadlineAndKill/stopped-generation-is-killed"}, []string{"TestNginxDrainDeadline"}, false},
	{"NOFILE", []string{"TestNofile/rlimit-flag/haproxy"}, []string{"TestNofile/rlimit-flag/nginx"}, false},
	{"stock config", []string{"TestHAProxyStockConfig"}, []string{"TestNginxStockConfig"}, false},
	{"HTTP/3 listener", []string{"TestQUICListenerHAProxy"}, []string{"TestQUICListenerNginx"}, true},
}

// event is one line of `go test -json`.
type event struct {
	Time    time.Time
	Action  string
	Test    string
	Output  string
	Elapsed float64
}

// testResult is what one test did.
type testResult struct {
	action  string // pass, fail, skip; "" when it never ended
	elapsed float64
	figures []string
	output  []string
}

// run is one proxy version's results.
type run struct {
	proxy, version string
	tests          map[string]*testResult
	start, end     time.Time
}

func main() {
	out := flag.String("out", "docs/compat.md", "where to write the table")
	machine := flag.String("machine", "", "one line describing the machine the matrix ran on")
	flag.Parse()
	var runs []*run
	for _, path := range flag.Args() {
		r, err := readRun(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "compat:", err)
			os.Exit(1)
		}
		runs = append(runs, r)
	}
	slices.SortFunc(runs, func(a, b *run) int {
		if c := strings.Compare(a.proxy, b.proxy); c != 0 {
			return c
		}
		return compareVersions(a.version, b.version)
	})
	text, failed := render(runs, *machine)
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "compat:", err)
		os.Exit(1)
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "compat: %d checks failed (%s)\n", failed, *out)
		os.Exit(1)
	}
}

func readRun(path string) (*run, error) {
	name := strings.TrimSuffix(filepath.Base(path), ".json")
	proxy, version, ok := strings.Cut(name, "-")
	if !ok {
		return nil, fmt.Errorf("%s: want NAME-VERSION.json", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &run{proxy: proxy, version: version, tests: map[string]*testResult{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			continue
		}
		if r.start.IsZero() || e.Time.Before(r.start) {
			r.start = e.Time
		}
		r.end = e.Time
		if e.Test == "" {
			continue
		}
		tr := r.tests[e.Test]
		if tr == nil {
			tr = &testResult{}
			r.tests[e.Test] = tr
		}
		switch e.Action {
		case "pass", "fail", "skip":
			tr.action, tr.elapsed = e.Action, e.Elapsed
		case "output":
			line := strings.TrimSpace(e.Output)
			if _, fig, ok := strings.Cut(line, "compat: "); ok {
				tr.figures = append(tr.figures, fig)
			}
			if len(tr.output) < 200 {
				tr.output = append(tr.output, strings.TrimRight(e.Output, "\n"))
			}
		}
	}
	return r, sc.Err()
}

// cell judges one check of one run: pass, fail, "skipped" (every test
// ran and skipped itself) or "not run" (a test never ran).
func (r *run) cell(c check) (verdict string, figures []string) {
	names := c.haproxy
	if r.proxy == "nginx" {
		names = c.nginx
	}
	ran, skipped, failed := 0, 0, false
	for _, n := range names {
		tr := r.tests[n]
		if tr == nil {
			continue
		}
		if tr.action == "skip" {
			skipped++
			continue
		}
		ran++
		if tr.action != "pass" {
			failed = true
		}
		for _, f := range tr.figures {
			figures = append(figures, fmt.Sprintf("%s: %s", shortName(n), f))
		}
		if tr.action != "pass" {
			figures = append(figures, fmt.Sprintf("%s: %s", shortName(n), failureLine(tr)))
		}
	}
	switch {
	case ran == 0 && skipped == len(names):
		return "skipped", nil
	case ran == 0:
		return "not run", nil
	case failed:
		return "FAIL", figures
	}
	return "pass", figures
}

func failureLine(tr *testResult) string {
	for _, l := range tr.output {
		if strings.Contains(l, "_test.go:") && !strings.Contains(l, "compat: ") {
			return "failed: " + strings.TrimSpace(l)
		}
	}
	if tr.action == "" {
		return "did not finish"
	}
	return "failed"
}

func shortName(test string) string {
	return strings.TrimPrefix(test, "Test")
}

func render(runs []*run, machine string) (string, int) {
	var b strings.Builder
	b.WriteString("# Compatibility matrix\n\n")
	b.WriteString("Written by `make matrix` (scripts/matrix), which `.ci/run` runs after `make test`: the\n")
	b.WriteString("essential integration tests, run once for every proxy version — Debian 12's packages and the\n")
	b.WriteString("upstream releases `scripts/proxies` builds — with real HAProxy and nginx processes, real\n")
	b.WriteString("sockets and real signals on 127.0.0.1. Storms here are 100-ms reload storms of at least 50\n")
	b.WriteString("acknowledged reloads under 16 clients (1,500 req/s); `make test` runs the same tests on\n")
	b.WriteString("Debian's proxies with at least 100. A check passes when every test behind it passed; the\n")
	b.WriteString("figures are the tests' own measurements.\n\n")
	if machine != "" {
		fmt.Fprintf(&b, "Machine: %s\n\n", machine)
	}
	b.WriteString("| proxy | version |")
	for _, c := range checks {
		fmt.Fprintf(&b, " %s |", c.name)
	}
	b.WriteString(" time |\n|---|---|")
	for range checks {
		b.WriteString("---|")
	}
	b.WriteString("---:|\n")
	failed := 0
	for _, r := range runs {
		fmt.Fprintf(&b, "| %s | %s |", r.proxy, r.version)
		for _, c := range checks {
			v, _ := r.cell(c)
			if v != "pass" && !(v == "skipped" && c.skipOK) {
				failed++
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		fmt.Fprintf(&b, " %s |\n", r.end.Sub(r.start).Round(time.Second))
	}
	b.WriteString("\nWhat each check is (the tests are in `integration/`):\n\n")
	b.WriteString("- **storm, new connections**: a new connection per request; 0 failed, 0 stale answers (an older generation answering a connection made after the reload was acknowledged), exactly baton's one LISTEN socket on every 20-ms sample, baton's fd count flat.\n")
	b.WriteString("- **storm, keep-alive**: the same on keep-alive connections. HAProxy with `option idle-close-on-response`: 0 failed. nginx 1.27.4+ with `keepalive_min_timeout 10s`: 0 failed. nginx before 1.27.4 closes idle keep-alive connections when it drains, losing the request a client sends at that moment: at most one per connection per reload and nothing else (the floor, asserted). On 1.27.4+ the floor test (keep-alive without `keepalive_min_timeout`) runs too and is reported: it asserts only the kinds of failure there.\n")
	b.WriteString("- **broken config**: a reload to a config the proxy rejects fails with exit status 1 and the proxy's own error text (file:line), the serving generation keeps serving, 0 failed requests; the fixed config then reloads. HAProxy also: a config `haproxy -c` accepts but the starting process fails on (a stats socket in a missing directory; on 3.1+ the worker fails and its master exits) fails the reload as soon as the generation exits, with HAProxy's words, and `baton run` exits non-zero at a first start.\n")
	b.WriteString("- **kill -9**: under load, SIGKILL to the HAProxy worker, to the HAProxy master, or to every process of the nginx generation: baton starts a replacement with the last good config; 0 connections refused (they wait in the accept queue baton keeps), at most the in-flight requests fail.\n")
	b.WriteString("- **drain deadline**: a generation holding a request at its drain deadline is hard stopped (and killed after the grace when it cannot act on the stop: SIGSTOPped), and is gone within deadline + grace.\n")
	b.WriteString("- **NOFILE**: `--rlimit nofile=4096:8192` from a shell whose soft limit is 1024: every process of the generation reads 4096/8192 back from /proc, after a reload too.\n")
	b.WriteString("- **stock config**: Debian's stock `haproxy.cfg` / `nginx.conf`, copied with a loopback frontend/server: 100 reloads under load, 0 failed; for nginx the user's `pid` file names the serving master after every reload.\n")
	b.WriteString("- **HTTP/3 listener**: a QUIC listener held as baton's steered group (its anchor and one member per generation): HTTP/3 answered before and after reloads, with a request held across one, after a kill -9 of baton (with and without its state file) and after an upgrade; every unconnected UDP socket on the address is baton's, old members go with their generations; \"skipped\" on builds without QUIC (HAProxy without `USE_QUIC`, nginx without `--with-http_v3_module`), and not counted as a failure there.\n")
	b.WriteString("\n## Figures\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "\n### %s %s\n\n", r.proxy, r.version)
		for _, c := range checks {
			v, figs := r.cell(c)
			fmt.Fprintf(&b, "- %s: **%s**", c.name, v)
			if len(figs) == 1 {
				fmt.Fprintf(&b, " — %s\n", figs[0])
				continue
			}
			b.WriteString("\n")
			for _, f := range figs {
				fmt.Fprintf(&b, "  - %s\n", f)
			}
		}
	}
	return b.String(), failed
}

// compareVersions orders "2.6.12" before "2.8.0" before "3.0.0".
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x - y
		}
	}
	return len(as) - len(bs)
}
