package load

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	if cfg.Duration == 0 {
		cfg.Duration = 5 * time.Second
	}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	t.Logf("%s", res.Summary())
	return res
}

// expectAll fails unless every sample has class want.
func expectAll(t *testing.T, res *Result, total int, want Class) {
	t.Helper()
	if res.Total != total || res.Counts[want] != total {
		t.Fatalf("want %d x %s, got %s; first: %v", total, want, res.Summary(), res.Failures(3))
	}
}

func distinctConns(res *Result) int {
	ids := make(map[uint64]bool)
	for _, s := range res.Samples {
		ids[s.ConnID] = true
	}
	return len(ids)
}

func TestKeepAliveOK(t *testing.T) {
	checkLeaks(t)
	addr := genServer(t, http.StatusOK, "3")
	const workers, total = 4, 400
	res := run(t, Config{Addr: addr, Workers: workers, MaxRequests: total})
	expectAll(t, res, total, OK)
	if res.Failed != 0 {
		t.Fatalf("failed = %d", res.Failed)
	}
	if n := distinctConns(res); n > workers+2 {
		t.Errorf("keep-alive used %d connections for %d workers", n, workers)
	}
	reused := 0
	for i, s := range res.Samples {
		if v, ok := parseGen(s.Gen); !ok || v != 3 {
			t.Fatalf("sample %d: gen %q", i, s.Gen)
		}
		if i > 0 && s.Start.Before(res.Samples[i-1].Start) {
			t.Fatalf("samples not sorted at %d", i)
		}
		if s.Status != 200 || s.ConnID == 0 || s.Latency <= 0 || s.ConnStart.After(s.Start) {
			t.Fatalf("bad sample %v", s)
		}
		if s.Reused {
			reused++
		}
	}
	if reused < total-workers-2 {
		t.Errorf("only %d of %d requests reused a connection", reused, total)
	}
	sum := 0
	for _, n := range res.PerSecond() {
		sum += n
	}
	if sum != total || res.Percentile(50) <= 0 || res.Percentile(99) < res.Percentile(50) {
		t.Errorf("per-second sum %d, p50 %v, p99 %v", sum, res.Percentile(50), res.Percentile(99))
	}
}

func TestNewConnOK(t *testing.T) {
	checkLeaks(t)
	var keptAlive atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !r.Close {
			keptAlive.Add(1)
		}
		w.Header().Set("X-Gen", "7")
	}))
	t.Cleanup(srv.Close)
	const total = 100
	res := run(t, Config{Addr: srv.Listener.Addr().String(), Workers: 4, Mode: NewConn, MaxRequests: total})
	expectAll(t, res, total, OK)
	if n := distinctConns(res); n != total {
		t.Errorf("newconn used %d connections for %d requests", n, total)
	}
	for _, s := range res.Samples {
		if s.Reused || s.Gen != "7" || !s.ConnStart.Equal(s.Start) {
			t.Fatalf("bad sample %v", s)
		}
	}
	if n := keptAlive.Load(); n != 0 {
		t.Errorf("%d requests without Connection: close", n)
	}
}

func TestKeepAliveServerSaysClose(t *testing.T) {
	checkLeaks(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
	}))
	t.Cleanup(srv.Close)
	res := run(t, Config{Addr: srv.Listener.Addr().String(), Workers: 2, MaxRequests: 20})
	expectAll(t, res, 20, OK)
	if n := distinctConns(res); n != 20 {
		t.Errorf("got %d connections, want one per request", n)
	}
}

// A server that answers one request per connection without announcing the
// close: every second request fails on the reused connection and is not
// retried.
func TestReusedConnFailureNotRetried(t *testing.T) {
	checkLeaks(t)
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		if readRequest(br) {
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Gen: 1\r\n\r\nok")
		}
	})
	res := run(t, Config{Addr: addr, Workers: 1, MaxRequests: 10})
	if res.Total != 10 || res.Counts[OK] != 5 || res.Failed != 5 {
		t.Fatalf("got %s", res.Summary())
	}
	for _, s := range res.Failures(10) {
		if !s.Reused || (s.Class != EOFBeforeResponse && s.Class != ResetBeforeResponse) {
			t.Errorf("unexpected failure %v", s)
		}
	}
}

func TestEOFBeforeResponse(t *testing.T) {
	checkLeaks(t)
	addr := rawServer(t, func(_ *net.TCPConn, br *bufio.Reader) { readRequest(br) })
	for _, mode := range []Mode{KeepAlive, NewConn} {
		res := run(t, Config{Addr: addr, Workers: 2, Mode: mode, MaxRequests: 10})
		expectAll(t, res, 10, EOFBeforeResponse)
	}
}

func TestResetBeforeResponse(t *testing.T) {
	checkLeaks(t)
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		readRequest(br)
		_ = c.SetLinger(0)
	})
	res := run(t, Config{Addr: addr, Workers: 2, MaxRequests: 10})
	expectAll(t, res, 10, ResetBeforeResponse)
	if !strings.Contains(res.Samples[0].Err, "reset") && !strings.Contains(res.Samples[0].Err, "pipe") {
		t.Errorf("err = %q", res.Samples[0].Err)
	}
}

func TestRefused(t *testing.T) {
	checkLeaks(t)
	res := run(t, Config{Addr: closedAddr(t), Workers: 2, MaxRequests: 5})
	expectAll(t, res, 5, Refused)
	for _, s := range res.Samples {
		if s.ConnID != 0 || s.Err == "" {
			t.Errorf("bad sample %v", s)
		}
	}
}

func TestStatusClasses(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		code int
		want Class
	}{{503, Status5xx}, {500, Status5xx}, {404, StatusOther}, {302, StatusOther}, {204, OK}} {
		res := run(t, Config{Addr: genServer(t, tc.code, "2"), Workers: 1, MaxRequests: 3})
		expectAll(t, res, 3, tc.want)
		if s := res.Samples[0]; s.Status != tc.code || s.Gen != "2" {
			t.Errorf("code %d: bad sample %v", tc.code, s)
		}
	}
}

func TestBrokenResponse(t *testing.T) {
	checkLeaks(t)
	for _, partial := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a few bytes",
		"HTTP/1.1 200 OK\r\nContent-Le",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
		"garbage\r\n\r\n",
	} {
		addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
			if readRequest(br) {
				_, _ = io.WriteString(c, partial)
			}
		})
		res := run(t, Config{Addr: addr, Workers: 2, MaxRequests: 6})
		expectAll(t, res, 6, BrokenResponse)
	}
}

// silentServer reads requests and never answers until the client closes.
func silentServer(t *testing.T) string {
	return rawServer(t, func(_ *net.TCPConn, br *bufio.Reader) {
		_, _ = io.Copy(io.Discard, br)
	})
}

func TestReadTimeout(t *testing.T) {
	checkLeaks(t)
	res := run(t, Config{Addr: silentServer(t), Workers: 2, MaxRequests: 4, ReadTimeout: 200 * time.Millisecond})
	expectAll(t, res, 4, ReadTimeout)
	for _, s := range res.Samples {
		if s.Latency < 200*time.Millisecond {
			t.Errorf("latency %v below the read timeout", s.Latency)
		}
	}
}

func TestCancelAbortsInFlight(t *testing.T) {
	checkLeaks(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	res, err := Run(ctx, Config{Addr: silentServer(t), Workers: 3, Duration: 5 * time.Second})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if res.Total != 0 || res.Aborted != 3 || res.Elapsed > 2*time.Second {
		t.Fatalf("got %s", res.Summary())
	}
}

func TestDurationBound(t *testing.T) {
	checkLeaks(t)
	res := run(t, Config{Addr: genServer(t, 200, "1"), Workers: 2, Duration: 200 * time.Millisecond})
	if res.Total == 0 || res.Failed != 0 || res.Elapsed > 2*time.Second {
		t.Fatalf("got %s", res.Summary())
	}
}

func TestRateCap(t *testing.T) {
	checkLeaks(t)
	res := run(t, Config{Addr: genServer(t, 200, "1"), Workers: 4, Rate: 50, Duration: 400 * time.Millisecond})
	// 400ms at 50/s is 20 requests (the first slot starts at once).
	if res.Failed != 0 || res.Total < 10 || res.Total > 25 {
		t.Fatalf("got %s", res.Summary())
	}
}

func TestValidation(t *testing.T) {
	good := Config{Addr: "127.0.0.1:1", Workers: 1, MaxRequests: 1}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no workers":       func(c *Config) { c.Workers = 0 },
		"too many workers": func(c *Config) { c.Workers = MaxWorkers + 1 },
		"unbounded":        func(c *Config) { c.MaxRequests = 0 },
		"negative max":     func(c *Config) { c.MaxRequests = -1 },
		"too long":         func(c *Config) { c.Duration = MaxDuration + time.Second },
		"negative dur":     func(c *Config) { c.Duration = -time.Second },
		"bad addr":         func(c *Config) { c.Addr = "localhost" },
		"bad path":         func(c *Config) { c.Path = "x" },
		"crlf host":        func(c *Config) { c.Host = "a\r\nX: y" },
		"bad rate":         func(c *Config) { c.Rate = -1 },
		"bad mode":         func(c *Config) { c.Mode = 9 },
		"bad timeout":      func(c *Config) { c.ReadTimeout = -1 },
		"bad gen header":   func(c *Config) { c.GenHeader = "X Gen" },
	} {
		cfg := good
		mod(&cfg)
		res, err := Run(context.Background(), cfg)
		if !errors.Is(err, ErrInvalidConfig) || res != nil {
			t.Errorf("%s: got %v, %v", name, res, err)
		}
	}
}

func TestRawKeepAliveAndInformational(t *testing.T) {
	checkLeaks(t)
	addr := rawServer(t, func(c *net.TCPConn, br *bufio.Reader) {
		for readRequest(br) {
			_, err := io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nX-Gen: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
			if err != nil {
				return
			}
		}
	})
	res := run(t, Config{Addr: addr, Workers: 2, MaxRequests: 20})
	expectAll(t, res, 20, OK)
	// At most one connection per worker (keep-alive); on a loaded machine
	// one worker may make all 20 requests before the other starts.
	if n := distinctConns(res); n < 1 || n > 2 || res.Samples[19].Gen != "4" {
		t.Fatalf("%d connections, last sample %v", n, res.Samples[19])
	}
}

type fakeNetErr struct{ timeout bool }

func (e fakeNetErr) Error() string   { return "fake" }
func (e fakeNetErr) Timeout() bool   { return e.timeout }
func (e fakeNetErr) Temporary() bool { return false }

func TestClassifiers(t *testing.T) {
	ctx := context.Background()
	done, cancel := context.WithCancel(ctx)
	cancel()
	refused := &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		got, want Class
	}{
		{dialClass(ctx, refused), Refused},
		{dialClass(ctx, fakeNetErr{timeout: true}), ConnectTimeout},
		{dialClass(ctx, errors.New("no route")), ConnectError},
		{dialClass(done, context.Canceled), aborted},
		{dialClass(done, refused), Refused},
		{ioClass(ctx, fmt.Errorf("write: %w", syscall.EPIPE), false), ResetBeforeResponse},
		{ioClass(ctx, syscall.ECONNRESET, true), BrokenResponse},
		{ioClass(ctx, io.ErrUnexpectedEOF, false), EOFBeforeResponse},
		{ioClass(ctx, io.EOF, true), BrokenResponse},
		{ioClass(ctx, os.ErrDeadlineExceeded, true), ReadTimeout},
		{ioClass(done, os.ErrDeadlineExceeded, false), aborted},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
}
