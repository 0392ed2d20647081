package integration

import (
	"testing"
	"time"

	"github.com/batonproxy/baton/integration/load"
)

// TestNginxReloadStorm: the storm of the HAProxy test with nginx.
func TestNginxReloadStorm(t *testing.T) {
	t.Run("new-connection", func(t *testing.T) {
		r := runStorm(t, stormOpts{target: nginxTarget(t, nil, nil), mode: load.NewConn,
			reloads: 110, minGens: 100, maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500})
		r.report(t, "nginx new-connection")
		r.check(t, true)
	})
	// Keep-alive with nginx: see TestNginxKeepAliveFloor (the loss has a
	// floor nginx cannot remove; that test asserts it exactly).
}

// TestActivatedReloadStorm: the storm with the example socket-activated
// server under the generic driver.
func TestActivatedReloadStorm(t *testing.T) {
	for _, mode := range []load.Mode{load.NewConn, load.KeepAlive} {
		t.Run(mode.String(), func(t *testing.T) {
			r := runStorm(t, stormOpts{target: activatedTarget(t), mode: mode,
				reloads: 110, minGens: 100, maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500})
			r.report(t, "activated "+mode.String())
			r.check(t, true)
		})
	}
}
