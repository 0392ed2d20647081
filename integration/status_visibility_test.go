package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// visibility is the part of `baton status --json` this test reads.
type visibility struct {
	Listeners []struct {
		Addr    string `json:"addr"`
		Queue   uint32 `json:"accept_queue"`
		Backlog uint32 `json:"backlog"`
	} `json:"listeners"`
	Generations []struct {
		Gen         int    `json:"generation"`
		State       string `json:"state"`
		Connections int    `json:"connections"`
		OpenFds     int    `json:"open_fds"`
		Processes   []struct {
			Pid    int `json:"pid"`
			Nofile struct {
				Soft uint64 `json:"soft"`
			} `json:"nofile"`
		} `json:"processes"`
	} `json:"generations"`
}

func statusJSON(t *testing.T, p *accProxy) visibility {
	t.Helper()
	res := p.b.CLI("status", "--json")
	if res.Code != 0 {
		t.Fatalf("baton status --json: exit %d: %s", res.Code, res.Stderr)
	}
	var v visibility
	if err := json.Unmarshal([]byte(res.Stdout), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (v visibility) gen(n int) (conns int, state string, ok bool) {
	for _, g := range v.Generations {
		if g.Gen == n {
			return g.Connections, g.State, true
		}
	}
	return 0, "", false
}

// TestStatusShowsDrainAndAcceptQueue (drain visibility): during a drain
// `status --json` shows the old generation's connections going down to 0 as
// its clients leave, and a listener's accept queue rising while the serving
// proxy is stopped (SIGSTOP) and falling when it resumes.
func TestStatusShowsDrainAndAcceptQueue(t *testing.T) {
	// idle-close-on-response keeps the old generation's idle keep-alive
	// connections open during its drain, so the clients decide when they go.
	maddr := fmt.Sprintf("127.0.0.1:%d", batontest.FreePort(t))
	p := startAccProxy(t, batontest.HAProxyOpts{}, []string{"--metrics", maddr}, batontest.StartOptions{})
	p.write(t, 2, "option idle-close-on-response")
	old, _ := p.reload(t)
	const clients = 5
	var conns []net.Conn
	for i := 0; i < clients; i++ {
		c, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: baton-test\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("keep-alive request %d: %v %v", i, resp, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		conns = append(conns, c)
	}
	if n, _, _ := statusJSON(t, p).gen(old); n != clients {
		t.Fatalf("before the reload: generation %d holds %d connections, want %d", old, n, clients)
	}
	p.write(t, 3, "option idle-close-on-response")
	p.reload(t)

	var seen []int
	for left := clients; left >= 0; left-- {
		want := left
		var draining bool
		took, ok := batontest.PollUntil(10*time.Second, 20*time.Millisecond, func() bool {
			n, state, found := statusJSON(t, p).gen(old)
			draining = found
			if found && (len(seen) == 0 || seen[len(seen)-1] != n) {
				seen = append(seen, n)
			}
			return found && state == "draining" && n == want || want == 0 && !found
		})
		if !ok {
			t.Fatalf("generation %d never showed %d connections while draining (seen %v)", old, want, seen)
		}
		// The metrics say the same: one draining generation (none once it
		// is gone) with the connections its clients still hold.
		fams := scrapeMetrics(t, maddr)
		gens, _ := metricValue(fams, "baton_draining_generations", nil)
		dconns, _ := metricValue(fams, "baton_draining_connections", nil)
		age, _ := metricValue(fams, "baton_draining_oldest_seconds", nil)
		t.Logf("%d keep-alive clients left: status showed generation %d draining with %d connections after %s; metrics: draining generations %v, connections %v, oldest %.3f s",
			left, old, want, took.Round(time.Millisecond), gens, dconns, age)
		wantGens := 0
		if draining {
			wantGens = 1
		}
		if int(gens) != wantGens && want > 0 || int(dconns) != want || (want > 0 && age <= 0) {
			t.Errorf("metrics: baton_draining_generations %v, baton_draining_connections %v, baton_draining_oldest_seconds %v; want %d, %d, positive while draining", gens, dconns, age, wantGens, want)
		}
		if left > 0 {
			conns[left-1].Close()
		}
	}
	t.Logf("generation %d connection counts seen during its drain: %v", old, seen)

	// The accept queue, with the serving generation stopped.
	st := p.status(t)
	gen, _ := st.Active()
	pids := st.Gen(gen).Pids
	if err := batontest.SignalPids(pids, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if stopped {
			_ = batontest.SignalPids(pids, syscall.SIGCONT)
		}
	}()
	stopped = true
	if _, ok := batontest.PollUntil(5*time.Second, 10*time.Millisecond, func() bool { return batontest.Stopped(pids) }); !ok {
		t.Fatal("generation not stopped")
	}
	var queued []net.Conn
	for i := 0; i < clients; i++ {
		c, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
		if err != nil {
			t.Fatalf("connect while stopped: %v (the socket must keep queueing)", err)
		}
		defer c.Close()
		queued = append(queued, c)
	}
	queue := func() uint32 {
		v := statusJSON(t, p)
		if len(v.Listeners) == 0 {
			return 0
		}
		return v.Listeners[0].Queue
	}
	if _, ok := batontest.PollUntil(5*time.Second, 20*time.Millisecond, func() bool { return queue() == clients }); !ok {
		t.Fatalf("status accept_queue %d with %d connections waiting, want %d", queue(), clients, clients)
	}
	t.Logf("with generation %d stopped: status shows accept_queue %d (backlog %d)", gen, queue(), statusJSON(t, p).Listeners[0].Backlog)
	if err := batontest.SignalPids(pids, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	for i, c := range queued {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := batontest.WriteHTTPRequest(c, "/"); err != nil {
			t.Fatal(err)
		}
		if r := batontest.ReadHTTP(c); r.Err != nil || r.Status != 200 {
			t.Errorf("queued connection %d: %d %v", i, r.Status, r.Err)
		}
	}
	if _, ok := batontest.PollUntil(5*time.Second, 20*time.Millisecond, func() bool { return queue() == 0 }); !ok {
		t.Errorf("accept queue %d after the generation resumed, want 0", queue())
	}
}
