package integration

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestUDPGenericReloadStorm: plain UDP request/response (DNS-like) under
// the generic driver through a reload storm. baton holds the address as a
// steered group and gives every generation of examples/activated a member
// of its own; new datagrams go to the active generation's member. The
// server answers each datagram with "gen=N " and its payload and, told to
// drain, answers what was already queued on its member. 16 clients, one
// request in flight each (a unique id, 2 s to answer), while a reload is
// requested every 100 ms: every request gets exactly its own reply (0
// lost), the replies come from at least 2 config versions, and
// /proc/net/udp shows only baton's sockets on the address throughout (its
// anchor among them), none connected.
func TestUDPGenericReloadStorm(t *testing.T) {
	act := batontest.BuildBinary(t, "./examples/activated")
	port := freeUDPPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(batontest.ShortTempDir(t), "activated.conf")
	write := func(v int) error { return batontest.WriteFileAtomic(cfg, []byte(activatedConf(v))) }
	if err := write(1); err != nil {
		t.Fatal(err)
	}
	b := batontest.StartBaton(t, []string{"--proxy", "generic", "-l", "udp://" + addr, "--drain-timeout", "30s",
		"--", act, "-config", cfg}, batontest.StartOptions{})
	inode := ownedUDPListener(t, b, port, 2)
	if st, err := b.Status(); err != nil || len(st.Listeners) != 1 || st.Listeners[0].Inode != inode {
		t.Fatalf("status listeners %+v (%v), want baton's UDP listener (its anchor), inode %d", st.Listeners, err, inode)
	}
	fdBefore := stableFdCount(t, b.Pid())

	watch := watchUDPSocket(b.Pid(), port, inode)
	clients := startUDPClients(addr, 16, 20*time.Millisecond, 1000, 5*time.Second)
	warmup := time.NewTimer(300 * time.Millisecond)
	<-warmup.C
	o := stormOpts{reloads: 40, minGens: 5, maxTime: 30 * time.Second, interval: 100 * time.Millisecond}
	r := stormResult{gens: map[int]bool{}}
	storm(t, b, o, write, &r)
	tail := time.NewTimer(300 * time.Millisecond) // requests on after the last reload
	<-tail.C
	res := clients.stop()
	samples, bad := watch.end()
	leftovers := oldGenerationsLeft(t, b, 10*time.Second)
	fdAfter := stableFdCount(t, b.Pid())

	versions := slices.Sorted(maps.Keys(res.versions))
	t.Logf("UDP request/response: %d requests from 16 clients, %d answered, %d lost, %d unexpected replies; answers from %d config versions (%v)",
		res.requests, res.answered, len(res.lost), len(res.unexpected), len(versions), versions)
	t.Logf("%d reload requests in %s, %d acknowledged, %d failed; %d distinct generations; `baton reload` p50 %s p99 %s",
		r.requests, r.stormTime.Round(time.Millisecond), len(r.acks), len(r.reloadErrors), len(r.gens),
		percentile(r.latencies, 50).Round(time.Millisecond), percentile(r.latencies, 99).Round(time.Millisecond))
	t.Logf("/proc/net/udp samples %d, bad %d; baton fds before %d after %d; leftovers %v", samples, len(bad), fdBefore, fdAfter, leftovers)

	if len(r.reloadErrors) > 0 {
		t.Errorf("%d reloads failed, first: %s", len(r.reloadErrors), r.reloadErrors[0])
	}
	if len(r.acks) < 30 {
		t.Errorf("%d reloads acknowledged, want at least 30", len(r.acks))
	}
	if len(res.lost) > 0 {
		t.Errorf("%d of %d requests got no reply, first: %q", len(res.lost), res.requests, res.lost[:min(5, len(res.lost))])
	}
	if len(res.unexpected) > 0 {
		t.Errorf("%d replies that were not the reply to the request in flight, first: %q", len(res.unexpected), res.unexpected[:min(5, len(res.unexpected))])
	}
	if res.requests < 1000 || res.answered != res.requests {
		t.Errorf("%d requests, %d answered: want at least 1,000, all answered", res.requests, res.answered)
	}
	if len(versions) < 2 {
		t.Errorf("replies from config versions %v, want at least 2", versions)
	}
	if samples == 0 || len(bad) > 0 {
		t.Errorf("%d of %d samples did not show only baton's unconnected UDP sockets (its anchor among them), none connected, on %s, first: %q", len(bad), samples, addr, bad[:min(5, len(bad))])
	}
	if len(leftovers) > 0 {
		t.Errorf("old-generation processes alive 10 s after the run: %v", leftovers)
	}
	if fdBefore != fdAfter {
		t.Errorf("baton's fd count went from %d to %d", fdBefore, fdAfter)
	}
	// Each old generation drained and exited 0 (no hard stop).
	for _, l := range batontest.LogLines(b.Log(), "generation exited") {
		if !strings.Contains(l, `"status": 0`) {
			t.Errorf("baton's log: %s, want exit status 0", l)
		}
	}
	if st, err := b.Status(); err != nil || st.Counters["hard_stops"] != 0 {
		t.Errorf("counters %v (%v), want no hard stop", st.Counters, err)
	}
}

// udpClients are the storm's UDP clients: each sends a request with an id of
// its own, waits for the reply, then sends the next on its next tick.
type udpClients struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	res  udpResult
}

// udpResult is what the clients saw.
type udpResult struct {
	requests, answered int
	lost               []string    // requests without a reply, with when they were sent and why
	unexpected         []string    // replies to no request in flight (late, duplicated or garbled)
	versions           map[int]int // replies per config version
}

// startUDPClients starts n clients on addr, each sending a request every
// interval, at most limit each, with timeout to answer each.
func startUDPClients(addr string, n int, interval time.Duration, limit int, timeout time.Duration) *udpClients {
	c := &udpClients{done: make(chan struct{}), res: udpResult{versions: map[int]int{}}}
	for k := range n {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.run(addr, k, interval, limit, timeout)
		}()
	}
	return c
}

// stop lets each client finish the request it has in flight and returns
// what they saw.
func (c *udpClients) stop() udpResult {
	close(c.done)
	c.wg.Wait()
	return c.res
}

func (c *udpClients) run(addr string, k int, interval time.Duration, limit int, timeout time.Duration) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		c.lose(fmt.Sprintf("client %d: %v", k, err))
		return
	}
	defer conn.Close()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	buf := make([]byte, 512)
	for seq := 0; seq < limit; seq++ {
		select {
		case <-c.done:
			return
		case <-tick.C:
		}
		id := fmt.Sprintf("req-%02d-%05d", k, seq)
		sent := time.Now()
		c.mu.Lock()
		c.res.requests++
		c.mu.Unlock()
		if _, err := conn.Write([]byte(id)); err != nil {
			c.lose(fmt.Sprintf("%s sent %s: %v", id, sent.Format("15:04:05.000"), err))
			continue
		}
		c.await(conn, id, sent, timeout, buf)
	}
}

// await reads until the reply to id arrives or timeout passes.
func (c *udpClients) await(conn net.Conn, id string, sent time.Time, timeout time.Duration, buf []byte) {
	_ = conn.SetReadDeadline(sent.Add(timeout))
	for {
		n, err := conn.Read(buf)
		if err != nil {
			why := err.Error()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				why = "no reply in " + timeout.String()
			}
			c.lose(fmt.Sprintf("%s sent %s: %s", id, sent.Format("15:04:05.000"), why))
			return
		}
		reply := string(buf[:n])
		var v int
		gen, payload, ok := strings.Cut(reply, " ")
		if _, err := fmt.Sscanf(gen, "gen=%d", &v); !ok || err != nil || payload != id {
			c.mu.Lock()
			c.res.unexpected = append(c.res.unexpected, fmt.Sprintf("%q while waiting for %s", reply, id))
			c.mu.Unlock()
			continue
		}
		c.mu.Lock()
		c.res.answered++
		c.res.versions[v]++
		c.mu.Unlock()
		return
	}
}

func (c *udpClients) lose(what string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.res.lost = append(c.res.lost, what)
}

// udpSocketWatch samples, every 20 ms, the UDP sockets bound to the port
// and records every sample that is not exactly one unconnected socket with
// baton's inode, held by baton.
type udpSocketWatch struct {
	done    chan struct{}
	stopped chan struct{}
	samples int
	bad     []string
}

func watchUDPSocket(batonPid, port int, inode uint64) *udpSocketWatch {
	w := &udpSocketWatch{done: make(chan struct{}), stopped: make(chan struct{})}
	go func() {
		defer close(w.stopped)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
			w.samples++
			if bad := udpSocketSample(batonPid, port, inode); bad != "" {
				w.bad = append(w.bad, time.Now().Format("15:04:05.000")+": "+bad)
			}
		}
	}()
	return w
}

// udpSocketSample says what is wrong with the port's UDP sockets now, or "".
func udpSocketSample(batonPid, port int, inode uint64) string {
	un, conn, err := readUDPSockets(port)
	switch {
	case err != nil:
		return err.Error()
	case !slices.ContainsFunc(un, func(s udpSocket) bool { return s.inode == inode }) || len(conn) > 0:
		return fmt.Sprintf("unconnected %+v connected %+v, want baton's anchor inode %d among them and none connected", un, conn, inode)
	}
	return udpGroupProblem(batonPid, port, 0)
}

// end stops the sampling and returns the number of samples and the bad ones.
func (w *udpSocketWatch) end() (int, []string) {
	close(w.done)
	<-w.stopped
	return w.samples, w.bad
}
