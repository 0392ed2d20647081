package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"

	"github.com/batonproxy/baton/batontest"
)

// requireQUIC returns the proxy binary the tests run (batontest.RequireBinary)
// if it was built with QUIC, and skips the test otherwise, also under CI: a
// build without QUIC (Debian's HAProxy 2.6 and nginx 1.22) lacks a feature,
// it is not a missing binary.
func requireQUIC(t *testing.T, name string) string {
	t.Helper()
	bin := batontest.RequireBinary(t, name)
	flag, want := "-vv", "USE_QUIC=1"
	if name == "nginx" {
		flag, want = "-V", "--with-http_v3_module"
	}
	out, err := exec.Command(bin, flag).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, flag, err, out)
	}
	if !strings.Contains(string(out), want) {
		t.Skipf("%s was built without QUIC (%s %s does not show %s)", bin, name, flag, want)
	}
	return bin
}

// quicCert writes a self-signed certificate for 127.0.0.1 into dir: the
// certificate, its key, and both in one file (HAProxy's crt).
func quicCert(t *testing.T, dir string) (cert, key, both string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cp := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kp := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cert, key, both = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "both.pem")
	for p, b := range map[string][]byte{cert: cp, key: kp, both: append(append([]byte{}, cp...), kp...)} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, both
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// h3Client is an HTTP/3 client over one QUIC connection (quic-go).
type h3Client struct {
	tr *http3.Transport
	c  *http.Client
}

func newH3Client() *h3Client {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{http3.NextProtoH3}}}
	return &h3Client{tr: tr, c: &http.Client{Transport: tr, Timeout: 20 * time.Second}}
}

// get sends one GET of path over HTTP/3 and returns the status, X-Gen and
// body.
func (h *h3Client) get(port int, path string) (batontest.HTTPResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", port, path), nil)
	if err != nil {
		return batontest.HTTPResult{}, err
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return batontest.HTTPResult{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.Proto != "HTTP/3.0" {
		return batontest.HTTPResult{}, fmt.Errorf("answered over %s", resp.Proto)
	}
	return batontest.HTTPResult{Status: resp.StatusCode, Gen: resp.Header.Get("X-Gen"), Body: string(body)}, err
}

// close ends the QUIC connection (CONNECTION_CLOSE), so that a draining
// generation need not wait for it.
func (h *h3Client) close() { _ = h.tr.Close() }

// h3Get sends one GET over a QUIC connection of its own and closes it.
func h3Get(port int) (batontest.HTTPResult, error) {
	h := newH3Client()
	defer h.close()
	return h.get(port, "/")
}

// udpSocket is one line of /proc/net/udp.
type udpSocket struct {
	local, remote string // hex, as the kernel prints them
	inode         uint64
}

// udpSocketsOn lists the IPv4 UDP sockets bound to 127.0.0.1:port: the
// unconnected ones (a listener: the remote address is 0) and the connected
// ones (HAProxy's per-connection QUIC sockets).
func udpSocketsOn(t *testing.T, port int) (unconnected, connected []udpSocket) {
	t.Helper()
	unconnected, connected, err := readUDPSockets(port)
	if err != nil {
		t.Fatal(err)
	}
	return unconnected, connected
}

// readUDPSockets is udpSocketsOn for a goroutine that cannot fail the test.
func readUDPSockets(port int) (unconnected, connected []udpSocket, err error) {
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	want := fmt.Sprintf("%s:%04X", hex.EncodeToString([]byte{1, 0, 0, 127}), port) // little-endian 127.0.0.1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:tm retrnsmt uid timeout inode
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 || !strings.EqualFold(fs[1], want) {
			continue
		}
		inode, err := strconv.ParseUint(fs[9], 10, 64)
		if err != nil {
			continue
		}
		s := udpSocket{local: fs[1], remote: fs[2], inode: inode}
		if fs[2] == "00000000:0000" {
			unconnected = append(unconnected, s)
		} else {
			connected = append(connected, s)
		}
	}
	return unconnected, connected, sc.Err()
}

// ownedUDPListener checks that exactly one unconnected UDP socket is bound
// to 127.0.0.1:port (no second bind) and that baton holds it; it returns
// its inode.
func ownedUDPListener(t *testing.T, b *batontest.Baton, port int) uint64 {
	t.Helper()
	un, _ := udpSocketsOn(t, port)
	if len(un) != 1 {
		t.Fatalf("UDP 127.0.0.1:%d: %d unconnected sockets %+v, want one (baton's)", port, len(un), un)
	}
	if !batonHolds(t, b, un[0].inode) {
		t.Fatalf("UDP 127.0.0.1:%d: socket inode %d is not in /proc/%d/fd (baton)", port, un[0].inode, b.Pid())
	}
	return un[0].inode
}
