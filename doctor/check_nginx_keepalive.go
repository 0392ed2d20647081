package doctor

import (
	"fmt"
	"strconv"
	"strings"
)

// checkNginxKeepAlive: keep-alive on (keepalive_timeout not 0) and no
// keepalive_min_timeout, with an nginx that has it (1.27.4+): at each
// reload the old workers close their idle keep-alive connections at once.
// Older nginx has no remedy but turning keep-alive off or upgrading: an
// info finding, so that Debian 12's nginx does not fail every run.
func checkNginxKeepAlive(f *Facts, _ Options) []Finding {
	var out []Finding
	for _, c := range configsOf(f, "nginx") {
		if _, args, ok := nginxSetting(c, "keepalive_timeout"); ok && len(args) > 0 && args[0] == "0" {
			continue
		}
		if _, _, ok := nginxSetting(c, "keepalive_min_timeout"); ok || c.Version == "" {
			continue
		}
		fin := Finding{
			Check: "nginx-keepalive", Subject: c.Main(),
			Saw: fmt.Sprintf("nginx %s with keep-alive on and no `keepalive_min_timeout`; run by %s", c.Version, runBy(c)),
			Why: "at a reload an old nginx worker closes its idle keep-alive connections at once, so a client that " +
				"sends its next request on one at that moment loses it (one request per connection per reload for " +
				"clients that do not retry)",
			Pids: c.Pids, Ports: c.Ports,
			Data: map[string]any{"config": c.Main(), "version": c.Version},
		}
		if versionAtLeast(c.Version, 1, 27, 4) {
			fin.Severity = Warning
			fin.Fix = "add `keepalive_min_timeout 10s;` (for example) to the http context: the old worker keeps idle " +
				"connections that long and answers a request on them (none lost, even at several reloads a second), at " +
				"the price of old workers lingering that long"
		} else {
			fin.Severity = Info
			fin.Fix = "nginx before 1.27.4 cannot wait for the next request: upgrade to 1.27.4+ and set " +
				"`keepalive_min_timeout`, or turn keep-alive off (`keepalive_timeout 0`); clients that retry a request " +
				"on a connection closed before any response byte (browsers, most libraries) see nothing"
		}
		out = append(out, fin)
	}
	return out
}

// versionAtLeast compares a dotted version ("1.31.4") with want.
func versionAtLeast(v string, want ...int) bool {
	parts := strings.Split(v, ".")
	for i, w := range want {
		if i >= len(parts) {
			return false
		}
		n, err := strconv.Atoi(parts[i])
		if err != nil {
			return false
		}
		if n != w {
			return n > w
		}
	}
	return true
}
