package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/batonproxy/baton/internal/testbed"
)

// Method is one way of running a proxy and reloading it. Every method
// serves the same answer (200, X-Gen: VERSION) on 127.0.0.1:PORT.
type Method interface {
	// ID names the method in --only and JSON ("baton-haproxy").
	ID() string
	// Name is the method as the tables show it.
	Name() string
	// Start serves version 1 on 127.0.0.1:port and returns once it
	// answers.
	Start(ctx context.Context, port int) error
	// Reload writes the config of version and triggers a reload; it
	// returns when the method says the reload is done (its ack).
	Reload(ctx context.Context, version int) (reloadInfo, error)
	// Kill kill -9s the process that serves, and says which.
	Kill() (string, error)
	// Serving reports whether anything is left to serve or to restart the
	// service (false once a native HAProxy master has exited).
	Serving() bool
	// Stop stops every process the method started, by pid.
	Stop() error
}

// reloadInfo is what a method reports of one reload.
type reloadInfo struct {
	// Server is the duration the supervisor itself reports (baton's
	// duration_ms), 0 when the method has none.
	Server time.Duration
	// AckAt, when set, is when the method's ack came, if the method did
	// more after it (a check of the ack) before returning.
	AckAt time.Time
}

// env is what every method needs: binaries and a short root directory
// (unix socket paths are limited to 107 bytes).
type env struct {
	root      string
	baton     string
	activated string
	haproxy   string // haproxyBin.Path
	nginx     string
	// haproxyBin is the HAProxy this env's methods run, nginxBin the nginx.
	haproxyBin, nginxBin proxyBin
	// batonRun are more `baton run` flags for every baton method.
	batonRun []string
	seq      *int // shared by the copies of withHAProxy
}

// dir makes a new directory for one method instance below the root.
func (e *env) dir(id string) (string, error) {
	*e.seq++
	d := filepath.Join(e.root, strconv.Itoa(*e.seq)+"-"+id)
	return d, os.Mkdir(d, 0o755)
}

// withHAProxy is a copy of e whose methods run the HAProxy p.
func (e *env) withHAProxy(p proxyBin) *env {
	c := *e
	c.haproxy, c.haproxyBin = p.Path, p
	return &c
}

// withBatonRun is a copy of e whose baton methods add flags to `baton run`.
func (e *env) withBatonRun(flags ...string) *env {
	c := *e
	c.batonRun = append(append([]string{}, e.batonRun...), flags...)
	return &c
}

// configKind says which config a method serves.
type configKind int

const (
	haproxyConfig configKind = iota
	nginxConfig
	activatedConfig
)

// renderConfig is the config of version on port. HAProxy configs carry
// `option idle-close-on-response` in every method and mode (baton's
// recommended setting; it changes nothing for new-connection load), nginx
// and the socket-activated example use their defaults.
func renderConfig(kind configKind, port, version int) string {
	switch kind {
	case haproxyConfig:
		return testbed.HAProxyConfig(port, version, testbed.KeepAliveSafe.Global, testbed.KeepAliveSafe.Defaults)
	case nginxConfig:
		return testbed.NginxConfig(port, version, nil, nil)
	default:
		return fmt.Sprintf("version=%d\ntext=storm\n", version)
	}
}

func writeConfig(path string, kind configKind, port, version int) error {
	return testbed.WriteFileAtomic(path, []byte(renderConfig(kind, port, version)))
}

// probeClient makes one request per connection, never reused.
var probeClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	Timeout:   2 * time.Second,
}

// probe makes one GET on a new connection and returns the X-Gen header.
func probe(ctx context.Context, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return resp.Header.Get("X-Gen"), nil
}

// errTimeout: something the bench waited for did not happen in time.
var errTimeout = errors.New("timed out")

// waitServing polls addr every 5 ms until it answers with version, for at
// most timeout. alive, when not nil, stops the wait early once it is false.
func waitServing(ctx context.Context, addr string, version int, timeout time.Duration, alive func() bool) error {
	want := strconv.Itoa(version)
	var last error
	ok := pollUntil(timeout, 5*time.Millisecond, func() bool {
		if ctx.Err() != nil || (alive != nil && !alive()) {
			return true
		}
		gen, err := probe(ctx, addr)
		if err == nil && gen != want {
			err = fmt.Errorf("answered version %q, want %s", gen, want)
		}
		last = err
		return err == nil
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case alive != nil && !alive():
		return errors.New("exited before serving")
	case !ok:
		return fmt.Errorf("%s not serving version %d after %s: %w (%w)", addr, version, timeout, last, errTimeout)
	}
	return nil
}

// freePort is a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freePorts are n distinct loopback ports, found by holding n sockets
// bound at once, then closing them.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("port %d of %d: %w", len(ports)+1, n, err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// addr is 127.0.0.1:port.
func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }
