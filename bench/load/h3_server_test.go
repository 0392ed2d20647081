package load

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// testCert is a self-signed certificate for 127.0.0.1 and the PEM file
// holding it, which the client trusts as CAFile.
type testCert struct {
	cert tls.Certificate
	file string
}

func newTestCert(t *testing.T) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "cert.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return testCert{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, file: file}
}

// h3Server is an in-process HTTP/3 server on 127.0.0.1 with a UDP socket
// and a QUIC transport of its own.
type h3Server struct {
	addr string
	udp  *net.UDPConn
	tr   *quic.Transport
	srv  *http3.Server
	wg   sync.WaitGroup
	once sync.Once
}

// startH3Server serves h on 127.0.0.1:port (0: any port). key, when set,
// lets the transport answer packets of connections it does not know with
// stateless resets. Cleanup closes the server.
func startH3Server(t *testing.T, cert testCert, port int, key *quic.StatelessResetKey, h http.Handler) *h3Server {
	t.Helper()
	s, err := listenH3(cert, port, key, h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	return s
}

// listenH3 is startH3Server without the test: the caller closes the
// server.
func listenH3(cert testCert, port int, key *quic.StatelessResetKey, h http.Handler) (*h3Server, error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return nil, fmt.Errorf("listen udp: %w", err)
	}
	s := &h3Server{addr: udp.LocalAddr().String(), udp: udp, tr: &quic.Transport{Conn: udp, StatelessResetKey: key}}
	tc := http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert.cert}, MinVersion: tls.VersionTLS13})
	ln, err := s.tr.ListenEarly(tc, &quic.Config{})
	if err != nil {
		_ = udp.Close()
		return nil, fmt.Errorf("listen quic: %w", err)
	}
	s.srv = &http3.Server{Handler: h}
	s.wg.Go(func() { _ = s.srv.ServeListener(ln) })
	return s, nil
}

// close closes the server: its connections get a CONNECTION_CLOSE
// (H3_NO_ERROR), then its socket closes.
func (s *h3Server) close() {
	s.once.Do(func() {
		_ = s.srv.Close()
		_ = s.tr.Close()
		_ = s.udp.Close()
		s.wg.Wait()
	})
}

// crash drops every connection silently (no CONNECTION_CLOSE) and closes
// the socket, as a killed process would.
func (s *h3Server) crash() {
	s.once.Do(func() {
		_ = s.tr.Close()
		_ = s.udp.Close()
		_ = s.srv.Close()
		s.wg.Wait()
	})
}

// genHandler answers 200 (or code) with X-Gen: gen.
func genHandler(code int, gen string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("X-Gen", gen)
		w.WriteHeader(code)
		_, _ = w.Write([]byte("hello\n"))
	}
}

// h3Config is a bounded HTTP/3 run against addr trusting cert.
func h3Config(addr string, cert testCert, workers, total int, mode Mode) Config {
	return Config{Addr: addr, Proto: HTTP3, CAFile: cert.file, Workers: workers, MaxRequests: total, Mode: mode,
		Duration: 5 * time.Second, ConnectTimeout: time.Second, ReadTimeout: 2 * time.Second}
}
