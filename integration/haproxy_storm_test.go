package integration

import (
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/integration/load"
)

// TestHAProxyReloadStorm is the core acceptance test: 16 clients, over 100
// reloads at 10 per second, new connection per request and keep-alive.
func TestHAProxyReloadStorm(t *testing.T) {
	t.Run("new-connection", func(t *testing.T) {
		r := runStorm(t, stormOpts{mode: load.NewConn, reloads: 110, minGens: 100, maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500})
		r.report(t, "haproxy new-connection")
		r.check(t, true)
	})
	t.Run("keep-alive", func(t *testing.T) {
		r := runStorm(t, stormOpts{mode: load.KeepAlive, reloads: 110, minGens: 100, maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500,
			extraGlobal: batontest.KeepAliveSafe.Global, extraDefaults: batontest.KeepAliveSafe.Defaults})
		r.report(t, "haproxy keep-alive (keep-alive-safe settings)")
		r.check(t, true)
	})
	t.Run("keep-alive-default-settings", func(t *testing.T) {
		// Without the settings HAProxy's soft stop closes idle keep-alive
		// connections, losing the request a client sends at that moment.
		// Reported, not asserted.
		r := runStorm(t, stormOpts{mode: load.KeepAlive, reloads: 110, minGens: 100, maxTime: time.Minute, interval: 100 * time.Millisecond, rate: 1500})
		r.report(t, "haproxy keep-alive (default settings)")
		r.check(t, false)
	})
}
