package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/batonproxy/baton/bench/load"
)

// Bounds of `storm run`.
const (
	maxRunDuration = 10 * time.Minute
	maxRunWorkers  = 1000
)

// runOptions are `storm run`'s flags.
type runOptions struct {
	url, reload, mode, versionHeader string
	proto, caFile                    string
	insecure                         bool
	interval, duration, timeout      time.Duration
	workers                          int
	rate                             float64
	json                             bool
}

// runReport is what `storm run` prints.
type runReport struct {
	URL       string         `json:"url"`
	Command   string         `json:"reload_command"`
	Mode      string         `json:"mode"`
	Workers   int            `json:"workers"`
	Rate      float64        `json:"rate_cap"`
	IntervalS float64        `json:"interval_s"`
	DurationS float64        `json:"duration_s"`
	Requests  int            `json:"requests"`
	OK        int            `json:"ok"`
	Failed    int            `json:"failed"`
	Classes   map[string]int `json:"failures_by_class"`
	// ClosedIdle and Resent (HTTP/3): connections found closed between
	// requests, and requests the server did not process, sent again
	// (load.Result); not failures.
	ClosedIdle map[string]int `json:"closed_idle,omitempty"`
	Resent     map[string]int `json:"resent,omitempty"`
	OKPerS     float64        `json:"ok_per_s"`
	PerSecond  []int          `json:"ok_per_second"`
	Latency    durStats       `json:"request_latency"`
	// Reloads: the command's runs; ReloadErrors those that failed;
	// Skipped the ticks that found one still running.
	Reloads      int            `json:"reloads"`
	ReloadErrors int            `json:"reload_errors"`
	FirstError   string         `json:"first_reload_error,omitempty"`
	Skipped      int            `json:"ticks_skipped"`
	Reload       durStats       `json:"reload_time"`
	Versions     []versionCount `json:"answers_by_version,omitempty"`
}

func parseRunFlags(args []string, stderr io.Writer) (runOptions, error) {
	var o runOptions
	fs := flag.NewFlagSet("storm run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "", "`URL` to load (http://HOST:PORT/PATH); required")
	fs.StringVar(&o.reload, "reload", "", "reload `COMMAND`, run by /bin/sh -c every interval; required")
	fs.DurationVar(&o.interval, "interval", time.Second, "time between reloads")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long the load runs (at most 10m)")
	fs.DurationVar(&o.timeout, "reload-timeout", time.Minute, "a reload command running longer is killed and counted as failed")
	fs.StringVar(&o.mode, "mode", "newconn", "newconn (a connection per request) or keepalive")
	fs.IntVar(&o.workers, "workers", 16, "concurrent clients (at most 1000)")
	fs.Float64Var(&o.rate, "rate", 0, "cap on requests/s over all clients (0: none)")
	fs.StringVar(&o.versionHeader, "version-header", "", "response `HEADER` naming the config version, to count answers by version")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON")
	fs.StringVar(&o.proto, "proto", "http1", "http1 (HTTP/1.1 over TCP) or h3 (HTTP/3 over QUIC; the URL is then https://)")
	fs.StringVar(&o.caFile, "cacert", "", "h3: PEM `FILE` of the certificates to trust (default: the system roots)")
	fs.BoolVar(&o.insecure, "insecure", false, "h3: accept any server certificate (for a loopback bench only)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.url == "" || o.reload == "":
		return o, errors.New("--url and --reload are required")
	case o.duration <= 0 || o.duration > maxRunDuration:
		return o, fmt.Errorf("--duration must be in (0, %s]", maxRunDuration)
	case o.interval <= 0 || o.interval > o.duration:
		return o, errors.New("--interval must be positive and at most --duration")
	case o.workers < 1 || o.workers > maxRunWorkers:
		return o, fmt.Errorf("--workers must be in [1, %d]", maxRunWorkers)
	case o.timeout <= 0:
		return o, errors.New("--reload-timeout must be positive")
	case o.mode != "newconn" && o.mode != "keepalive":
		return o, fmt.Errorf("--mode %q: want newconn or keepalive", o.mode)
	case o.proto != "http1" && o.proto != "h3":
		return o, fmt.Errorf("--proto %q: want http1 or h3", o.proto)
	case o.proto != "h3" && (o.caFile != "" || o.insecure):
		return o, errors.New("--cacert and --insecure go with --proto h3")
	}
	return o, nil
}

// loadConfig turns the URL and flags into the load generator's config.
func (o runOptions) loadConfig() (load.Config, error) {
	u, err := url.Parse(o.url)
	if err != nil {
		return load.Config{}, fmt.Errorf("--url: %w", err)
	}
	if o.proto == "h3" {
		return o.h3LoadConfig(u)
	}
	if u.Scheme != "http" || u.Host == "" {
		return load.Config{}, fmt.Errorf("--url %q: want http://HOST[:PORT]/PATH (plain HTTP/1.1)", o.url)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "80")
	}
	cfg := load.Config{Addr: hostport, Path: u.RequestURI(), Host: u.Host, Workers: o.workers,
		Duration: o.duration, Rate: o.rate, GenHeader: o.versionHeader}
	if o.mode == "keepalive" {
		cfg.Mode = load.KeepAlive
	} else {
		cfg.Mode = load.NewConn
	}
	return cfg, cfg.Validate()
}

// h3LoadConfig is loadConfig for --proto h3: an https:// URL, port 443 by
// default.
func (o runOptions) h3LoadConfig(u *url.URL) (load.Config, error) {
	if u.Scheme != "https" || u.Host == "" {
		return load.Config{}, fmt.Errorf("--url %q: want https://HOST[:PORT]/PATH with --proto h3", o.url)
	}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "443")
	}
	cfg := load.Config{Addr: hostport, Path: u.RequestURI(), Host: u.Host, Workers: o.workers,
		Duration: o.duration, Rate: o.rate, GenHeader: o.versionHeader,
		Proto: load.HTTP3, CAFile: o.caFile, InsecureSkipVerify: o.insecure}
	if o.mode == "keepalive" {
		cfg.Mode = load.KeepAlive
	} else {
		cfg.Mode = load.NewConn
	}
	return cfg, cfg.Validate()
}

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseRunFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "storm run: %v\n", err)
		return 2
	}
	cfg, err := o.loadConfig()
	if err != nil {
		fmt.Fprintf(stderr, "storm run: %v\n", err)
		return 2
	}
	spec := stormSpec{load: cfg, interval: o.interval, warmup: o.interval, policy: skipBusy,
		reload: func(ctx context.Context, _ int) (int, reloadInfo, error) {
			return 0, reloadInfo{}, runShell(ctx, o.reload, o.timeout)
		}}
	out, err := driveStorm(ctx, spec)
	if err != nil {
		fmt.Fprintf(stderr, "storm run: %v\n", err)
		return 1
	}
	rep := o.report(out)
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		_, err = io.WriteString(stdout, rep.text())
	}
	if err != nil {
		return 1
	}
	if rep.Failed > 0 || rep.ReloadErrors > 0 {
		return 1
	}
	return 0
}

// runShell runs a reload command; its output is kept for the error.
func runShell(ctx context.Context, command string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 300 {
			msg = "..." + msg[len(msg)-300:]
		}
		return fmt.Errorf("%w: %s", err, msg)
	}
	return nil
}

func (o runOptions) report(out *stormOutcome) runReport {
	res := out.res
	rep := runReport{URL: o.url, Command: o.reload, Mode: o.mode, Workers: o.workers, Rate: o.rate,
		IntervalS: o.interval.Seconds(), DurationS: res.Elapsed.Seconds(),
		Requests: res.Total, OK: res.Counts[load.OK], Failed: res.Failed, Classes: failureClasses(res),
		OKPerS: round1(okRate(res)), PerSecond: res.PerSecond(), Latency: latencyOf(res), Skipped: out.skipped}
	var took []time.Duration
	for _, r := range out.reloads {
		rep.Reloads++
		took = append(took, r.End.Sub(r.Start))
		if r.Err != nil {
			rep.ReloadErrors++
			if rep.FirstError == "" {
				rep.FirstError = r.Err.Error()
			}
		}
	}
	rep.Reload = summarize(took)
	rep.ClosedIdle, rep.Resent = res.ClosedIdle, res.Resent
	if o.versionHeader != "" {
		rep.Versions = answersByVersion(res)
	}
	return rep
}

func (r runReport) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "load: %s %s, %d clients, %.1f s: %s requests, %s OK (%.0f/s), %s failed\n",
		r.URL, modeName(r.Mode), r.Workers, r.DurationS, num(r.Requests), num(r.OK), r.OKPerS, failures(r.Failed, r.Classes))
	if len(r.ClosedIdle) > 0 || len(r.Resent) > 0 {
		fmt.Fprintf(&b, "not failures: connections closed between requests %s; requests the server did not process, sent again %s\n",
			closedIdleText(r.ClosedIdle), closedIdleText(r.Resent))
	}
	fmt.Fprintf(&b, "latency of OK requests: p50 %s ms, p99 %s ms\n", msText(r.Latency.P50), msText(r.Latency.P99))
	fmt.Fprintf(&b, "reloads: %d run (every %gs), %d failed, %d ticks skipped (a reload was still running); reload time p50 %s ms, p99 %s ms\n",
		r.Reloads, r.IntervalS, r.ReloadErrors, r.Skipped, msText(r.Reload.P50), msText(r.Reload.P99))
	if r.FirstError != "" {
		fmt.Fprintf(&b, "first reload error: %s\n", r.FirstError)
	}
	if len(r.Versions) > 0 {
		t := newTable("version", "answers", "first seen s", "last seen s")
		for _, v := range r.Versions {
			name := v.Version
			if name == "" {
				name = "(no header)"
			}
			t.row(name, num(v.Count), fmt.Sprintf("%.2f", v.First), fmt.Sprintf("%.2f", v.Last))
		}
		b.WriteString("answers by version (stale answers cannot be told apart without knowing which version each reload installed):\n" + t.String())
	}
	return b.String()
}
