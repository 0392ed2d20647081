package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// A closed stderr must not kill baton: `baton run … 2>&1 | head` once head
// has exited. Every log line then fails with EPIPE (the Go runtime would
// raise SIGPIPE for fd 2 unless baton catches it) and is dropped; baton
// keeps serving and reloading.
func TestClosedStderrKeepsBatonUp(t *testing.T) {
	g := startGeneric(t, 0, nil, plainActivated, batontest.StartOptions{BrokenPipeOutput: true})
	writeConf(t, g.cfg, activatedConf(2))
	gen, _ := reloadJSON(t, g.b)
	if gen != 2 {
		t.Fatalf("reload: generation %d, want 2", gen)
	}
	if r := batontest.HTTPGet(g.addr, "/", 5*time.Second); r.Err != nil || r.Status != 200 || r.Gen != "2" {
		t.Errorf("GET http://%s/ after the reload: %d %q %v", g.addr, r.Status, r.Gen, r.Err)
	}
	select {
	case <-g.b.Exited():
		code, err := g.b.ExitCode(0)
		t.Fatalf("baton exited (status %d, %v) with its stderr a closed pipe", code, err)
	default:
	}
	if st, err := g.b.Status(); err != nil || st.Pid != g.b.Pid() {
		t.Errorf("status after the reload: %+v, %v", st, err)
	}
	t.Log("baton served two generations with every log line failing on EPIPE")
}

// idleConns opens n connections to addr on network and holds them without
// sending anything; cleanup closes them.
func idleConns(t *testing.T, network, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range n {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d to %s: %v", len(conns)+1, addr, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// stillOpen counts the connections the server has not closed (a read
// times out instead of seeing EOF), all waited for together.
func stillOpen(conns []net.Conn, wait time.Duration) int {
	deadline := time.Now().Add(wait)
	n := 0
	for _, c := range conns {
		_ = c.SetReadDeadline(deadline)
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
			n++
		}
	}
	return n
}

// timedReload asks for a reload over the control API (10 s at most) and
// returns how long it took.
func timedReload(t *testing.T, control string) time.Duration {
	t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", control)
		},
		DisableKeepAlives: true,
	}}
	start := time.Now()
	resp, err := cl.Post("http://baton/v1/reload", "", nil)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: %s %s", resp.Status, body)
	}
	return time.Since(start)
}

// 300 idle connections to the metrics port and 300 to the control socket,
// with baton limited to 256 descriptors, used to exhaust them: `baton
// reload` hung and status answered nothing. Each server now holds at most
// its own cap of connections (closing the longest idle one for a new one),
// so baton's descriptors stay bounded and reload, status and a new scrape
// are all answered.
func TestIdleConnectionsDoNotStarveControl(t *testing.T) {
	maddr := fmt.Sprintf("127.0.0.1:%d", batontest.FreePort(t))
	g := startGeneric(t, 0, []string{"--metrics", maddr}, plainActivated, batontest.StartOptions{Shell: "ulimit -n 256"})
	pid := g.b.Pid()
	if soft, hard, err := batontest.Nofile(pid); err != nil || soft != "256" || hard != "256" {
		t.Fatalf("baton's NOFILE %s/%s (%v), want 256", soft, hard, err)
	}
	quiet := timedReload(t, g.b.Control)
	base, err := batontest.FdCount(pid)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	metricsConns := idleConns(t, "tcp", maddr, n)
	controlConns := idleConns(t, "unix", g.b.Control, n)

	held := timedReload(t, g.b.Control)
	if st, err := g.b.Status(); err != nil || st.Pid != pid {
		t.Fatalf("status with %d idle connections held: %v", 2*n, err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape with %d idle connections held: %v", 2*n, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	fds, err := batontest.FdCount(pid)
	if err != nil {
		t.Fatal(err)
	}
	openMetrics, openControl := stillOpen(metricsConns, 200*time.Millisecond), stillOpen(controlConns, 200*time.Millisecond)
	t.Logf("baton's descriptors: %d before, %d with %d idle connections held (%d metrics, %d control still open); reload took %v quiet, %v with them held",
		base, fds, 2*n, openMetrics, openControl, quiet.Round(time.Millisecond), held.Round(time.Millisecond))
	const capMetrics, capControl = 16, 32
	if openMetrics > capMetrics || openControl > capControl {
		t.Errorf("%d metrics and %d control connections still open, want at most %d and %d", openMetrics, openControl, capMetrics, capControl)
	}
	if fds > base+capMetrics+capControl+8 {
		t.Errorf("baton holds %d descriptors with the idle connections, %d before: more than the caps allow", fds, base)
	}
}

// A removed control socket is bound again: `baton status` answers again
// within a bounded poll, and `baton reload` works on the new socket.
func TestRemovedControlSocketRecreated(t *testing.T) {
	g := startGeneric(t, 0, nil, plainActivated, batontest.StartOptions{})
	if err := os.Remove(g.b.Control); err != nil {
		t.Fatal(err)
	}
	took, ok := batontest.PollUntil(10*time.Second, 20*time.Millisecond, func() bool { return g.b.CLI("status").Code == 0 })
	if !ok {
		t.Fatalf("baton status still fails 10 s after the control socket was removed: %s", g.b.CLI("status").Stderr)
	}
	if fi, err := os.Lstat(g.b.Control); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket bound again: %v (%v), want mode 0600", fi.Mode(), err)
	}
	writeConf(t, g.cfg, activatedConf(2))
	if gen, _ := reloadJSON(t, g.b); gen != 2 {
		t.Errorf("reload on the new control socket: generation %d, want 2", gen)
	}
	t.Logf("baton status answered again %v after the control socket was removed", took.Round(time.Millisecond))
}

// reloadMs runs `baton reload --json`, requires success and returns the
// generation and the reload's duration_ms.
func reloadMs(t *testing.T, b *batontest.Baton) (gen int, ms float64) {
	t.Helper()
	res := b.CLI("reload", "--json")
	if res.Code != 0 {
		t.Fatalf("baton reload: exit %d: %s", res.Code, res.Stderr)
	}
	var out struct {
		Generation int     `json:"generation"`
		DurationMs float64 `json:"duration_ms"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		t.Fatalf("baton reload --json: %v: %q", err, res.Stdout)
	}
	return out.Generation, out.DurationMs
}

// floodGetsocks waits (up to 10 s) for path to appear, then opens up to n
// connections to it, held open, and returns how many connected (the
// server's path is removed once the generation is ready).
func floodGetsocks(path string, n int) int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil || time.Now().After(deadline) {
			break
		}
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.Dial("unix", path)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	return len(conns)
}

// A flood of connections to a generation's _getsocks socket from a process
// outside the generation (this test) is refused without delaying its
// readiness: with --ready-timeout 3s the reload succeeds, the refusals are
// logged at WARN, the first few one by one with the peer's pid, uid and
// command, the rest as a count. HAProxy up to 3.0 fetches the sockets in
// its master (-x), 3.1+ in the worker: both from the same server.
func TestGetsocksFloodDoesNotDelayReadiness(t *testing.T) {
	p := startAccProxy(t, batontest.HAProxyOpts{}, []string{"--ready-timeout", "3s"}, batontest.StartOptions{})
	_, quiet := reloadMs(t, p.b)
	st := p.status(t)
	next, _ := st.Active()
	next++
	path := fmt.Sprintf("%s.d/%d/getsocks.sock", p.b.Control, next)
	const flood = 500
	flooded := make(chan int, 1)
	go func() { flooded <- floodGetsocks(path, flood) }()
	gen, busy := reloadMs(t, p.b)
	connected := <-flooded
	if gen != next {
		t.Fatalf("reload: generation %d, want %d", gen, next)
	}
	if got := p.get(t); got != "1" {
		t.Errorf("after the flooded reload: X-Gen %q", got)
	}
	log := p.b.Log()
	marker := fmt.Sprintf(`"gen": %d`, next)
	one := batontest.LogLines(log, "getsocks peer refused", marker)
	sum := batontest.LogLines(log, "getsocks peers refused", marker)
	refused := len(one)
	if len(sum) == 1 {
		var more, all int
		if _, err := fmt.Sscanf(sum[0][strings.Index(sum[0], `"error": "`)+len(`"error": "`):], "%d more peers (%d in all)", &more, &all); err != nil {
			t.Fatalf("summary line %q: %v", sum[0], err)
		}
		refused = all
	}
	t.Logf("%s: reload %.0f ms quiet, %.0f ms with %d of %d flood connections made (%d refused, %d WARN lines)",
		batontest.RequireBinary(t, "haproxy"), quiet, busy, connected, flood, refused, len(one)+len(sum))
	if refused == 0 {
		t.Fatalf("no flood connection reached generation %d's getsocks server (%d connected): the test proved nothing", next, connected)
	}
	if len(one) > 5 || len(sum) > 1 || (refused > 5 && len(sum) != 1) {
		t.Errorf("%d refusals gave %d single WARN lines and %d summaries, want at most 5 and one count", refused, len(one), len(sum))
	}
	if len(one) > 0 && !strings.Contains(one[0], fmt.Sprintf("pid %d (uid 0)", os.Getpid())) {
		t.Errorf("refusal %q does not name this test's pid %d and uid", one[0], os.Getpid())
	}
}
