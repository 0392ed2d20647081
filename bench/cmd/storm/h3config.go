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
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// h3HAProxyConfig answers on 127.0.0.1:port over HTTP/3 (quic4@, ALPN h3,
// the certificate and key in crt) and, for the bench's readiness probe,
// over HTTP/1.1 on the TCP port of the same number, with 200 and X-Gen:
// version. `limited-quic` lets a HAProxy built with
// USE_QUIC_OPENSSL_COMPAT (OpenSSL without a QUIC API) serve QUIC.
func h3HAProxyConfig(port, version int, crt string) string {
	var b strings.Builder
	b.WriteString("global\n    maxconn 4096\n    httpclient.ssl.verify none\n    limited-quic\n")
	b.WriteString("\nresolvers default\n    nameserver local 127.0.0.1:53\n\n")
	b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n    option idle-close-on-response\n")
	fmt.Fprintf(&b, "\nfrontend fe\n    bind 127.0.0.1:%d\n    bind quic4@127.0.0.1:%d ssl crt %s alpn h3\n", port, port, crt)
	fmt.Fprintf(&b, "    http-request return status 200 content-type text/plain hdr X-Gen %d string \"generation %d\\n\"\n", version, version)
	return b.String()
}

// h3NginxConfig is the nginx equivalent: `listen … quic` (with
// reuseport: a UDP socket per worker, packets routed to the worker of
// their connection) and `http3 on` beside a plain TCP listen on the same
// port number. worker_connections is 16384: nginx counts a QUIC
// connection until it has drained, and 1,024 are used up within a second
// of new-connection load.
func h3NginxConfig(port, version int, crt string, reuseport bool, workers int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "worker_processes %d;\nerror_log stderr warn;\n", workers)
	b.WriteString("events { worker_connections 16384; }\nhttp {\n    access_log off;\n    keepalive_timeout 30s;\n")
	quic := "quic"
	if reuseport {
		quic += " reuseport"
	}
	fmt.Fprintf(&b, "    server {\n        listen 127.0.0.1:%d;\n        listen 127.0.0.1:%d %s;\n        http3 on;\n", port, port, quic)
	fmt.Fprintf(&b, "        ssl_certificate %s;\n        ssl_certificate_key %s;\n", crt, crt)
	fmt.Fprintf(&b, "        location / { add_header X-Gen %d always; return 200 \"generation %d\\n\"; }\n    }\n}\n", version, version)
	return b.String()
}

// writeLoopbackCert writes dir/loopback.pem: a self-signed EC P-256
// certificate for the IP 127.0.0.1 followed by its key. HAProxy's crt and
// nginx's ssl_certificate(_key) read it; the load client trusts it as its
// CA file.
func writeLoopbackCert(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	out = append(out, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})...)
	path := filepath.Join(dir, "loopback.pem")
	return path, os.WriteFile(path, out, 0o600)
}
