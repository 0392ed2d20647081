package supervisor

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
)

// closedByServer reports whether the server closed c (a read sees EOF
// within wait) rather than keeping it open.
func closedByServer(c net.Conn, wait time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := c.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

// A server keeps at most its cap of connections: a new connection pushes
// out the one idle longest; when every one is busy with a request, the new
// one waits for a slot (it is not reset) and is served once one frees.
func TestConnLimitEvictsIdleFirst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	var busy atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			busy.Add(1)
			<-release
		}),
		ConnState: connState,
	}
	lim := newConnLimit(ln, 3, "test", nil, zap.NewNop())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lim) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), shortWait)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
	}()
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var idle []net.Conn
	for range 5 {
		idle = append(idle, dial())
	}
	for i, c := range idle[:2] {
		if !closedByServer(c, shortWait) {
			t.Errorf("idle connection %d (of the two oldest) still open with 5 idle connections and a cap of 3", i)
		}
	}
	for i, c := range idle[2:] {
		if closedByServer(c, 100*time.Millisecond) {
			t.Errorf("idle connection %d (of the three newest) was closed", i+2)
		}
	}
	if n := lim.Open(); n != 3 {
		t.Errorf("%d connections counted, want 3", n)
	}
	for _, c := range idle[2:] {
		_ = c.SetDeadline(time.Time{})
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	if !pollUntil(shortWait, func() bool { return busy.Load() == 3 }) {
		t.Fatalf("%d requests running, want 3", busy.Load())
	}
	fourth := dial()
	if _, err := io.WriteString(fourth, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if closedByServer(fourth, 100*time.Millisecond) {
		t.Errorf("a 4th connection with 3 busy ones was closed, want it to wait")
	}
	if n := lim.Open(); n != 3 {
		t.Errorf("%d connections counted with 3 busy, want 3", n)
	}
	close(release)
	// A slot frees: the 4th is served.
	if !pollUntil(shortWait, func() bool { return busy.Load() == 4 }) {
		t.Errorf("the waiting 4th connection was not served once the others were done (%d requests seen)", busy.Load())
	}
}
