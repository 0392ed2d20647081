package load

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// checkLeaks must be called first in a test: its cleanup then runs after
// every server cleanup and verifies that no goroutine or fd was leaked.
func checkLeaks(t *testing.T) {
	t.Helper()
	fds := openFDs()
	t.Cleanup(func() {
		goleak.VerifyNone(t)
		if fds < 0 {
			return
		}
		if n := waitFDs(fds, 2*time.Second); n > fds {
			t.Errorf("fd leak: %d open before, %d after", fds, n)
		}
	})
}

// waitFDs waits up to limit for the number of open fds to drop to want (peer
// sockets close asynchronously) and returns the last count.
func waitFDs(want int, limit time.Duration) int {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	for {
		n := openFDs()
		if n <= want {
			return n
		}
		select {
		case <-tick.C:
		case <-timeout.C:
			return n
		}
	}
}

// openFDs returns the number of open fds, or -1 where /proc is unavailable.
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// genServer starts an HTTP server answering every request with status code
// and X-Gen: gen.
func genServer(t *testing.T, code int, gen string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Gen", gen)
		w.WriteHeader(code)
		_, _ = w.Write([]byte("hello\n"))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// rawServer accepts TCP connections on 127.0.0.1 and runs handle for each;
// handle gets a reader positioned on the connection. Cleanup closes the
// listener and every connection and waits for the handlers.
func rawServer(t *testing.T, handle func(c *net.TCPConn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn), bufio.NewReader(c))
			})
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// readRequest consumes one request head; it reports false on error.
func readRequest(br *bufio.Reader) bool {
	_, err := http.ReadRequest(br)
	return err == nil
}

// closedAddr returns an address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	return addr
}

func parseGen(s string) (int, bool) {
	v, err := strconv.Atoi(s)
	return v, err == nil
}
