package integration

import (
	"testing"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// TestReloadStorm is the core acceptance test, with HAProxy and nginx: 16
// clients, over 100 reloads at 10 per second, a new connection per request.
// Keep-alive: TestHAProxyReloadStorm, and for nginx TestNginxKeepAliveFloor
// (the loss has a floor nginx cannot remove; that test asserts it exactly).
func TestReloadStorm(t *testing.T) {
	eachProxy(t, func(t *testing.T, f proxyFixture) {
		o := matrixStorm(stormOpts{target: f.target(t), mode: load.NewConn,
			maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500})
		r := runStorm(t, o)
		r.report(t, f.name+" new-connection")
		r.check(t, o, true)
	})
}

// TestActivatedReloadStorm: the storm with the example socket-activated
// server under the generic driver.
func TestActivatedReloadStorm(t *testing.T) {
	for _, mode := range []load.Mode{load.NewConn, load.KeepAlive} {
		t.Run(mode.String(), func(t *testing.T) {
			o := matrixStorm(stormOpts{target: activatedTarget(t), mode: mode,
				maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500})
			r := runStorm(t, o)
			r.report(t, "activated "+mode.String())
			r.check(t, o, true)
		})
	}
}
