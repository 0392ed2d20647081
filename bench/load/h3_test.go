package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

func TestH3KeepAliveOK(t *testing.T) {
	checkLeaks(t)
	cert := newTestCert(t)
	srv := startH3Server(t, cert, 0, nil, genHandler(http.StatusOK, "3"))
	const workers, total = 4, 200
	res := run(t, h3Config(srv.addr, cert, workers, total, KeepAlive))
	expectAll(t, res, total, OK)
	if n := distinctConns(res); n != workers {
		t.Errorf("keep-alive used %d QUIC connections for %d workers", n, workers)
	}
	reused := 0
	for _, s := range res.Samples {
		if s.Gen != "3" || s.Status != 200 || s.ConnID == 0 || s.ConnStart.After(s.Start) {
			t.Fatalf("bad sample %v", s)
		}
		if s.Reused {
			reused++
		}
	}
	if reused != total-workers || res.ClosedIdle != nil {
		t.Errorf("%d of %d requests reused a connection; closed idle %v", reused, total, res.ClosedIdle)
	}
}

func TestH3NewConnOK(t *testing.T) {
	checkLeaks(t)
	cert := newTestCert(t)
	var remotes sync.Map
	srv := startH3Server(t, cert, 0, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		remotes.Store(r.RemoteAddr, true)
		genHandler(http.StatusOK, "7")(w, r)
	}))
	const total = 30
	res := run(t, h3Config(srv.addr, cert, 3, total, NewConn))
	expectAll(t, res, total, OK)
	if n := distinctConns(res); n != total {
		t.Errorf("newconn used %d connections for %d requests", n, total)
	}
	for _, s := range res.Samples {
		if s.Reused || s.Gen != "7" || !s.ConnStart.Equal(s.Start) {
			t.Fatalf("bad sample %v", s)
		}
	}
	n := 0
	remotes.Range(func(k, _ any) bool {
		n++
		if host, _, _ := net.SplitHostPort(k.(string)); host != "127.0.0.1" {
			t.Errorf("client bound to %s, want the loopback", k)
		}
		return true
	})
	// A closed connection's port may be taken again by a later one.
	if n < total/2 {
		t.Errorf("%d client UDP ports for %d connections, want a socket each", n, total)
	}
}

func TestH3InsecureSkipVerify(t *testing.T) {
	checkLeaks(t)
	cert := newTestCert(t)
	srv := startH3Server(t, cert, 0, nil, genHandler(http.StatusOK, "1"))
	cfg := h3Config(srv.addr, cert, 2, 10, NewConn)
	cfg.CAFile, cfg.InsecureSkipVerify = "", true
	expectAll(t, run(t, cfg), 10, OK)
}

func TestH3UntrustedCertificate(t *testing.T) {
	checkLeaks(t)
	cert := newTestCert(t)
	srv := startH3Server(t, cert, 0, nil, genHandler(http.StatusOK, "1"))
	cfg := h3Config(srv.addr, newTestCert(t), 2, 4, KeepAlive)
	res := run(t, cfg)
	expectAll(t, res, 4, HandshakeFailure)
	if s := res.Samples[0]; s.ConnID != 0 || s.Err == "" {
		t.Errorf("bad sample %v", s)
	}
}

func TestH3StatusAndStreamReset(t *testing.T) {
	checkLeaks(t)
	cert := newTestCert(t)
	for _, mode := range []Mode{KeepAlive, NewConn} {
		srv := startH3Server(t, cert, 0, nil, genHandler(http.StatusServiceUnavailable, "4"))
		res := run(t, h3Config(srv.addr, cert, 2, 6, mode))
		expectAll(t, res, 6, Status5xx)
		if s := res.Samples[0]; s.Status != 503 || s.Gen != "4" || s.Err == "" {
			t.Errorf("%s: bad sample %v", mode, s)
		}
		abort := startH3Server(t, cert, 0, nil, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
			panic(http.ErrAbortHandler) // http3 resets the stream
		}))
		expectAll(t, run(t, h3Config(abort.addr, cert, 2, 6, mode)), 6, StreamReset)
	}
}

// A UDP port nobody listens on sends no error the client's socket sees:
// every dial times out, bounded by the connect timeout.
func TestH3NoServerIsHandshakeTimeout(t *testing.T) {
	checkLeaks(t)
	cert := newTestCert(t)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	addr := udp.LocalAddr().String()
	_ = udp.Close()
	cfg := h3Config(addr, cert, 2, 4, NewConn)
	cfg.ConnectTimeout = 200 * time.Millisecond
	res := run(t, cfg)
	if res.Total != 4 || res.Counts[HandshakeTimeout]+res.Counts[Refused] != 4 || res.Elapsed > 2*time.Second {
		t.Fatalf("got %s", res.Summary())
	}
}

// A server closed in the middle of a run: the requests it was serving and
// every later dial fail, each with a class, and the run ends on time. A
// connection whose handshake completed as the server closed is dropped
// silently with the server's transport: its request times out.
func TestH3ServerClosedMidRun(t *testing.T) {
	checkLeaks(t)
	cert := newTestCert(t)
	for _, mode := range []Mode{KeepAlive, NewConn} {
		closeAt := make(chan struct{})
		var served atomic.Int64
		srv := startH3Server(t, cert, 0, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if served.Add(1) == 20 {
				close(closeAt)
			}
			genHandler(http.StatusOK, "1")(w, r)
		}))
		var wg sync.WaitGroup
		runDone := make(chan struct{})
		wg.Go(func() {
			select {
			case <-closeAt:
			case <-runDone: // fewer than 20 served (a slow machine): the check below says so
			}
			srv.close()
		})
		cfg := h3Config(srv.addr, cert, 4, 0, mode)
		cfg.Duration, cfg.ConnectTimeout, cfg.ReadTimeout = time.Second, 200*time.Millisecond, 500*time.Millisecond
		res := run(t, cfg)
		close(runDone)
		wg.Wait()
		if res.Counts[OK] < 12 || res.Failed == 0 || res.Elapsed > 3*time.Second {
			t.Fatalf("%s: got %s", mode, res.Summary())
		}
		for _, s := range res.Failures(res.Failed) {
			switch s.Class {
			case ApplicationClose, HandshakeTimeout, HandshakeFailure, Refused, StreamReset, ReadTimeout:
			default:
				t.Errorf("%s: unexpected failure %v", mode, s)
			}
		}
		if res.Counts[HandshakeTimeout]+res.Counts[Refused] == 0 {
			t.Errorf("%s: no failed dial after the close: %s", mode, res.Summary())
		}
	}
}

// A server that crashes and is started again on the same port with the
// same stateless reset key (what a restarted or reloaded QUIC server
// does): the old connections end in stateless resets, and new ones reach
// the new server.
func TestH3CrashGivesStatelessReset(t *testing.T) {
	checkLeaks(t)
	cert := newTestCert(t)
	var key quic.StatelessResetKey
	copy(key[:], "baton load stateless reset key!!")
	crashAt := make(chan struct{})
	var served atomic.Int64
	old := startH3Server(t, cert, 0, &key, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1) == 20 {
			close(crashAt)
		}
		genHandler(http.StatusOK, "1")(w, r)
	}))
	port := old.udp.LocalAddr().(*net.UDPAddr).Port
	var (
		wg      sync.WaitGroup
		again   *h3Server
		againEr error
	)
	runDone := make(chan struct{})
	wg.Go(func() {
		select {
		case <-crashAt:
		case <-runDone:
			againEr = fmt.Errorf("the run ended before the server answered 20 requests")
			return
		}
		old.crash()
		again, againEr = listenH3(cert, port, &key, genHandler(http.StatusOK, "2"))
	})
	cfg := h3Config(old.addr, cert, 4, 0, KeepAlive)
	cfg.Duration, cfg.Rate = 1500*time.Millisecond, 200
	res := run(t, cfg)
	close(runDone)
	wg.Wait()
	if againEr != nil {
		t.Fatalf("restart on port %d: %v", port, againEr)
	}
	t.Cleanup(again.close)
	resets := res.Counts[StatelessReset] + res.ClosedIdle[StatelessReset.String()]
	if resets == 0 {
		t.Fatalf("no stateless reset: %s", res.Summary())
	}
	last := res.Samples[len(res.Samples)-1]
	if last.Class != OK || last.Gen != "2" {
		t.Errorf("last sample %v, want OK from the new server", last)
	}
	for _, s := range res.Failures(res.Failed) {
		if s.Class != StatelessReset && s.Class != HandshakeTimeout {
			t.Errorf("unexpected failure %v", s)
		}
	}
}

func TestH3Validation(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "x.pem")
	if err := os.WriteFile(notPEM, []byte("nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := Config{Addr: "127.0.0.1:1", Workers: 1, MaxRequests: 1, Proto: HTTP3, InsecureSkipVerify: true}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"unknown proto":    func(c *Config) { c.Proto = "h2" },
		"ca file for h1":   func(c *Config) { c.Proto, c.InsecureSkipVerify, c.CAFile = HTTP1, false, notPEM },
		"insecure for h1":  func(c *Config) { c.Proto = HTTP1 },
		"missing ca file":  func(c *Config) { c.CAFile = filepath.Join(dir, "none.pem") },
		"ca file, no cert": func(c *Config) { c.CAFile = notPEM },
	} {
		cfg := good
		mod(&cfg)
		res, err := Run(context.Background(), cfg)
		if !errors.Is(err, ErrInvalidConfig) || res != nil {
			t.Errorf("%s: got %v, %v", name, res, err)
		}
	}
}

func TestH3Classifiers(t *testing.T) {
	ctx := context.Background()
	done, cancel := context.WithCancel(ctx)
	cancel()
	wrap := func(err error) error { return fmt.Errorf("http3: %w", err) }
	for i, tc := range []struct {
		got, want Class
	}{
		{h3DialClass(ctx, context.DeadlineExceeded), HandshakeTimeout},
		{h3DialClass(ctx, &quic.HandshakeTimeoutError{}), HandshakeTimeout},
		{h3DialClass(ctx, &quic.IdleTimeoutError{}), HandshakeTimeout},
		{h3DialClass(ctx, &quic.TransportError{ErrorCode: 0x12a}), HandshakeFailure},
		{h3DialClass(ctx, &quic.ApplicationError{Remote: true}), HandshakeFailure},
		{h3DialClass(ctx, &quic.VersionNegotiationError{}), HandshakeFailure},
		{h3DialClass(ctx, &quic.StatelessResetError{}), StatelessReset},
		{h3DialClass(ctx, errors.New("no socket")), ConnectError},
		{h3DialClass(done, context.Canceled), aborted},
	} {
		if tc.got != tc.want {
			t.Errorf("dial %d: got %s, want %s", i, tc.got, tc.want)
		}
	}
	for i, tc := range []struct {
		err  error
		want Class
	}{
		{wrap(&quic.StatelessResetError{}), StatelessReset},
		{&quic.IdleTimeoutError{}, IdleTimeout},
		{wrap(&quic.StreamError{Remote: true, ErrorCode: 0x102}), StreamReset},
		{&quic.StreamError{Remote: false}, BrokenResponse},
		{&http3.Error{Remote: true, ErrorCode: http3.ErrCodeInternalError}, StreamReset},
		{&quic.ApplicationError{Remote: true, ErrorCode: 0x100}, ApplicationClose},
		{&quic.ApplicationError{Remote: false, ErrorCode: 0x101}, BrokenResponse},
		{&quic.TransportError{Remote: true, ErrorCode: quic.InternalError}, TransportClose},
		{&quic.TransportError{Remote: true, ErrorCode: quic.ApplicationErrorErrorCode}, ApplicationClose},
	} {
		if got, ok := quicClass(tc.err); !ok || got != tc.want {
			t.Errorf("error %d (%v): got %s, want %s", i, tc.err, got, tc.want)
		}
	}
	if _, ok := quicClass(os.ErrDeadlineExceeded); ok {
		t.Error("a deadline is not a QUIC error")
	}
	for err, want := range map[error]string{
		&quic.ApplicationError{ErrorCode: quic.ApplicationErrorCode(http3.ErrCodeNoError)}: "goaway",
		&quic.ApplicationError{Remote: true}:                                               "application_close",
		&quic.StatelessResetError{}:                                                        "stateless_reset",
		errors.New("x"):                                                                    "other",
	} {
		if got := closeReason(err); got != want {
			t.Errorf("closeReason(%v) = %q, want %q", err, got, want)
		}
	}
}
