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

// ownedUDPListener checks a steered UDP address (docs/design.md, "UDP and
// QUIC listeners"): baton holds every unconnected UDP socket bound to
// 127.0.0.1:port (its anchor and one member per live generation: no socket
// it did not create), there are want of them, and status names the anchor.
// It returns the anchor's inode.
func ownedUDPListener(t *testing.T, b *batontest.Baton, port, want int) uint64 {
	t.Helper()
	st, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	if bad := udpGroupProblem(st.Pid, port, want); bad != "" {
		t.Fatalf("UDP 127.0.0.1:%d: %s", port, bad)
	}
	for _, l := range st.Listeners {
		if l.Addr == fmt.Sprintf("127.0.0.1:%d", port) { // the tests give TCP another port
			return l.Inode
		}
	}
	t.Fatalf("status lists no UDP listener on 127.0.0.1:%d: %+v", port, st.Listeners)
	return 0
}

// udpGroupProblem says what is wrong with the unconnected UDP sockets on
// 127.0.0.1:port ("" if nothing): one baton does not hold (read again, so
// that a member baton just closed after its generation exited is not
// counted), or a count other than want (0: any).
func udpGroupProblem(batonPid, port, want int) string {
	un, _, err := readUDPSockets(port)
	if err != nil {
		return err.Error()
	}
	held, err := socketInodes(batonPid)
	if err != nil {
		return err.Error()
	}
	var foreign []uint64
	for _, s := range un {
		if !held[s.inode] {
			foreign = append(foreign, s.inode)
		}
	}
	if len(foreign) > 0 {
		again, _, err := readUDPSockets(port)
		if err != nil {
			return err.Error()
		}
		still := map[uint64]bool{}
		for _, s := range again {
			still[s.inode] = true
		}
		for _, in := range foreign {
			if still[in] {
				return fmt.Sprintf("unconnected socket inode %d is not baton's (not in /proc/%d/fd); all: %+v", in, batonPid, un)
			}
		}
	}
	if want > 0 && len(un) != want {
		return fmt.Sprintf("%d unconnected sockets %+v, want %d (baton's anchor and one member per generation)", len(un), un, want)
	}
	return ""
}

// socketInodes is the set of socket inodes pid holds.
func socketInodes(pid int) (map[uint64]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		if v, ok := strings.CutPrefix(target, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(v, "]"), 10, 64); err == nil {
				out[n] = true
			}
		}
	}
	return out, nil
}

// waitUDPGroup waits up to 10 s for want unconnected sockets, all baton's,
// on 127.0.0.1:port (old generations' members go when they exit).
func waitUDPGroup(t *testing.T, b *batontest.Baton, port, want int) {
	t.Helper()
	var bad string
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		st, err := b.Status()
		if err != nil {
			t.Fatal(err)
		}
		if bad = udpGroupProblem(st.Pid, port, want); bad == "" {
			return
		}
	}
	t.Errorf("UDP 127.0.0.1:%d after 10 s: %s", port, bad)
}
