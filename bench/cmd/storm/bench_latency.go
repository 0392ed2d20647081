package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// latencyRow is one line of the idle reload-latency table: a method's
// sequential reloads, or a reference measurement of the proxy itself.
type latencyRow struct {
	ID   string `json:"id"`
	What string `json:"what"`
	// Ack: from the trigger to the method's acknowledgement (the command
	// returned, the new worker listed, ...); for references, the measured
	// operation.
	Ack durStats `json:"ack"`
	// Switch: from the trigger to the first answer from the new version
	// on a new connection (polled every 2 ms).
	Switch durStats `json:"first_new_answer"`
	// Server: baton's own account of the reload (duration_ms).
	Server     durStats `json:"server"`
	Errors     int      `json:"errors"`
	FirstError string   `json:"first_error,omitempty"`
	// Proxy is the proxy and version that ran ("HAProxy 3.2.0"), Binary
	// its path; AckKind what the ack of a native method was.
	Proxy   string `json:"proxy,omitempty"`
	Binary  string `json:"binary,omitempty"`
	AckKind string `json:"ack_kind,omitempty"`
	// AckReady: the native ack comes once the new worker is ready.
	AckReady bool `json:"ack_after_ready,omitempty"`
}

// latencyFamily measures reloads one at a time without load, then the
// proxies' own check and start times for reference.
func (b *bench) latencyFamily(ctx context.Context) {
	for _, mm := range stormMethods {
		b.latencyOf(ctx, b.e, "latency/"+mm.id, mm.make)
	}
	b.latencyOf(ctx, b.e, "latency/baton-haproxy-api", func(e *env) Method { return viaAPI(newBatonHAProxy(e)) })
	b.latencyOf(ctx, b.e, "latency/baton-nginx-api", func(e *env) Method { return viaAPI(newBatonNginx(e)) })
	refs := []struct {
		id, what string
		f        func(context.Context, *env) ([]time.Duration, error)
	}{
		{"latency/ref-haproxy-check", "`haproxy -c` (config check)", b.haproxyCheckTimes},
		{"latency/ref-haproxy-start", "HAProxy start to first answer (`haproxy -W -db`)", b.haproxyStartTimes},
		{"latency/ref-nginx-check", "`nginx -t` (config check)", b.nginxCheckTimes},
		{"latency/ref-nginx-start", "nginx start to first answer", b.nginxStartTimes},
	}
	for _, r := range refs {
		b.latencyRef(ctx, b.e, r.id, r.what, r.f)
	}
}

// latencyOf measures the sequential reloads of one method as id.
func (b *bench) latencyOf(ctx context.Context, e *env, id string, mk func(*env) Method) {
	if !b.want(id) || ctx.Err() != nil {
		return
	}
	b.withMethod(ctx, id, func(*env) Method { return mk(e) }, func(m Method, port int) error {
		row := b.reloadLatency(ctx, m, port, b.plan.LatencyReloads)
		row.ID = id
		row.Proxy, row.Binary = e.proxyOf(m.ID())
		if mw, ok := m.(*haproxyMW); ok {
			row.AckKind, row.AckReady = mw.ackKind(), mw.e.haproxyBin.syncReload()
		}
		b.rep.Latency = append(b.rep.Latency, row)
		b.logf("%s (%s): ack p50 %.1f p99 %.1f ms; new version answers after p50 %.1f p99 %.1f ms; %d errors %s", id, row.Proxy, row.Ack.P50, row.Ack.P99, row.Switch.P50, row.Switch.P99, row.Errors, row.FirstError)
		return nil
	})
}

// latencyRef times one of the proxy's own steps as id.
func (b *bench) latencyRef(ctx context.Context, e *env, id, what string, f func(context.Context, *env) ([]time.Duration, error)) {
	if !b.want(id) || ctx.Err() != nil {
		return
	}
	ds, err := f(ctx, e)
	if err != nil {
		b.fail(id, err)
		return
	}
	row := latencyRow{ID: id, What: what, Ack: summarize(ds)}
	row.Proxy, row.Binary = e.proxyOf(id)
	b.rep.Latency = append(b.rep.Latency, row)
	b.logf("%s (%s): p50 %.1f p99 %.1f ms", id, row.Proxy, row.Ack.P50, row.Ack.P99)
}

// proxyOf names the proxy an id or method id runs, and its path.
func (e *env) proxyOf(id string) (label, path string) {
	switch {
	case strings.Contains(id, "haproxy"):
		return e.haproxyBin.label("HAProxy"), e.haproxy
	case strings.Contains(id, "nginx"):
		return e.nginxBin.label("nginx"), e.nginx
	}
	return "", ""
}

// reloadLatency runs the plan's sequential reloads, each with a poller
// that finds the first new-connection answer from the new version.
func (b *bench) reloadLatency(ctx context.Context, m Method, port, n int) latencyRow {
	row := latencyRow{What: m.Name()}
	var acks, switches, server []time.Duration
	for v := 2; v < 2+n && ctx.Err() == nil; v++ {
		start := time.Now()
		sw := make(chan time.Duration, 1)
		go func() { sw <- firstAnswer(ctx, addr(port), v, start, 10*time.Second) }()
		info, err := m.Reload(ctx, v)
		took := time.Since(start)
		if !info.AckAt.IsZero() {
			took = info.AckAt.Sub(start)
		}
		first := <-sw
		if err != nil {
			row.Errors++
			if row.FirstError == "" {
				row.FirstError = err.Error()
			}
			continue
		}
		acks = append(acks, took)
		if first >= 0 {
			switches = append(switches, first)
		}
		if info.Server > 0 {
			server = append(server, info.Server)
		}
		settle(ctx, m)
	}
	row.Ack, row.Switch, row.Server = summarize(acks), summarize(switches), summarize(server)
	return row
}

// firstAnswer polls addr with a new connection every 2 ms until version
// answers, and returns how long after start that was (-1: not within
// timeout).
func firstAnswer(ctx context.Context, a string, version int, start time.Time, timeout time.Duration) time.Duration {
	want := strconv.Itoa(version)
	var at time.Duration = -1
	pollUntil(timeout, 2*time.Millisecond, func() bool {
		if ctx.Err() != nil {
			return true
		}
		gen, err := probe(ctx, a)
		if err == nil && gen == want {
			at = time.Since(start)
			return true
		}
		return false
	})
	return at
}

// timeRuns runs f n times and returns each run's duration.
func timeRuns(ctx context.Context, n int, f func() error) ([]time.Duration, error) {
	var ds []time.Duration
	for i := 0; i < n && ctx.Err() == nil; i++ {
		start := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		ds = append(ds, time.Since(start))
	}
	return ds, nil
}

// refConfig writes a config of kind for a fresh port into a new directory.
func refConfig(e *env, kind configKind, name string) (dir, cfg string, port int, err error) {
	if dir, err = e.dir("ref"); err != nil {
		return
	}
	if port, err = freePort(); err != nil {
		return
	}
	cfg = filepath.Join(dir, name)
	err = writeConfig(cfg, kind, port, 1)
	return
}

func runQuiet(ctx context.Context, argv ...string) error {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %w: %s", argv, err, out)
	}
	return nil
}

func (b *bench) haproxyCheckTimes(ctx context.Context, e *env) ([]time.Duration, error) {
	_, cfg, _, err := refConfig(e, haproxyConfig, "haproxy.cfg")
	if err != nil {
		return nil, err
	}
	return timeRuns(ctx, b.plan.LatencyReloads, func() error { return runQuiet(ctx, e.haproxy, "-c", "-q", "-f", cfg) })
}

func (b *bench) nginxCheckTimes(ctx context.Context, e *env) ([]time.Duration, error) {
	dir, cfg, _, err := refConfig(e, nginxConfig, "nginx.conf")
	if err != nil {
		return nil, err
	}
	pid := "pid " + filepath.Join(dir, "nginx.pid") + ";"
	return timeRuns(ctx, b.plan.LatencyReloads, func() error { return runQuiet(ctx, e.nginx, "-q", "-t", "-e", "stderr", "-c", cfg, "-g", pid) })
}

// startToServe starts argv, waits for the first answer on port and stops
// it, n times.
func (b *bench) startToServe(ctx context.Context, port int, log string, argv []string) ([]time.Duration, error) {
	return timeRuns(ctx, b.plan.LatencyReloads, func() error {
		p, err := startProc(argv, log, syscall.SIGTERM)
		if err != nil {
			return err
		}
		defer func() {
			ids := descendantIDs(p.Pid())
			p.stop(syscall.SIGTERM, 5*time.Second)
			reap(ids)
		}()
		if err := waitServing(ctx, addr(port), 1, 10*time.Second, func() bool { return !p.Exited() }); err != nil {
			return fmt.Errorf("%w\n%s", err, tail(log, 5))
		}
		return nil
	})
}

func (b *bench) haproxyStartTimes(ctx context.Context, e *env) ([]time.Duration, error) {
	dir, cfg, port, err := refConfig(e, haproxyConfig, "haproxy.cfg")
	if err != nil {
		return nil, err
	}
	return b.startToServe(ctx, port, filepath.Join(dir, "haproxy.log"), []string{e.haproxy, "-W", "-db", "-f", cfg})
}

func (b *bench) nginxStartTimes(ctx context.Context, e *env) ([]time.Duration, error) {
	dir, cfg, port, err := refConfig(e, nginxConfig, "nginx.conf")
	if err != nil {
		return nil, err
	}
	pid := filepath.Join(dir, "nginx.pid")
	defer os.Remove(pid)
	return b.startToServe(ctx, port, filepath.Join(dir, "nginx.log"),
		[]string{e.nginx, "-e", "stderr", "-c", cfg, "-g", "daemon off; pid " + pid + ";"})
}
