package integration

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// watchProxy is a baton supervising real haproxy with --watch.
type watchProxy struct {
	b    *batontest.Baton
	port int
	addr string
}

// startWatchProxy starts `baton run -l tcp://127.0.0.1:PORT --watch WATCH
// ARGS... -- haproxy -f CFG` and waits until the first generation serves.
// The config at cfg must exist and bind port.
func startWatchProxy(t *testing.T, port int, cfg, watch string, args ...string) *watchProxy {
	t.Helper()
	haproxy := batontest.RequireBinary(t, "haproxy")
	p := &watchProxy{port: port, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	full := append([]string{"-l", "tcp://" + p.addr, "--drain-timeout", "30s", "--watch", watch}, args...)
	full = append(full, "--", haproxy, "-f", cfg)
	p.b = batontest.StartBaton(t, full, batontest.StartOptions{})
	return p
}

// status returns the status with its watch section; the test fails
// without one.
func (p *watchProxy) status(t *testing.T) batontest.WatchedStatus {
	t.Helper()
	st, err := p.b.WatchStatus()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

// waitWatch polls the status until cond accepts it (nil) and returns that
// status; it fails the test after timeout with cond's last complaint.
func (p *watchProxy) waitWatch(t *testing.T, timeout time.Duration, cond func(batontest.WatchedStatus) error) batontest.WatchedStatus {
	t.Helper()
	var last batontest.WatchedStatus
	batontest.Eventually(t, timeout, func() error {
		st, err := p.b.WatchStatus()
		if err != nil {
			return err
		}
		last = st
		return cond(st)
	})
	return last
}

// waitServed polls GET / until it answers 200 with X-Gen version.
func (p *watchProxy) waitServed(t *testing.T, timeout time.Duration, version int) {
	t.Helper()
	want := fmt.Sprint(version)
	batontest.Eventually(t, timeout, func() error {
		r := batontest.HTTPGet(p.addr, "/", 2*time.Second)
		if r.Err != nil || r.Status != 200 || r.Gen != want {
			return fmt.Errorf("GET http://%s/: status %d, X-Gen %q, err %v; want 200 with X-Gen %s", p.addr, r.Status, r.Gen, r.Err, want)
		}
		return nil
	})
}

// getGen asserts that GET / answers 200 and returns its X-Gen.
func (p *watchProxy) getGen(t *testing.T) string {
	t.Helper()
	r := batontest.HTTPGet(p.addr, "/", 5*time.Second)
	if r.Err != nil || r.Status != 200 {
		t.Fatalf("GET http://%s/: status %d, err %v", p.addr, r.Status, r.Err)
	}
	return r.Gen
}

// rewriteInPlace truncates path and writes data into the same inode, the
// way an editor without rename-on-save does.
func rewriteInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
