package doctor

import (
	"fmt"
	"strings"
)

// runBy says who runs a configuration, for findings.
func runBy(c ProxyConfig) string {
	pids := make([]string, len(c.Pids))
	for i, p := range c.Pids {
		pids[i] = fmt.Sprint(p)
	}
	s := fmt.Sprintf("%s (pids %s)", c.Program, strings.Join(pids, " "))
	if c.Baton != "" {
		s += " under the baton on " + c.Baton
	}
	return s
}

func configsOf(f *Facts, program string) []ProxyConfig {
	var out []ProxyConfig
	for _, c := range f.Configs {
		if c.Program == program && len(c.Files) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// checkHAProxyKeepAlive: an HTTP frontend without `option
// idle-close-on-response` (from itself or its defaults), or a global
// `close-spread-time`.
func checkHAProxyKeepAlive(f *Facts, _ Options) []Finding {
	var out []Finding
	for _, c := range configsOf(f, "haproxy") {
		hc := parseHAProxy(c.Files)
		var missing []string
		for _, p := range hc.proxies {
			if p.mode == "http" && !p.idleClose {
				missing = append(missing, fmt.Sprintf("%s %s (%s)", p.kind, p.name, p.where))
			}
		}
		if len(missing) == 0 && hc.closeSpread == "" {
			continue
		}
		var saw []string
		if len(missing) > 0 {
			saw = append(saw, "no `option idle-close-on-response` for the HTTP "+strings.Join(missing, ", "))
		}
		if hc.closeSpread != "" {
			saw = append(saw, "`close-spread-time` is set ("+hc.closeSpread+")")
		}
		out = append(out, Finding{
			Check: "haproxy-keepalive", Severity: Warning, Subject: c.Main(),
			Saw:  strings.Join(saw, "; ") + "; run by " + runBy(c),
			Why:  keepAliveWhy(len(missing) > 0, hc.closeSpread != ""),
			Fix:  keepAliveFix(len(missing) > 0, hc.closeSpread != ""),
			Pids: c.Pids, Ports: c.Ports,
			Data: map[string]any{"config": c.Main(), "proxies_missing": missing, "close_spread_time": hc.closeSpread},
		})
	}
	return out
}

func keepAliveWhy(missing, spread bool) string {
	var why []string
	if missing {
		why = append(why, "at a reload the old HAProxy process closes its idle keep-alive connections at once, so a "+
			"client that sends its next request on one at that moment loses it (about 4 % of keep-alive requests at "+
			"10 reloads a second)")
	}
	if spread {
		why = append(why, "close-spread-time lets old processes go on answering active connections with the old "+
			"configuration for that window")
	}
	return strings.Join(why, ", and ")
}

func keepAliveFix(missing, spread bool) string {
	var fix []string
	if missing {
		fix = append(fix, "add `option idle-close-on-response` to the defaults section (the old process then answers "+
			"the next request on each idle connection, with `Connection: close`: none lost) and keep keep-alive "+
			"short: `timeout http-keep-alive 10s`")
	}
	if spread {
		fix = append(fix, "remove the `close-spread-time` line from the global section")
	}
	return strings.Join(fix, "; ")
}

// checkHAProxyHardStop: no global `hard-stop-after`, so an old process's
// drain has no end of its own.
func checkHAProxyHardStop(f *Facts, _ Options) []Finding {
	var out []Finding
	for _, c := range configsOf(f, "haproxy") {
		if parseHAProxy(c.Files).hardStop != "" {
			continue
		}
		fix := "add `hard-stop-after 4m` (for example) to the global section"
		if c.Baton != "" {
			fix += ", a little below baton's --drain-timeout, so that HAProxy ends its own drain before baton's hard stop"
		}
		out = append(out, Finding{
			Check: "haproxy-hard-stop", Severity: Warning, Subject: c.Main(),
			Saw: "no `hard-stop-after` in the global section; run by " + runBy(c),
			Why: "without it an old HAProxy process drains until its last connection closes, so one long-lived client " +
				"(websocket, stream, idle keep-alive) keeps it and its old configuration alive for hours and old processes pile up",
			Fix:  fix,
			Pids: c.Pids, Ports: c.Ports,
			Data: map[string]any{"config": c.Main()},
		})
	}
	return out
}

// checkNginxShutdown: no `worker_shutdown_timeout`, so an old nginx
// worker's drain has no end of its own.
func checkNginxShutdown(f *Facts, _ Options) []Finding {
	var out []Finding
	for _, c := range configsOf(f, "nginx") {
		if _, _, ok := nginxSetting(c, "worker_shutdown_timeout"); ok {
			continue
		}
		fix := "add `worker_shutdown_timeout 4m;` (for example) at the top level of nginx.conf (the main context)"
		if c.Baton != "" {
			fix += ", a little below baton's --drain-timeout, so that nginx ends its own drain before baton's hard stop"
		}
		var files []string
		for _, cf := range c.Files {
			files = append(files, cf.Path)
		}
		out = append(out, Finding{
			Check: "nginx-shutdown-timeout", Severity: Warning, Subject: c.Main(),
			Saw: fmt.Sprintf("no `worker_shutdown_timeout` in %s; run by %s", strings.Join(files, ", "), runBy(c)),
			Why: "after a reload an old nginx worker waits for its last connection (websocket, proxied stream, slow " +
				"download) to end, so without a timeout old workers with the old configuration pile up",
			Fix:  fix,
			Pids: c.Pids, Ports: c.Ports,
			Data: map[string]any{"config": c.Main(), "files": files},
		})
	}
	return out
}
