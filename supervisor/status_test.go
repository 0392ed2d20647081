package supervisor

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/batonproxy/baton/internal/proc"
)

// gatedProcFS blocks Limits (read only for status and scrapes) while armed,
// until gate is closed, and counts the callers inside it.
type gatedProcFS struct {
	ProcFS
	armed   atomic.Bool
	gate    chan struct{}
	entered chan struct{} // one value per caller that reached the gate
	inside  atomic.Int32
	most    atomic.Int32
}

func (g *gatedProcFS) Limits(pid int) (map[string]proc.Limit, error) {
	if g.armed.Load() {
		n := g.inside.Add(1)
		for m := g.most.Load(); n > m && !g.most.CompareAndSwap(m, n); m = g.most.Load() {
		}
		select {
		case g.entered <- struct{}{}:
		default:
		}
		<-g.gate
		g.inside.Add(-1)
	}
	return g.ProcFS.Limits(pid)
}

// Status and scrapes read /proc and sock_diag off the supervisor loop: with
// the /proc reads of status blocked, 4 status requests and 4 scrapes in
// flight, a reload still completes; and only one of them reads /proc at a
// time.
func TestStatusGatheringOffTheLoop(t *testing.T) {
	gp := &gatedProcFS{gate: make(chan struct{}), entered: make(chan struct{}, 16)}
	m := NewMetrics("test")
	h := newHarness(t, harnessOpts{procfs: func(p ProcFS) ProcFS { gp.ProcFS = p; return gp }, metrics: m})
	h.start()
	gp.armed.Store(true)
	released := false
	release := func() {
		if !released {
			released = true
			close(gp.gate)
		}
	}
	defer release()

	const n = 4
	var wg sync.WaitGroup
	var finished atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), longWait)
	defer cancel()
	for range n {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, _ = h.sup.Status(ctx)
			finished.Add(1)
		}()
		go func() {
			defer wg.Done()
			_, _ = m.Registry.Gather()
			finished.Add(1)
		}()
	}
	<-gp.entered // one of them is stuck reading /proc

	rctx, rcancel := context.WithTimeout(context.Background(), shortWait)
	res, err := h.sup.Reload(rctx)
	rcancel()
	if err != nil {
		t.Fatalf("reload with %d status requests and scrapes in flight: %v", 2*n, err)
	}
	if f := finished.Load(); f != 0 {
		t.Errorf("%d of %d status requests and scrapes finished while /proc was blocked", f, 2*n)
	}
	t.Logf("generation %d active while %d status requests and scrapes waited on /proc", res.Generation, 2*n)
	release()
	wg.Wait()
	if most := gp.most.Load(); most != 1 {
		t.Errorf("%d status gatherings read /proc at once, want 1", most)
	}
	if st := h.status(); h.active(st).Gen != 2 || len(h.active(st).Processes) == 0 {
		t.Errorf("status after the reload: %+v", h.active(st))
	}
}
