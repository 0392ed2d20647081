package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// accProxy is a baton supervising real haproxy for the acceptance tests,
// with a config the test rewrites between reloads.
type accProxy struct {
	b    *batontest.Baton
	port int
	addr string
	cfg  string
	opts batontest.HAProxyOpts
}

// startAccProxy writes the config o (version 1 unless set, a free port
// unless set) and starts `baton run -l tcp://127.0.0.1:PORT ARGS... --
// haproxy -f CFG`, waiting until the first generation serves.
func startAccProxy(t *testing.T, o batontest.HAProxyOpts, args []string, so batontest.StartOptions) *accProxy {
	t.Helper()
	haproxy := batontest.RequireBinary(t, "haproxy")
	if o.Port == 0 {
		o.Port = batontest.FreePort(t)
	}
	if o.Version == 0 {
		o.Version = 1
	}
	p := &accProxy{port: o.Port, addr: fmt.Sprintf("127.0.0.1:%d", o.Port), opts: o}
	p.cfg = filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
	p.write(t, o.Version)
	full := append([]string{"-l", "tcp://" + p.addr}, args...)
	full = append(full, "--", haproxy, "-f", p.cfg)
	p.b = batontest.StartBaton(t, full, so)
	return p
}

// write replaces the config with version v (and extra frontend lines).
func (p *accProxy) write(t *testing.T, v int, frontend ...string) string {
	t.Helper()
	o := p.opts
	o.Version, o.Frontend = v, frontend
	text := batontest.HAProxyAcceptanceConfig(o)
	if err := batontest.WriteFileAtomic(p.cfg, []byte(text)); err != nil {
		t.Fatal(err)
	}
	return text
}

// status is the control API's status; the test fails without one.
func (p *accProxy) status(t *testing.T) batontest.Status {
	t.Helper()
	st, err := p.b.Status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// reload runs `baton reload --json`, requires success and returns the new
// generation and its pid.
func (p *accProxy) reload(t *testing.T) (gen, pid int) {
	t.Helper()
	return reloadJSON(t, p.b)
}

// reloadJSON runs `baton reload --json`, requires success and returns the
// generation and pid it reports.
func reloadJSON(t *testing.T, b *batontest.Baton) (gen, pid int) {
	t.Helper()
	res := b.CLI("reload", "--json")
	if res.Code != 0 {
		t.Fatalf("baton reload: exit %d: %s", res.Code, res.Stderr)
	}
	var out struct {
		Generation int `json:"generation"`
		Pid        int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		t.Fatalf("baton reload --json: %v: %q", err, res.Stdout)
	}
	return out.Generation, out.Pid
}

// get asserts that the proxy answers / with 200 and returns the X-Gen.
func (p *accProxy) get(t *testing.T) string {
	t.Helper()
	r := batontest.HTTPGet(p.addr, "/", 5*time.Second)
	if r.Err != nil || r.Status != 200 {
		t.Fatalf("GET http://%s/: status %d, err %v", p.addr, r.Status, r.Err)
	}
	return r.Gen
}

// accListenWatch samples the port's LISTEN sockets every 10 ms and records
// every sample that is not exactly baton's one socket.
type accListenWatch struct {
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	samples int
	bad     []string
}

func accWatchListen(port int, inode uint64) *accListenWatch {
	w := &accListenWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			socks, err := batontest.ListenSockets(port)
			w.mu.Lock()
			w.samples++
			if err != nil || len(socks) != 1 || socks[0] != inode {
				w.bad = append(w.bad, fmt.Sprintf("%s: %v %v", time.Now().Format("15:04:05.000"), socks, err))
			}
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// end stops sampling and returns the number of samples and the bad ones.
func (w *accListenWatch) end() (int, []string) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.samples, w.bad
}

// accWait blocks for d (a timer, not a sleep loop).
func accWait(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}
