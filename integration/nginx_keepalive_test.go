package integration

import (
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// stormClients is the number of load clients runStorm uses.
const stormClients = 16

// TestNginxKeepAliveFloor measures what nginx's drain costs keep-alive
// clients (examples/nginx/nginx.conf explains it): on SIGQUIT an old nginx
// closes its idle keep-alive connections at once, so a client that sends on
// one at that moment loses that request, before any response byte. That is
// at most one request per client connection per drained generation, and
// nothing else may fail. With `keepalive_timeout 0` (every answer closes the
// connection) nothing fails.
func TestNginxKeepAliveFloor(t *testing.T) {
	opts := func(target proxyTarget) stormOpts {
		return stormOpts{target: target, mode: load.KeepAlive, reloads: 40, minGens: 30,
			maxTime: 30 * time.Second, interval: 100 * time.Millisecond, rate: 1500}
	}
	t.Run("keepalive-30s", func(t *testing.T) {
		r := runStorm(t, opts(nginxTarget(t, nil, nil)))
		r.report(t, "nginx keep-alive")
		checkReducedStorm(t, r, 30)
		gens := len(r.gens)
		bound := stormClients * gens
		floor := r.load.Counts[load.EOFBeforeResponse] + r.load.Counts[load.ResetBeforeResponse]
		t.Logf("failed %d of %d requests (eof_before_response %d, reset_before_response %d) over %d drained generations: %.3f per connection per reload (bound %d = %d connections × %d generations)",
			r.load.Failed, r.load.Total, r.load.Counts[load.EOFBeforeResponse], r.load.Counts[load.ResetBeforeResponse],
			gens, float64(r.load.Failed)/float64(bound), bound, stormClients, gens)
		compatFigure(t, "keep-alive floor: %d of %d requests lost over %d generations (bound %d: one per connection per reload)", r.load.Failed, r.load.Total, gens, bound)
		if other := r.load.Failed - floor; other > 0 {
			t.Errorf("%d failures other than eof/reset before the response: %v", other, r.load.Failures(5))
		}
		// The bound is what nginx before 1.27.4 gives, measured exactly
		// again and again. 1.27.4+ closes idle connections the same way when
		// keepalive_min_timeout is 0 (its default), but went a few requests
		// over the bound (515 for 512 with 1.31.4); its remedy is
		// keepalive_min_timeout (TestNginxKeepAliveMinTimeout: 0 lost).
		if r.load.Failed > bound && !batontest.VersionAtLeast(batontest.ProxyVersion(batontest.RequireBinary(t, "nginx")), 1, 27, 4) {
			t.Errorf("%d failed requests, more than one per connection per drained generation (%d)", r.load.Failed, bound)
		}
	})
	t.Run("keepalive_timeout-0", func(t *testing.T) {
		// NginxConfig sets keepalive_timeout 30s; a second one would be a
		// duplicate, so the target replaces it.
		bin := batontest.RequireBinary(t, "nginx")
		target := proxyTarget{
			name: "nginx",
			config: func(port, v int) string {
				return nginxConf(t, port, v, nil, nil, [2]string{"keepalive_timeout 30s;", "keepalive_timeout 0;"})
			},
			command: func(cfg string) []string { return []string{bin, "-e", "stderr", "-c", cfg} },
		}
		r := runStorm(t, opts(target))
		r.report(t, "nginx keepalive_timeout 0")
		checkReducedStorm(t, r, 30)
		reused := 0
		for _, s := range r.load.Samples {
			if s.Reused {
				reused++
			}
		}
		t.Logf("failed %d of %d requests over %d generations; %d requests on a reused connection", r.load.Failed, r.load.Total, len(r.gens), reused)
		if r.load.Failed > 0 {
			t.Errorf("%d failed requests with keepalive_timeout 0, want 0: %v", r.load.Failed, r.load.Failures(5))
		}
		if reused > 0 {
			t.Errorf("%d requests reused a connection: nginx did not close it after the answer", reused)
		}
	})
}

// checkReducedStorm asserts what stormResult.check does, for a storm with
// fewer than its 100 reloads, and without judging failed requests.
func checkReducedStorm(t *testing.T, r stormResult, minGens int) {
	t.Helper()
	if len(r.reloadErrors) > 0 {
		t.Errorf("%d reloads failed, first: %s", len(r.reloadErrors), r.reloadErrors[0])
	}
	if len(r.gens) < minGens {
		t.Errorf("%d generations acknowledged, want at least %d", len(r.gens), minGens)
	}
	if len(r.listenBad) > 0 {
		t.Errorf("%d of %d samples did not show exactly baton's one LISTEN socket, first: %s", len(r.listenBad), r.listenSamples, r.listenBad[0])
	}
	if len(r.stale) > 0 {
		t.Errorf("%d answers from an older generation on connections made after the reload was acknowledged, first: %v", len(r.stale), r.stale[0])
	}
	if len(r.leftovers) > 0 {
		t.Errorf("old-generation processes alive 10 s after the run: %v", r.leftovers)
	}
	if r.fdBefore != r.fdAfter {
		t.Errorf("baton's fd count went from %d to %d", r.fdBefore, r.fdAfter)
	}
	if r.load.Counts[load.OK] == 0 {
		t.Errorf("no request succeeded")
	}
}
