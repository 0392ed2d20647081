package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// proxyBin is one proxy binary the bench runs, and the version it
// reports.
type proxyBin struct {
	Path    string `json:"path"`
	Version string `json:"version"` // "3.2.0", "2.6.12"
	// Line is the first line of `-v` (HAProxy) or `-v`'s stderr (nginx).
	Line         string `json:"version_line"`
	major, minor int
}

// atLeast reports whether the version is major.minor or later.
func (p proxyBin) atLeast(major, minor int) bool {
	return p.major > major || (p.major == major && p.minor >= minor)
}

// syncReload reports whether HAProxy's master CLI `reload` answers only
// once the new worker is ready (3.1 and later: the answer is the new
// master's `_loadstatus`, which waits while a worker is still starting).
// 2.7–3.0 answer after the new master parsed and forked; 2.6 closes the
// connection without an answer when it re-executes itself.
func (p proxyBin) syncReload() bool { return p.atLeast(3, 1) }

// hasRenice reports whether HAProxy knows tune.renice.startup/runtime
// (3.1 and later).
func (p proxyBin) hasRenice() bool { return p.atLeast(3, 1) }

// label is "HAProxy 3.2.0" or "nginx 1.22.1".
func (p proxyBin) label(name string) string { return name + " " + p.Version }

// versionRe finds "2.6.12" in "HAProxy version 2.6.12-1+deb12u4 ..." and
// "1.22.1" in "nginx version: nginx/1.22.1".
var versionRe = regexp.MustCompile(`(?:HAProxy version |nginx/)(\d+)\.(\d+)(?:\.(\d+))?`)

// findProxy resolves name (a path, or a name looked up in PATH) and asks
// the binary its version.
func findProxy(ctx context.Context, name string) (proxyBin, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return proxyBin{}, err
	}
	p, err := parseVersion(commandOutput(ctx, path, "-v"))
	if err != nil {
		return p, fmt.Errorf("%s -v: %w", path, err)
	}
	p.Path = path
	return p, nil
}

// parseVersion reads the output of `haproxy -v` or `nginx -v`.
func parseVersion(out string) (proxyBin, error) {
	m := versionRe.FindStringSubmatch(out)
	if m == nil {
		return proxyBin{}, fmt.Errorf("no version in %q", firstLine(out))
	}
	p := proxyBin{Line: firstLine(out), Version: m[1] + "." + m[2]}
	if m[3] != "" {
		p.Version += "." + m[3]
	}
	p.major, _ = strconv.Atoi(m[1])
	p.minor, _ = strconv.Atoi(m[2])
	return p, nil
}

// proxyFlag collects a repeatable --haproxy.
type proxyFlag []string

func (f *proxyFlag) String() string { return strings.Join(*f, " ") }

func (f *proxyFlag) Set(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("empty path")
	}
	*f = append(*f, s)
	return nil
}

// proxyChoice is the binaries a bench runs: HAProxy[0] for every scenario,
// the others for the reload-latency comparison per version.
type proxyChoice struct {
	HAProxy []proxyBin `json:"haproxy"`
	Nginx   proxyBin   `json:"nginx"`
	// Big is the HAProxy of the big-config and during-reload scenarios:
	// the first one of 3.1 or later (synchronous master CLI `reload` and
	// tune.renice.*), else the first.
	Big proxyBin `json:"big_configs"`
}

// chooseProxies resolves --haproxy (default: $BATON_HAPROXY, then haproxy
// in PATH) and --nginx (default: $BATON_NGINX, then nginx in PATH).
func chooseProxies(ctx context.Context, haproxy []string, nginx string) (proxyChoice, error) {
	var c proxyChoice
	if len(haproxy) == 0 {
		haproxy = []string{envOr("BATON_HAPROXY", "haproxy")}
	}
	if nginx == "" {
		nginx = envOr("BATON_NGINX", "nginx")
	}
	seen := map[string]bool{}
	for _, h := range haproxy {
		p, err := findProxy(ctx, h)
		if err != nil {
			return c, fmt.Errorf("haproxy %q (make bench installs haproxy): %w", h, err)
		}
		if seen[p.Path] {
			continue
		}
		seen[p.Path] = true
		c.HAProxy = append(c.HAProxy, p)
	}
	var err error
	if c.Nginx, err = findProxy(ctx, nginx); err != nil {
		return c, fmt.Errorf("nginx %q (make bench installs nginx): %w", nginx, err)
	}
	c.Big = c.HAProxy[0]
	for _, h := range c.HAProxy {
		if h.syncReload() {
			c.Big = h
			break
		}
	}
	return c, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
