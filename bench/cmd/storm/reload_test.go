package main

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out, version string
		sync         bool
	}{
		{"HAProxy version 2.6.12-1+deb12u4 2025/04/09 - https://haproxy.org/\nStatus: long-term", "2.6.12", false},
		{"HAProxy version 3.0.0-5590ada47 2024/05/29 - https://haproxy.org/", "3.0.0", false},
		{"HAProxy version 3.1.0 2024/11/26 - https://haproxy.org/", "3.1.0", true},
		{"HAProxy version 3.2.0-e134140d2 2025/05/28 - https://haproxy.org/", "3.2.0", true},
		{"HAProxy version 3.4.0-64a335366 2026/05/27 - https://haproxy.org/", "3.4.0", true},
		{"nginx version: nginx/1.22.1", "1.22.1", false},
	} {
		p, err := parseVersion(tc.out)
		if err != nil {
			t.Errorf("%q: %v", tc.out, err)
			continue
		}
		if p.Version != tc.version || p.syncReload() != tc.sync || p.hasRenice() != tc.sync {
			t.Errorf("%q: version %q sync %v, want %q %v", tc.out, p.Version, p.syncReload(), tc.version, tc.sync)
		}
	}
	if _, err := parseVersion("bash: haproxy: command not found"); err == nil {
		t.Error("no version: no error")
	}
}

func TestCheckReloadAnswer(t *testing.T) {
	ok := "Success=1\n--\n[NOTICE]   (1) : Initializing new worker (2)\n[NOTICE]   (1) : Loading success.\n"
	if err := checkReloadAnswer(ok); err != nil {
		t.Errorf("success: %v", err)
	}
	for _, bad := range []string{"", "Success=0\n--\nAnother reload is still in progress.\n", "master> "} {
		if err := checkReloadAnswer(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestBigConfigRender(t *testing.T) {
	c := bigConfig{Backends: 3, Global: []string{"tune.renice.startup 10"}}
	cfg := c.render([]int{8001}, 7)
	for _, want := range []string{"resolvers default\n    nameserver local 127.0.0.1:53", "bind 127.0.0.1:8001\n", "hdr X-Gen 7 ",
		"default_backend be00001\n", "backend be00003\n    server s1 127.0.0.1:9\n", "global\n    maxconn 4096\n    httpclient.ssl.verify none\n    tune.renice.startup 10\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	if n := strings.Count(cfg, "\nbackend "); n != 3 {
		t.Errorf("%d backends, want 3", n)
	}
	if strings.Contains(cfg, "crt-list") {
		t.Errorf("TLS bind without certificates:\n%s", cfg)
	}
}

func TestWriteCerts(t *testing.T) {
	dir := t.TempDir()
	list, err := writeCerts(filepath.Join(dir, "certs"), 3)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 {
		t.Fatalf("crt-list has %d lines, want 3:\n%s", len(lines), b)
	}
	for i, line := range lines {
		path, sni, ok := strings.Cut(line, " ")
		if !ok || !filepath.IsAbs(path) || sni != certName(i+1) {
			t.Errorf("line %q: want an absolute path and SNI %s", line, certName(i+1))
			continue
		}
		pemBytes, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(pemBytes, pemBytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if pair.Leaf == nil || pair.Leaf.Subject.CommonName != sni || len(pair.Leaf.DNSNames) != 1 || pair.Leaf.DNSNames[0] != sni {
			t.Errorf("%s: certificate not for %s", path, sni)
		}
	}
	c := bigConfig{CrtList: list, Certs: 3}
	if cfg := c.render([]int{8001, 8002}, 1); !strings.Contains(cfg, "bind 127.0.0.1:8002 ssl crt-list "+list+"\n") {
		t.Errorf("no TLS bind:\n%s", cfg)
	}
}

func TestInReloads(t *testing.T) {
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	reloads := []reloadRecord{{Start: ms(100), End: ms(200)}, {Start: ms(500), End: ms(600)}}
	samples := []load.Sample{
		sample(0, 50, load.OK, "1"),          // before
		sample(90, 20, load.OK, "1"),         // overlaps the start
		sample(150, 10, load.OK, "1"),        // inside
		sample(190, 400, load.OK, "1"),       // spans both
		sample(300, 10, load.OK, "2"),        // between
		sample(550, 5, load.ReadTimeout, ""), // failed: not counted
		sample(599, 30, load.OK, "2"),        // overlaps the end
	}
	got := inReloads(samples, reloads)
	want := []time.Duration{20 * time.Millisecond, 10 * time.Millisecond, 400 * time.Millisecond, 30 * time.Millisecond}
	if len(got) != len(want) {
		t.Fatalf("inReloads = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("inReloads = %v, want %v", got, want)
		}
	}
}

func TestVersionRows(t *testing.T) {
	st := func(p50 float64) durStats { return durStats{N: 5, P50: p50, P99: p50} }
	r := &benchReport{Latency: []latencyRow{
		{ID: "latency/baton-haproxy", Proxy: "HAProxy 2.6.12", Ack: st(180)},
		{ID: "latency/haproxy-mw", Proxy: "HAProxy 2.6.12", Ack: st(67), AckKind: "listed"},
		{ID: "latency/ref-haproxy-start", Proxy: "HAProxy 2.6.12", Ack: st(90)},
		{ID: "latency/baton-nginx", Proxy: "nginx 1.22.1", Ack: st(120)},
		{ID: "latency/ref-nginx-start", Proxy: "nginx 1.22.1", Ack: st(100)},
		{ID: "latency/baton-generic", Ack: st(50)},
		{ID: "latency/baton-haproxy@3.2.0", Proxy: "HAProxy 3.2.0", Ack: st(120)},
		{ID: "latency/haproxy-mw@3.2.0", Proxy: "HAProxy 3.2.0", Ack: st(60), AckKind: "ready", AckReady: true},
		{ID: "latency/ref-haproxy-start@3.2.0", Proxy: "HAProxy 3.2.0", Ack: st(80)},
	}}
	rows := versionRows(r)
	want := []struct {
		proxy, against string
		ratio          float64
	}{{"HAProxy 2.6.12", "start", 2}, {"nginx 1.22.1", "start", 1.2}, {"HAProxy 3.2.0", "native reload", 2}}
	if len(rows) != len(want) {
		t.Fatalf("rows %+v", rows)
	}
	for i, w := range want {
		if rows[i].Proxy != w.proxy || rows[i].Against != w.against || rows[i].Ratio != w.ratio {
			t.Errorf("row %d = %+v, want %+v", i, rows[i], w)
		}
	}
	if s := versionTable(r); !strings.Contains(s, "**2.00** (against the native reload)") {
		t.Errorf("table:\n%s", s)
	}
}
