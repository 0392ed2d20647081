package integration

import (
	"testing"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// TestNginxReloadStorm: the storm of the HAProxy test with nginx.
func TestNginxReloadStorm(t *testing.T) {
	t.Run("new-connection", func(t *testing.T) {
		o := matrixStorm(stormOpts{target: nginxTarget(t, nil, nil), mode: load.NewConn,
			maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500})
		r := runStorm(t, o)
		r.report(t, "nginx new-connection")
		r.check(t, o, true)
	})
	// Keep-alive with nginx: see TestNginxKeepAliveFloor (the loss has a
	// floor nginx cannot remove; that test asserts it exactly).
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
