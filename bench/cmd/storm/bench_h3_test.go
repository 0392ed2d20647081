package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/batonproxy/baton/bench/load"
)

func TestH3Configs(t *testing.T) {
	ha := h3HAProxyConfig(8443, 7, "/tmp/c.pem")
	for _, want := range []string{
		"    limited-quic\n",
		"resolvers default\n    nameserver local 127.0.0.1:53\n",
		"    bind 127.0.0.1:8443\n",
		"    bind quic4@127.0.0.1:8443 ssl crt /tmp/c.pem alpn h3\n",
		"hdr X-Gen 7 ",
	} {
		if !strings.Contains(ha, want) {
			t.Errorf("HAProxy config lacks %q:\n%s", want, ha)
		}
	}
	if ng := h3NginxConfig(8443, 7, "/tmp/c.pem", true, 2); !strings.Contains(ng, "listen 127.0.0.1:8443 quic reuseport;\n") {
		t.Errorf("no reuseport:\n%s", ng)
	}
	ng := h3NginxConfig(8443, 7, "/tmp/c.pem", false, 2)
	for _, want := range []string{
		"listen 127.0.0.1:8443;\n",
		"listen 127.0.0.1:8443 quic;\n",
		"http3 on;\n",
		"ssl_certificate /tmp/c.pem;\n",
		"ssl_certificate_key /tmp/c.pem;\n",
		"add_header X-Gen 7 always;",
	} {
		if !strings.Contains(ng, want) {
			t.Errorf("nginx config lacks %q:\n%s", want, ng)
		}
	}
}

func TestWriteLoopbackCert(t *testing.T) {
	path, err := writeLoopbackCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, rest := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("no certificate first in %s", path)
	}
	if key, _ := pem.Decode(rest); key == nil || key.Type != "EC PRIVATE KEY" {
		t.Fatalf("no key after the certificate in %s", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
}

func TestRefusalText(t *testing.T) {
	err := errors.New("baton exited before serving: exit status 1\n" +
		`{"level":"info","msg":"starting"}` + "\n" +
		`{"level":"error","msg":"start generation 1","error":"quic4@: UDP/QUIC listeners are not supported yet"}` + "\n")
	if got, want := refusalText(err), "start generation 1: quic4@: UDP/QUIC listeners are not supported yet"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := refusalText(errors.New("no log\nmore")); got != "no log" {
		t.Errorf("got %q", got)
	}
}

func TestRunFlagsH3(t *testing.T) {
	parse := func(args ...string) (load.Config, error) {
		o, err := parseRunFlags(append([]string{"--reload", "true"}, args...), io.Discard)
		if err != nil {
			return load.Config{}, err
		}
		return o.loadConfig()
	}
	cfg, err := parse("--url", "https://127.0.0.1/x?y=1", "--proto", "h3", "--insecure", "--mode", "keepalive")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proto != load.HTTP3 || cfg.Addr != "127.0.0.1:443" || cfg.Path != "/x?y=1" || !cfg.InsecureSkipVerify || cfg.Mode != load.KeepAlive {
		t.Errorf("got %+v", cfg)
	}
	for _, args := range [][]string{
		{"--url", "http://127.0.0.1:8080/", "--proto", "h3"},
		{"--url", "http://127.0.0.1:8080/", "--insecure"},
		{"--url", "https://127.0.0.1/", "--proto", "h2"},
	} {
		if _, err := parse(args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	if cfg, err := parse("--url", "http://127.0.0.1:8080/"); err != nil || cfg.Proto != load.HTTP1 {
		t.Errorf("http1 default: %+v, %v", cfg, err)
	}
}

func TestFreeDualPort(t *testing.T) {
	p, err := freeDualPort()
	if err != nil {
		t.Fatal(err)
	}
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
	if err != nil {
		t.Fatalf("port %d not free for UDP: %v", p, err)
	}
	_ = u.Close()
}

// Every generated docs/BENCHMARKS.md keeps the recorded HTTP/3 section,
// which `make bench` does not measure again.
func TestRenderDocKeepsH3Section(t *testing.T) {
	doc := renderDoc(&benchReport{}, "")
	i := strings.Index(doc, "## HTTP/3 reloads (measured before baton supports QUIC)\n")
	j := strings.Index(doc, "## Against your own setup\n")
	if i < 0 || j < i {
		t.Fatalf("no HTTP/3 section before the own-setup one:\n%s", doc)
	}
	if !strings.Contains(doc, "--proto h3") {
		t.Error("the own-setup text does not mention --proto h3")
	}
}
