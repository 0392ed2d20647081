package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// The HTTP/3 storm (`storm bench --h3`): HTTP/3 load from quic-go's client,
// 16 clients capped at 2,000 requests/s, 5 s per mode, a reload due every
// 100 ms from 0.5 s after the load begins until 0.5 s before it ends. Each
// proxy first runs the same load without reloads.
const (
	h3Workers  = 16
	h3Rate     = 2000
	h3Duration = 5 * time.Second
	h3Interval = 100 * time.Millisecond
	h3Margin   = 500 * time.Millisecond
)

// h3Maker makes a method serving HTTP/3 (and, for the bench's readiness
// probe, HTTP/1.1 over TCP) on port with the certificate crt.
type h3Maker struct {
	id   string
	make func(e *env, port int, crt string) Method
	// refusalOK: the method may refuse the config (baton as it is: no
	// UDP listeners); the refusal is the row, not an error.
	refusalOK bool
}

var h3Methods = []h3Maker{
	{id: "haproxy-mw", make: func(e *env, port int, crt string) Method {
		m := newHAProxyMW(e)
		m.render = func(v int) string { return h3HAProxyConfig(port, v, crt) }
		return m
	}},
	{id: "nginx-hup", make: func(e *env, port int, crt string) Method {
		m := newNginxHUP(e)
		m.render = func(v int) string { return h3NginxConfig(port, v, crt, false, 2) }
		return m
	}},
	// one worker: what baton supports for nginx QUIC (several workers share
	// one UDP socket without reuseport, and baton refuses reuseport).
	{id: "nginx-hup-1w", make: func(e *env, port int, crt string) Method {
		m := newNginxHUP(e)
		m.render = func(v int) string { return h3NginxConfig(port, v, crt, false, 1) }
		return h3Named{m, "nginx-hup-1w", "nginx -s reload (SIGHUP), `worker_processes 1`"}
	}},
	{id: "nginx-hup-reuseport", make: func(e *env, port int, crt string) Method {
		m := newNginxHUP(e)
		m.render = func(v int) string { return h3NginxConfig(port, v, crt, true, 2) }
		return h3Named{m, "nginx-hup-reuseport", "nginx -s reload (SIGHUP), `quic reuseport`"}
	}},
	// nginx's own steering: reuseport sockets per worker and quic_bpf,
	// whose maps survive a HUP (the same master); refused under baton.
	{id: "nginx-hup-bpf", make: func(e *env, port int, crt string) Method {
		m := newNginxHUP(e)
		m.render = func(v int) string { return "quic_bpf on;\n" + h3NginxConfig(port, v, crt, true, 2) }
		return h3Named{m, "nginx-hup-bpf", "nginx -s reload (SIGHUP), `quic reuseport`, `quic_bpf on`, 2 workers"}
	}},
	// baton, listeners from the config: the QUIC address is a steered
	// group of baton's UDP sockets, one member per generation, with the
	// default --udp-drain-delay (1 s).
	{id: "baton-haproxy-fromconfig", refusalOK: true, make: func(e *env, port int, crt string) Method {
		m := newBatonHAProxy(e)
		m.fromConfig = true
		m.render = func(v int) string { return h3HAProxyConfig(port, v, crt) }
		return h3Named{m, "baton-haproxy-fromconfig", "baton + HAProxy, listeners from the config"}
	}},
	{id: "baton-nginx-fromconfig", refusalOK: true, make: func(e *env, port int, crt string) Method {
		m := newBatonNginx(e)
		m.fromConfig = true
		m.render = func(v int) string { return h3NginxConfig(port, v, crt, false, 1) }
		return h3Named{m, "baton-nginx-fromconfig", "baton + nginx, listeners from the config, `worker_processes 1`"}
	}},
	// The same with --udp-drain-delay 250ms: reloads acknowledged sooner,
	// less time for handshakes begun at the old generation.
	{id: "baton-haproxy-fromconfig-250ms", refusalOK: true, make: func(e *env, port int, crt string) Method {
		m := newBatonHAProxy(e)
		m.fromConfig, m.extra = true, []string{"--udp-drain-delay", "250ms"}
		m.render = func(v int) string { return h3HAProxyConfig(port, v, crt) }
		return h3Named{m, "baton-haproxy-fromconfig-250ms", "baton + HAProxy, listeners from the config, `--udp-drain-delay 250ms`"}
	}},
	{id: "baton-nginx-fromconfig-250ms", refusalOK: true, make: func(e *env, port int, crt string) Method {
		m := newBatonNginx(e)
		m.fromConfig, m.extra = true, []string{"--udp-drain-delay", "250ms"}
		m.render = func(v int) string { return h3NginxConfig(port, v, crt, false, 1) }
		return h3Named{m, "baton-nginx-fromconfig-250ms", "baton + nginx, listeners from the config, `worker_processes 1`, `--udp-drain-delay 250ms`"}
	}},
	// baton as it is with --listen for the TCP port only: baton passes
	// no UDP socket, each generation binds its own.
	{id: "baton-haproxy", refusalOK: true, make: func(e *env, port int, crt string) Method {
		m := newBatonHAProxy(e)
		m.render = func(v int) string { return h3HAProxyConfig(port, v, crt) }
		return h3Named{m, "baton-haproxy", "baton + HAProxy, --listen tcp:// only (QUIC bound by each generation)"}
	}},
	{id: "baton-nginx", refusalOK: true, make: func(e *env, port int, crt string) Method {
		m := newBatonNginx(e)
		m.render = func(v int) string { return h3NginxConfig(port, v, crt, false, 2) }
		return h3Named{m, "baton-nginx", "baton + nginx, --listen tcp:// only (QUIC bound by each generation)"}
	}},
}

// h3Named renames a method for the HTTP/3 table.
type h3Named struct {
	Method
	id, name string
}

func (m h3Named) ID() string   { return m.id }
func (m h3Named) Name() string { return m.name }

// h3ID is a scenario id: h3/100ms/newconn/haproxy-mw, or h3/none/... for
// the run without reloads.
func h3ID(reloads bool, mode load.Mode, method string) string {
	iv := "none"
	if reloads {
		iv = h3Interval.String()
	}
	return fmt.Sprintf("h3/%s/%s/%s", iv, mode, method)
}

// h3Family runs the HTTP/3 storms when --h3 asked for them.
func (b *bench) h3Family(ctx context.Context) {
	if !b.h3 {
		return
	}
	crt, err := writeLoopbackCert(filepath.Join(b.e.root, "h3"))
	if err != nil {
		b.fail("h3", err)
		return
	}
	for _, mm := range h3Methods {
		if ctx.Err() != nil {
			return
		}
		b.h3Method(ctx, mm, crt)
	}
}

// h3Method starts one method and runs its selected scenarios: without
// reloads, then the storms, both modes.
func (b *bench) h3Method(ctx context.Context, mm h3Maker, crt string) {
	type run struct {
		reloads bool
		mode    load.Mode
	}
	var runs []run
	for _, reloads := range []bool{false, true} {
		for _, mode := range stormModes {
			if b.want(h3ID(reloads, mode, mm.id)) && (reloads || !mm.refusalOK) {
				runs = append(runs, run{reloads, mode})
			}
		}
	}
	if len(runs) == 0 {
		return
	}
	port, err := freeDualPort()
	if err != nil {
		b.fail("h3/"+mm.id, err)
		return
	}
	m := mm.make(b.e, port, crt)
	err = m.Start(ctx, port)
	if err == nil {
		err = waitServingH3(ctx, port, 1, crt, 30*time.Second)
	}
	if err != nil {
		if !mm.refusalOK {
			b.fail("h3/"+mm.id, err)
		}
		for _, r := range runs {
			row := stormRow{Method: m.ID(), MethodName: m.Name(), Mode: r.mode.String(), IntervalMs: int(h3Interval / time.Millisecond), Refusal: refusalText(err)}
			b.rep.H3Storms = append(b.rep.H3Storms, row)
		}
		b.logf("%s: refused: %s", "h3/"+mm.id, refusalText(err))
	} else {
		version := 1
		for _, r := range runs {
			if ctx.Err() != nil {
				break
			}
			id := h3ID(r.reloads, r.mode, mm.id)
			row, err := b.h3Storm(ctx, m, port, crt, &version, r.reloads, r.mode)
			if err != nil {
				b.fail(id, err)
				continue
			}
			b.rep.H3Storms = append(b.rep.H3Storms, row)
			b.logf("%s: %s", id, row.oneLine())
		}
	}
	if err := m.Stop(); err != nil {
		b.fail("h3/"+mm.id, err)
	}
}

// h3Storm runs one HTTP/3 load against a started method, with a reload
// due every 100 ms when reloads is set.
func (b *bench) h3Storm(ctx context.Context, m Method, port int, crt string, version *int, reloads bool, mode load.Mode) (stormRow, error) {
	spec := stormSpec{
		load: load.Config{Addr: addr(port), Workers: h3Workers, Mode: mode, Duration: h3Duration, Rate: h3Rate,
			Proto: load.HTTP3, CAFile: crt},
		interval: h3Interval,
		warmup:   h3Margin,
		tail:     h3Margin,
		policy:   waitBusy,
		reload: func(ctx context.Context, _ int) (int, reloadInfo, error) {
			*version++
			v := *version
			info, err := m.Reload(ctx, v)
			return v, info, err
		},
	}
	window := h3Duration - 2*h3Margin
	if !reloads {
		// Nothing is due: the first reload would be at the end.
		spec.warmup, spec.tail, window = h3Duration, 0, 0
	}
	out, err := driveStorm(ctx, spec)
	if err != nil {
		return stormRow{}, err
	}
	row := stormRow{Method: m.ID(), MethodName: m.Name(), Mode: mode.String(), DurationS: h3Duration.Seconds(), Workers: h3Workers}
	if reloads {
		row.IntervalMs = int(h3Interval / time.Millisecond)
	}
	row.fill(out, window)
	row.ClosedIdle, row.Resent = out.res.ClosedIdle, out.res.Resent
	row.FailureExamples = failureExamples(out.res)
	return row, nil
}

// failureExamples is the first failed sample of each class.
func failureExamples(res *load.Result) []string {
	seen := map[load.Class]bool{}
	var out []string
	for _, s := range res.Samples {
		if s.Class != load.OK && !seen[s.Class] {
			seen[s.Class] = true
			out = append(out, s.String())
		}
	}
	return out
}

// waitServingH3 polls 127.0.0.1:port over HTTP/3 every 20 ms until it
// answers with version, for at most timeout.
func waitServingH3(ctx context.Context, port, version int, crt string, timeout time.Duration) error {
	want := fmt.Sprint(version)
	var last string
	ok := pollUntil(timeout, 20*time.Millisecond, func() bool {
		res, err := load.Run(ctx, load.Config{Addr: addr(port), Proto: load.HTTP3, CAFile: crt, Workers: 1, MaxRequests: 1,
			ConnectTimeout: 500 * time.Millisecond, ReadTimeout: time.Second})
		if err != nil || ctx.Err() != nil {
			last = fmt.Sprint(err)
			return true
		}
		if res.Total == 1 && res.Counts[load.OK] == 1 && res.Samples[0].Gen == want {
			last = ""
			return true
		}
		last = res.Summary()
		if res.Total == 1 {
			last = res.Samples[0].String()
		}
		return false
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case !ok || last != "":
		return fmt.Errorf("%s not serving version %d over HTTP/3 after %s: %s (%w)", addr(port), version, timeout, last, errTimeout)
	}
	return nil
}

// freeDualPort is a loopback port that was free for both TCP and UDP a
// moment ago (the HTTP/3 configs serve QUIC and the bench's TCP probe on
// the same number).
func freeDualPort() (int, error) {
	for range 20 {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p})
		if err == nil {
			return p, u.Close()
		}
	}
	return 0, errors.New("no loopback port free for both TCP and UDP after 20 tries")
}

// refusalText is the reason a method did not start: the last log line
// with an "error" field in the error's text (baton's JSON log), else its
// first line.
func refusalText(err error) string {
	text := err.Error()
	found := ""
	for _, line := range strings.Split(text, "\n") {
		var entry map[string]any
		if json.Unmarshal([]byte(strings.TrimSpace(line)), &entry) != nil {
			continue
		}
		if e, ok := entry["error"].(string); ok {
			found = e
			if msg, ok := entry["msg"].(string); ok {
				found = msg + ": " + e
			}
		}
	}
	if found != "" {
		return found
	}
	return firstLine(text)
}

// h3Table is the HTTP/3 storms' table.
func h3Table(r *benchReport) string {
	if len(r.H3Storms) == 0 {
		return ""
	}
	t := newTable("method", "mode", "reloads", "requests", "failed (by class)", "stale", "closed between requests", "not processed by the server, resent", "reloads acked (errors)", "reload ack p50 / p99 ms", "OK latency p50 / p99 ms")
	for _, s := range r.H3Storms {
		every := "none"
		if s.IntervalMs > 0 {
			every = "every " + interval(s.IntervalMs)
		}
		if s.Refusal != "" {
			t.row(s.MethodName, modeName(s.Mode), every, "–", "refused to start: "+s.Refusal, "–", "–", "–", "–", "–", "–")
			continue
		}
		t.row(s.MethodName, modeName(s.Mode), every, num(s.Requests), failures(s.Failed, s.Classes), num(s.Stale),
			closedIdleText(s.ClosedIdle), closedIdleText(s.Resent), fmt.Sprintf("%d (%d)", s.Reloads, s.ReloadErrors), pp(s.Reload), pp(s.Latency))
	}
	return "### HTTP/3 reload storms\n\n" + t.String()
}

// closedIdleText is "0" or "N (why n, ...)".
func closedIdleText(m map[string]int) string {
	n := 0
	for _, v := range m {
		n += v
	}
	return failures(n, m)
}
