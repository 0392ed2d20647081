package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// bench runs the suite: every scenario whose id --only matches, in order,
// each one's failure recorded and the next one run.
type bench struct {
	e      *env
	plan   plan
	only   *regexp.Regexp
	rep    *benchReport
	log    io.Writer
	start  time.Time
	cpu0   cpuSnap
	sleep  string // /bin/sleep, the scale run's child
	modDir string
	// crtList is the big configs' crt-list once written, certGen how long
	// writing the certificates took.
	crtList string
	certGen time.Duration
	// h3: run the HTTP/3 storms too (--h3).
	h3 bool
}

// methodMaker makes a fresh method instance.
type methodMaker struct {
	id   string
	make func(*env) Method
}

// stormMethods are the storm's methods, in table order.
var stormMethods = []methodMaker{
	{"baton-haproxy", func(e *env) Method { return newBatonHAProxy(e) }},
	{"haproxy-mw", func(e *env) Method { return newHAProxyMW(e) }},
	{"haproxy-sf", func(e *env) Method { return newHAProxySF(e) }},
	{"baton-nginx", func(e *env) Method { return newBatonNginx(e) }},
	{"nginx-hup", func(e *env) Method { return newNginxHUP(e) }},
	{"baton-generic", func(e *env) Method { return newBatonGeneric(e) }},
}

func benchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("storm bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "the short plan (under 2 minutes)")
	jsonPath := fs.String("json", "", "write every number as JSON to `FILE`")
	mdPath := fs.String("markdown", "", "write the report (docs/BENCHMARKS.md) to `FILE`")
	svgPath := fs.String("svg", "", "write the plot of the 100 ms new-connection storm to `FILE`")
	only := fs.String("only", "", "run only the scenarios whose id matches `REGEXP` (ids: storm/100ms/newconn/baton-haproxy, kill/haproxy-mw, steady/nginx, latency/haproxy-sf, scale/reloads, ...)")
	batonBin := fs.String("baton", os.Getenv("BATON_BINARY"), "baton binary to use (default: go build ./cmd/baton)")
	keep := fs.Bool("keep", false, "keep the temporary directory (logs of every process)")
	var haproxy proxyFlag
	fs.Var(&haproxy, "haproxy", "HAProxy binary `PATH` (default: $BATON_HAPROXY, then haproxy in PATH); repeatable: the first runs every scenario, each further one adds the reload-latency comparison on its version (ids latency/baton-haproxy@VERSION, ...); the big-config and during-reload scenarios run on the first of 3.1 or later")
	nginx := fs.String("nginx", "", "nginx binary `PATH` (default: $BATON_NGINX, then nginx in PATH)")
	h3 := fs.Bool("h3", false, "also run the HTTP/3 reload storms (ids h3/100ms/newconn/haproxy-mw, h3/none/keepalive/nginx-hup, ...; --only '^h3/' runs only them): HAProxy -W with a quic4@ bind, nginx with listen quic, and baton with those configs")
	stormFor := fs.Duration("storm", 0, "run every reload storm for `DURATION` (default: the plan's 20 s at 100 ms and 10 s at 1 s; 60s: a minute per storm, about 35 minutes in all)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "storm bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	re, err := regexp.Compile(*only)
	if err != nil {
		fmt.Fprintf(stderr, "storm bench: --only: %v\n", err)
		return 2
	}
	b := &bench{only: re, log: stderr, start: time.Now(), cpu0: snapCPU(), h3: *h3}
	b.plan = fullPlan()
	if *quick {
		b.plan = quickPlan()
	}
	if *stormFor > 0 {
		b.plan.StormFast, b.plan.StormSlow = dur(*stormFor), dur(*stormFor)
	}
	if err := b.setup(ctx, *batonBin, haproxy, *nginx); err != nil {
		fmt.Fprintf(stderr, "storm bench: %v\n", err)
		return 1
	}
	if *keep {
		fmt.Fprintf(stderr, "storm bench: keeping %s\n", b.e.root)
	} else {
		defer os.RemoveAll(b.e.root)
	}
	b.runAll(ctx)
	b.rep.WallS = time.Since(b.start).Seconds()
	b.rep.Machine.LoadEnd = loadAvg()
	b.rep.Machine.OtherCPUS, b.rep.Machine.OtherCPUPct = otherCPU(b.cpu0, snapCPU())
	b.logf("done in %.0f s; other processes used %.1f CPU-seconds (%.1f %% of the machine)", b.rep.WallS, b.rep.Machine.OtherCPUS, b.rep.Machine.OtherCPUPct)
	fmt.Fprint(stdout, renderTables(b.rep))
	if err := b.write(*jsonPath, *mdPath, *svgPath); err != nil {
		fmt.Fprintf(stderr, "storm bench: %v\n", err)
		return 1
	}
	if ctx.Err() != nil {
		return 130
	}
	if len(b.rep.Errors) > 0 {
		fmt.Fprintf(stderr, "storm bench: %d scenario errors (see above)\n", len(b.rep.Errors))
		return 1
	}
	return 0
}

// setup finds the proxies, builds baton and the example server into a
// short temporary directory and describes the machine.
func (b *bench) setup(ctx context.Context, batonBin string, haproxy []string, nginx string) error {
	proxies, err := chooseProxies(ctx, haproxy, nginx)
	if err != nil {
		return err
	}
	if b.sleep, err = exec.LookPath("sleep"); err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "sb")
	if err != nil {
		return err
	}
	b.e = (&env{root: root, nginx: proxies.Nginx.Path, nginxBin: proxies.Nginx, seq: new(int)}).withHAProxy(proxies.HAProxy[0])
	if b.modDir, err = moduleDir(); err != nil {
		return err
	}
	built := time.Now()
	b.e.baton = batonBin
	if b.e.baton == "" {
		b.e.baton = filepath.Join(root, "baton")
		if err := goBuild(ctx, b.modDir, b.e.baton, "./cmd/baton"); err != nil {
			return err
		}
	}
	b.e.activated = filepath.Join(root, "activated")
	if err := goBuild(ctx, b.modDir, b.e.activated, "./examples/activated"); err != nil {
		return err
	}
	b.rep = &benchReport{Quick: b.plan.Quick, Started: b.start, Plan: b.plan, Only: b.only.String(), Proxies: proxies}
	b.rep.BuildS = time.Since(built).Seconds()
	b.rep.Machine = describeMachine(ctx, b.e)
	b.logf("built baton and examples/activated in %.1f s; %s", b.rep.BuildS, b.rep.Machine.oneLine())
	return nil
}

// moduleDir finds the directory of baton's go.mod from the working
// directory up.
func moduleDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/batonproxy/baton\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run storm bench inside the baton repository (no go.mod of github.com/batonproxy/baton found)")
		}
		dir = parent
	}
}

// goBuild builds pkg with the project's normal `go build` (no -race).
func goBuild(ctx context.Context, dir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "urfave_cli_no_docs", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// runAll runs every family: reload latency first (on an idle machine:
// the bench's own config, then per HAProxy version, then big configs),
// latency under load during reloads, then the storms, kill -9, steady
// state and scale, and with --h3 the HTTP/3 storms.
func (b *bench) runAll(ctx context.Context) {
	families := []func(context.Context){b.latencyFamily, b.versionFamily, b.bigFamily, b.duringFamily, b.stormFamily, b.killFamily, b.steadyFamily, b.scaleFamily, b.h3Family}
	for _, f := range families {
		if ctx.Err() != nil {
			return
		}
		f(ctx)
	}
}

// want reports whether the scenario id is selected by --only.
func (b *bench) want(id string) bool { return b.only.MatchString(id) }

// fail records a scenario error and goes on.
func (b *bench) fail(id string, err error) {
	msg := fmt.Sprintf("%s: %v", id, err)
	b.rep.Errors = append(b.rep.Errors, msg)
	b.logf("ERROR %s", msg)
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "[%6.1fs] %s\n", time.Since(b.start).Seconds(), fmt.Sprintf(format, args...))
}

// withMethod starts a fresh instance of mk on a free port, runs f and
// stops it, recording any error under id.
func (b *bench) withMethod(ctx context.Context, id string, mk func(*env) Method, f func(m Method, port int) error) {
	port, err := freePort()
	if err != nil {
		b.fail(id, err)
		return
	}
	b.runMethod(ctx, id, mk(b.e), port, f)
}

// runMethod starts m on port, runs f and stops m, recording any error
// under id.
func (b *bench) runMethod(ctx context.Context, id string, m Method, port int, f func(m Method, port int) error) {
	err := m.Start(ctx, port)
	if err == nil {
		err = f(m, port)
	}
	if serr := m.Stop(); serr != nil {
		err = errors.Join(err, serr)
	}
	if err != nil && ctx.Err() == nil {
		b.fail(id, err)
	}
}

// write saves the JSON, Markdown and SVG outputs that were asked for.
func (b *bench) write(jsonPath, mdPath, svgPath string) error {
	var errs []error
	if jsonPath != "" {
		errs = append(errs, writeJSON(jsonPath, b.rep))
	}
	if svgPath != "" {
		errs = append(errs, os.WriteFile(svgPath, []byte(renderSVG(b.rep)), 0o644))
	}
	if mdPath != "" {
		svgRel := ""
		if svgPath != "" {
			if rel, err := filepath.Rel(filepath.Dir(mdPath), svgPath); err == nil {
				svgRel = rel
			}
		}
		errs = append(errs, os.WriteFile(mdPath, []byte(renderDoc(b.rep, svgRel)), 0o644))
	}
	return errors.Join(errs...)
}
