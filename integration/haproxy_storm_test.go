package integration

import (
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// TestHAProxyReloadStorm is TestReloadStorm with keep-alive clients: 16
// clients, over 100 reloads at 10 per second.
func TestHAProxyReloadStorm(t *testing.T) {
	t.Run("keep-alive", func(t *testing.T) {
		o := matrixStorm(stormOpts{mode: load.KeepAlive, maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500,
			extraGlobal: batontest.KeepAliveSafe.Global, extraDefaults: batontest.KeepAliveSafe.Defaults})
		r := runStorm(t, o)
		r.report(t, "haproxy keep-alive (keep-alive-safe settings)")
		r.check(t, o, true)
	})
	t.Run("keep-alive-default-settings", func(t *testing.T) {
		// Without the settings HAProxy's soft stop closes idle keep-alive
		// connections, losing the request a client sends at that moment.
		// Reported, not asserted.
		o := matrixStorm(stormOpts{mode: load.KeepAlive, maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500})
		r := runStorm(t, o)
		r.report(t, "haproxy keep-alive (default settings)")
		r.check(t, o, false)
	})
}
