package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/batonproxy/baton/internal/testbed"
)

// bigConfig is a large HAProxy config: the bench's usual frontend (200,
// X-Gen: VERSION on the first port) plus either many backends or, on a
// second port, a TLS bind loading many certificates through a crt-list.
type bigConfig struct {
	// Name is the scenario's id part: "big-backends" or "big-certs".
	Name string
	// What describes the config in tables.
	What string
	// Backends is the number of `backend` sections (one server each, on
	// a loopback port nothing listens on; no health checks).
	Backends int
	// CrtList is the absolute path of a crt-list file naming Certs
	// certificates, each with its own SNI name; empty without TLS.
	CrtList string
	Certs   int
	// Global is added to the global section (first, so that settings
	// such as tune.renice.startup apply before the rest is parsed).
	Global []string
}

// tls reports whether the config has a TLS bind (a second port).
func (c bigConfig) tls() bool { return c.CrtList != "" }

// render is the config of version on ports (ports[1] is the TLS port).
func (c bigConfig) render(ports []int, version int) string {
	global := append(append([]string{}, c.Global...), testbed.KeepAliveSafe.Global...)
	var b strings.Builder
	b.WriteString(testbed.HAProxyConfig(ports[0], version, global, testbed.KeepAliveSafe.Defaults))
	if c.Backends > 0 {
		b.WriteString("    default_backend be00001\n")
	}
	if c.tls() {
		fmt.Fprintf(&b, "\nfrontend fe_tls\n    bind 127.0.0.1:%d ssl crt-list %s\n", ports[1], c.CrtList)
		fmt.Fprintf(&b, "    http-request return status 200 content-type text/plain hdr X-Gen %d string \"generation %d\\n\"\n", version, version)
	}
	for i := 1; i <= c.Backends; i++ {
		// 127.0.0.1:9 (discard): loopback only, nothing to resolve.
		fmt.Fprintf(&b, "\nbackend be%05d\n    server s1 127.0.0.1:9\n", i)
	}
	return b.String()
}

// writeCerts writes n self-signed EC P-256 certificates (each a PEM file
// holding the certificate and its key, for the SNI name certName(i)) into
// dir and a crt-list naming them, and returns the crt-list's path.
func writeCerts(dir string, n int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	var list strings.Builder
	for i := 1; i <= n; i++ {
		name := certName(i)
		pemBytes, err := selfSigned(name, int64(i))
		if err != nil {
			return "", fmt.Errorf("certificate %d: %w", i, err)
		}
		path := filepath.Join(dir, fmt.Sprintf("c%05d.pem", i))
		if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
			return "", err
		}
		fmt.Fprintf(&list, "%s %s\n", path, name)
	}
	crtList := filepath.Join(dir, "crt-list.txt")
	return crtList, os.WriteFile(crtList, []byte(list.String()), 0o644)
}

// certName is the SNI name of certificate i.
func certName(i int) string { return fmt.Sprintf("h%05d.bench.test", i) }

// selfSigned is a PEM certificate for name followed by its EC key.
func selfSigned(name string, serial int64) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...), nil
}
