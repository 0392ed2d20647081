package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/urfave/cli/v2"
	"github.com/urfave/cli/v2/altsrc"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

func controlFlag() cli.Flag {
	return &cli.StringFlag{
		Name: "control", Aliases: []string{"c"}, Value: supervisor.DefaultControlPath, EnvVars: []string{"BATON_CONTROL"},
		Usage: "control socket `PATH`",
	}
}

// runFlags are `baton run`'s options; `baton check` takes the same ones.
// Every flag can also come from --config FILE (YAML, the same keys); the
// command line wins.
func runFlags() []cli.Flag {
	def := lifecycle.DefaultConfig()
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "read options from this YAML `FILE` (keys are the flag names; `command: [haproxy, -f, ...]` gives the command); flags override it"},
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "listen", Aliases: []string{"l"}, Usage: "listening socket `SPEC` (repeatable; without any, baton binds the addresses of HAProxy's bind lines or nginx's listen directives itself): [NAME=]tcp://HOST:PORT, tcp4://, tcp6://, udp://, unix:///PATH, options after '?': backlog=N, mode=0660, v6only=1, freebind=1, defer_accept=S; a config address --listen does not cover is refused at the config check"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "control", Aliases: []string{"c"}, Value: supervisor.DefaultControlPath, EnvVars: []string{"BATON_CONTROL"}, Usage: "control socket `PATH`"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "control-group", Usage: "make the control socket 0660 and let this `GROUP` use it"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "proxy", Usage: "driver: haproxy|nginx|generic (default: from COMMAND's name)"}),
		newAltDurationFlag(&cli.DurationFlag{Name: "drain-timeout", Value: def.DrainTimeout, Usage: "how long an old generation may drain before it is hard stopped"}),
		newAltDurationFlag(&cli.DurationFlag{Name: "kill-grace", Value: def.KillGrace, Usage: "time between the hard stop and SIGKILL"}),
		newAltDurationFlag(&cli.DurationFlag{Name: "udp-drain-delay", Usage: "after a reload, how long the old generation keeps serving before its drain signal when it has UDP/QUIC listeners: new connections already go to the new generation, and QUIC handshakes begun at the old one complete meanwhile; the reload is acknowledged after it (default 1s for HAProxy and nginx, 0 for the generic driver; 0: drain at once)"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "max-generations", Value: def.MaxGenerations, Usage: "cap on active + draining generations; the oldest draining ones are hard stopped first"}),
		newAltDurationFlag(&cli.DurationFlag{Name: "ready-timeout", Value: def.ReadyTimeout, Usage: "how long a new generation may take to become ready"}),
		newAltDurationFlag(&cli.DurationFlag{Name: "check-timeout", Value: supervisor.DefaultCheckTimeout, Usage: "how long the config check may take"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "check", Value: "auto", Usage: "`auto`: run the proxy's config check command only where the generation's start is not already a full check (HAProxy: never, its start parses the config and a failed start changes nothing; nginx: baton reads the config files itself instead of nginx -T; generic: --check-command); always: run it (haproxy -c, nginx -T, --check-command) before every start"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "rlimit", Usage: "resource limit `NAME=SOFT[:HARD]` for every child (repeatable; default nofile=min(hard limit, 1048576))"}),
		altsrc.NewIntFlag(&cli.IntFlag{Name: "start-nice", Usage: "run a generation that starts while another serves (a reload) at nice level `N` (1-19) until it is active, then at baton's own; needs CAP_SYS_NICE or a sufficient nice rlimit to undo (0: off)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "start-cpus", Usage: "run a generation that starts while another serves on the CPUs `LIST` (such as 1 or 0-1,3, among baton's own) until it is active, then on baton's own CPUs"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "watch", Usage: "reload when the content of this file or directory `PATH` changes (repeatable; debounced, digest-compared)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on `ADDR` ([HOST]:PORT; without a host, 127.0.0.1) at /metrics"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "pid-file", Usage: "write baton's pid to `FILE` (kept up to date across upgrades)"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "adopt-listeners", Usage: "accept config addresses missing from --listen (refused at the check otherwise) and take over the sockets a generation binds for them, so the next generation receives them"}),
		altsrc.NewBoolFlag(&cli.BoolFlag{Name: "no-cgroup", Usage: "track each generation's processes without creating cgroup v2 groups (process group, process tree and the BATON_GENERATION environment marker), even where baton could create them"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "drain-signal", Usage: "generic driver: `SIGNAL` that asks a generation to drain (default SIGTERM)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "stop-signal", Usage: "generic driver: `SIGNAL` for the hard stop (default SIGINT)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "ready-probe", Usage: "generic driver: a generation is ready when `COMMAND` (run by /bin/sh -c) exits 0, instead of READY=1 on NOTIFY_SOCKET"}),
		newAltDurationFlag(&cli.DurationFlag{Name: "ready-after", Usage: "generic driver: a generation is ready when it is still alive this long after its start, instead of READY=1"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "check-command", Usage: "generic driver: config check `COMMAND` (run by /bin/sh -c) before each start"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-format", Usage: "json|console (default: console when stderr is a terminal, json otherwise)"}),
		altsrc.NewStringFlag(&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug|info|warn|error"}),
		altsrc.NewStringSliceFlag(&cli.StringSliceFlag{Name: "command", Hidden: true, Usage: "the proxy command, for --config files"}),
	}
}

func runCommand() *cli.Command {
	flags := runFlags()
	return &cli.Command{
		Name:      "run",
		Usage:     "supervise COMMAND (haproxy, nginx or a socket-activated server) in the foreground",
		ArgsUsage: "-- COMMAND [ARG...]",
		Description: "Without --listen, baton binds the addresses the proxy's configuration declares (HAProxy bind lines,\n" +
			"nginx listen directives), logs where each is declared, and applies added and removed addresses at\n" +
			"each reload. With --listen, a configured address it does not cover is refused at the config check.",
		Flags:  flags,
		Before: configFile(flags),
		Action: runAction,
	}
}

// configFile loads --config into the flags not set on the command line. A
// key that is no flag is an error (a typo would otherwise be ignored).
func configFile(flags []cli.Flag) cli.BeforeFunc {
	load := altsrc.InitInputSourceWithContext(flags, altsrc.NewYamlSourceFromFlagFunc("config"))
	known := map[string]bool{}
	for _, f := range flags {
		for _, n := range f.Names() {
			known[n] = true
		}
	}
	return func(c *cli.Context) error {
		path := c.String("config")
		if path == "" {
			return nil
		}
		if err := checkConfigKeys(path, known); err != nil {
			return usageError{err}
		}
		if err := load(c); err != nil {
			return usageError{fmt.Errorf("--config %s: %w", path, err)}
		}
		return nil
	}
}

func checkConfigKeys(path string, known map[string]bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--config %s: file does not exist", path)
	}
	if err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("--config %s: %w", path, err)
	}
	var unknown []string
	for k := range doc {
		if !known[k] || k == "config" {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("--config %s: unknown keys %s (the keys are `baton run`'s flag names, plus command)", path, strings.Join(unknown, ", "))
	}
	return nil
}

// runSetup is everything runAction validated and built before supervising.
type runSetup struct {
	adopt bool
	watch []string
	// fromConfig: no --listen, the listeners come from the proxy's config.
	fromConfig bool
	checkTO    time.Duration
	check      proxyctl.CheckMode
	cmd        []string
	specs      []fdpass.Spec
	driver     proxyctl.Driver
	rlimits    []proc.Rlimit
	life       lifecycle.Config
	group      int
	log        *zap.Logger
	noCgroup   bool // --no-cgroup
	startSched *proc.StartSched
	// udpDrainDelay is --udp-drain-delay.
	udpDrainDelay time.Duration
}

func parseRunFlags(c *cli.Context) (*runSetup, error) {
	rs := &runSetup{group: -1, life: lifecycle.DefaultConfig()}
	verb := c.Command.Name // run, or check
	rs.cmd = c.Args().Slice()
	if len(rs.cmd) == 0 {
		rs.cmd = c.StringSlice("command")
	}
	if len(rs.cmd) == 0 {
		return nil, usagef("%s: no proxy command; usage: baton %s [--listen SPEC...] -- COMMAND [ARG...]", verb, verb)
	}
	keys, names := map[string]bool{}, map[string]bool{}
	for _, s := range c.StringSlice("listen") {
		sp, err := fdpass.ParseSpec(s)
		if err != nil {
			return nil, usageError{err}
		}
		switch {
		case keys[sp.Key()]:
			return nil, usagef("%s: --listen %s: listener %s given twice", verb, s, sp.Addr)
		case sp.Name != "" && names[sp.Name]:
			return nil, usagef("%s: --listen %s: listener name %q given twice", verb, s, sp.Name)
		}
		keys[sp.Key()], names[sp.Name] = true, true
		rs.specs = append(rs.specs, sp)
	}
	var configured []proc.Rlimit
	for _, s := range c.StringSlice("rlimit") {
		r, err := proc.ParseRlimit(s)
		if err != nil {
			return nil, usagef("--rlimit: %w", err)
		}
		configured = append(configured, r)
	}
	rs.life.DrainTimeout, rs.life.KillGrace = c.Duration("drain-timeout"), c.Duration("kill-grace")
	rs.life.ReadyTimeout, rs.life.MaxGenerations = c.Duration("ready-timeout"), c.Int("max-generations")
	if rs.life.MaxGenerations < 1 || rs.life.DrainTimeout <= 0 || rs.life.KillGrace <= 0 || rs.life.ReadyTimeout <= 0 {
		return nil, usagef("%s: --max-generations must be at least 1 and every timeout positive", verb)
	}
	var err error
	if rs.log, err = newLogger(c.String("log-format"), c.String("log-level"), isTerminal(2)); err != nil {
		return nil, usageError{err}
	}
	if g := c.String("control-group"); g != "" {
		if rs.group, err = lookupGroup(g); err != nil {
			return nil, usageError{err}
		}
	}
	path, err := exec.LookPath(rs.cmd[0])
	if err != nil {
		return nil, fmt.Errorf("proxy command %q: %w", rs.cmd[0], errors.Unwrap(err))
	}
	rs.cmd[0], _ = filepath.Abs(path)
	generic, err := genericOptions(c)
	if err != nil {
		return nil, usageError{err}
	}
	if rs.driver, err = proxyctl.New(c.String("proxy"), rs.cmd, generic); err == nil {
		// HAProxy and nginx drop QUIC connections still in their handshake
		// when told to drain; a generic server's behaviour is its own.
		rs.udpDrainDelay = supervisor.DefaultUDPDrainDelay
		if rs.driver.Name() == "generic" {
			rs.udpDrainDelay = 0
		}
		switch {
		case c.IsSet("udp-drain-delay"):
			rs.udpDrainDelay = c.Duration("udp-drain-delay")
			if rs.udpDrainDelay < 0 || rs.udpDrainDelay >= rs.life.DrainTimeout {
				return nil, usagef("%s: --udp-drain-delay must be at least 0 and shorter than --drain-timeout", verb)
			}
		case rs.udpDrainDelay >= rs.life.DrainTimeout:
			// A short --drain-timeout given alone: the default yields.
			rs.udpDrainDelay = rs.life.DrainTimeout / 2
		}
	}
	if err != nil {
		return nil, usageError{err}
	}
	if len(rs.specs) == 0 {
		if _, ok := rs.driver.(proxyctl.ListenerSource); !ok {
			return nil, usagef("%s: the %s driver needs --listen: baton reads listening addresses only from HAProxy and nginx configurations", verb, rs.driver.Name())
		}
		rs.fromConfig = true
	}
	if rs.rlimits, err = proc.EffectiveRlimits(configured); err != nil {
		if len(configured) > 0 { // only a configured hard limit can be refused
			err = fmt.Errorf("--rlimit: %w", err)
		}
		return nil, err
	}
	if rs.startSched, err = proc.NewStartSched(c.Int("start-nice"), c.String("start-cpus"), rs.rlimits); err != nil {
		return nil, usageError{withFlag(err)}
	}
	rs.watch, rs.checkTO, rs.adopt = c.StringSlice("watch"), c.Duration("check-timeout"), c.Bool("adopt-listeners")
	rs.noCgroup = c.Bool("no-cgroup")
	if rs.check, err = proxyctl.ParseCheckMode(c.String("check")); err != nil {
		return nil, usagef("%s: --check: %w", verb, err)
	}
	if rs.checkTO <= 0 {
		return nil, usagef("%s: --check-timeout must be positive", verb)
	}
	return rs, nil
}

var genericFlags = []string{"drain-signal", "stop-signal", "ready-probe", "ready-after", "check-command"}

// genericOptions reads the generic driver's flags; they are refused with
// another driver.
func genericOptions(c *cli.Context) (proxyctl.GenericOptions, error) {
	var opt proxyctl.GenericOptions
	driver := c.String("proxy")
	if driver == "" {
		cmd := c.Args().Slice()
		if len(cmd) == 0 {
			cmd = c.StringSlice("command")
		}
		if len(cmd) > 0 {
			driver = proxyctl.Guess(cmd[0])
		}
	}
	for _, f := range genericFlags {
		if c.IsSet(f) && driver != "generic" {
			return opt, fmt.Errorf("--%s applies to the generic driver only (this is %s)", f, driver)
		}
	}
	var err error
	if opt.DrainSignal, err = parseSignal(c.String("drain-signal")); err != nil {
		return opt, fmt.Errorf("--drain-signal: %w", err)
	}
	if opt.StopSignal, err = parseSignal(c.String("stop-signal")); err != nil {
		return opt, fmt.Errorf("--stop-signal: %w", err)
	}
	if p := c.String("ready-probe"); p != "" {
		opt.ReadyProbe = []string{"/bin/sh", "-c", p}
	}
	if p := c.String("check-command"); p != "" {
		opt.Check = []string{"/bin/sh", "-c", p}
	}
	opt.ReadyAfter = c.Duration("ready-after")
	return opt, nil
}

// parseSignal reads TERM, SIGTERM or 15; "" is 0 (the default).
func parseSignal(s string) (unix.Signal, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if id, aerr := strconv.Atoi(name); aerr == nil {
			return id, nil
		}
		return -1, fmt.Errorf("--control-group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// settingFlags are the flags behind the settings a supervisor.SettingError
// or a proc.SettingError names.
var settingFlags = map[string]string{"StartNice": "--start-nice", "StartCPUs": "--start-cpus", "WatchPaths": "--watch"}

// withFlag names the flag behind a setting the supervisor refused.
func withFlag(err error) error {
	var setting string
	var se *supervisor.SettingError
	var pe *proc.SettingError
	switch {
	case errors.As(err, &se):
		setting = se.Setting
	case errors.As(err, &pe):
		setting = pe.Setting
	}
	if flag, ok := settingFlags[setting]; ok {
		return fmt.Errorf("%s: %w", flag, err)
	}
	return err
}

func runAction(c *cli.Context) error {
	rs, err := parseRunFlags(c)
	if err != nil {
		return err
	}
	defer rs.log.Sync() //nolint:errcheck // stderr
	upg, err := tableflip.New(tableflip.Options{UpgradeTimeout: supervisor.UpgradeTimeout, PIDFile: c.String("pid-file")})
	if err != nil {
		return fmt.Errorf("upgrade support: %w", err)
	}
	defer upg.Stop()
	var st *startState
	if upg.HasParent() {
		st, err = receiveUpgrade(upg, rs, c.String("control"))
	} else {
		st, err = startFresh(rs, c.String("control"), c.String("metrics"))
	}
	if err != nil {
		return err
	}
	return supervise(rs, st, upg)
}

// openControl binds the control socket; the default directory is created
// (0755, so that --control-group members can reach the socket). Its
// directory must pass supervisor.CheckControlDir, and its real path (links
// resolved) is used from then on.
func openControl(path string, group int) (*supervisor.ControlSocket, error) {
	if path == supervisor.DefaultControlPath {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			if errors.Is(err, os.ErrPermission) && os.Geteuid() != 0 {
				return nil, fmt.Errorf("%w: run as root, or give --control PATH in a directory you own (e.g. %s)", err, controlHint())
			}
			return nil, err
		}
	}
	path, err := checkedControlPath(path)
	if err != nil {
		return nil, err
	}
	ctl, err := supervisor.ListenControl(path, controlMode(group))
	if err != nil {
		return nil, err
	}
	if group >= 0 {
		if err := os.Chown(path, -1, group); err != nil {
			ctl.Close()
			return nil, fmt.Errorf("control socket group: %w", err)
		}
	}
	return ctl, nil
}

// controlHint is a control path a user who is not root may use:
// $XDG_RUNTIME_DIR/baton.sock.
func controlHint() string {
	if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "baton.sock")
	}
	return "$XDG_RUNTIME_DIR/baton.sock"
}

// checkedControlPath is the control socket path in its directory's real
// path, once that directory passed supervisor.CheckControlDir. A missing
// directory is left to ListenControl to report.
func checkedControlPath(path string) (string, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); err != nil {
		return path, nil
	}
	real, err := supervisor.CheckControlDir(dir)
	if err != nil {
		return "", err
	}
	return filepath.Join(real, filepath.Base(path)), nil
}

// controlMode is the control socket's mode: 0600, or 0660 for a
// --control-group.
func controlMode(group int) os.FileMode {
	if group >= 0 {
		return 0o660
	}
	return 0o600
}

// supervise wires the supervisor, its control server and signals, and runs
// until the supervisor exits.
func supervise(rs *runSetup, st *startState, upg *tableflip.Upgrader) error {
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	defer signal.Stop(sigchld)
	exits := &unregisteredExits{}
	reaper, err := proc.NewReaper(sigchld, exits.note)
	if err != nil {
		st.abort()
		return fmt.Errorf("subreaper: %w", err)
	}
	var metrics *supervisor.Metrics
	if st.metrics != nil {
		metrics = supervisor.NewMetrics(version)
	}
	// Children inherit the limits baton takes on itself and start without
	// the exec shim; where baton cannot hold them, the shim sets them.
	own, why := proc.TakeOnRlimits(rs.rlimits)
	if own == nil {
		rs.log.Debug("children start through the exec shim", zap.String("why", why))
	}
	sup, err := supervisor.New(supervisor.Config{
		Command: rs.cmd, Driver: rs.driver, Listeners: st.listeners, Rlimits: rs.rlimits,
		Lifecycle: rs.life, CheckTimeout: rs.checkTO, Check: rs.check, RunDir: st.ctl.Path + ".d", Env: os.Environ(),
		WatchPaths: rs.watch, Control: st.ctl, InitPipe: st.initPipe, MetricsListener: st.metrics,
		StateFile: st.ctl.Path + ".state", AdoptListeners: rs.adopt, ListenersFromConfig: rs.fromConfig, NoCgroup: rs.noCgroup,
		StartSched: rs.startSched, UDPDrainDelay: rs.udpDrainDelay,
	}, supervisor.Deps{
		Log: rs.log, Starter: supervisor.ExecStarter(&proc.ExecStarter{Reaper: reaper, Own: own}), ProcFS: st.procfs,
		Notify: sdNotify, Metrics: metrics, Upgrader: flipper{upg, exits},
	})
	err = withFlag(err)
	if err == nil && st.handover != nil {
		err = sup.Adopt(*st.handover, st.fds)
	}
	startedAt := time.Now()
	if err == nil {
		// The sockets each address has now, kept across restarts, so that a
		// re-created listener shows (baton doctor). Pending until the first
		// generation serves: a failed first start closed sockets that never
		// served, and doctor does not count it.
		if herr := supervisor.RecordListeners(st.ctl.Path+".listeners", st.listeners, os.Getpid(), startedAt); herr != nil {
			rs.log.Warn("listener history", zap.Error(herr))
		}
	}
	st.closeFds()
	if err != nil {
		st.abort()
		return err
	}
	stopMetrics := func() {}
	if metrics != nil {
		stopMetrics = serveMetrics(st.metrics, metrics, rs.log)
	}
	defer func() { stopMetrics() }() // on the early returns; a second call does nothing
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reaperDone := make(chan struct{})
	go func() {
		defer close(reaperDone)
		reaper.Run(ctx)
	}()
	srv := supervisor.NewControlServer(sup, rs.log, rs.group)
	srvDone := make(chan error, 1)
	st.ctl.SetRebind(controlMode(rs.group), rs.group) // if its path is removed
	go func() { srvDone <- srv.Serve(st.ctl.Acceptor()) }()
	stopSignals := forwardSignals(sup, rs.log)
	defer stopSignals()
	rs.log.Info("baton started", zap.Int("pid", os.Getpid()), zap.String("proxy", rs.driver.Name()),
		zap.String("control", st.ctl.Path), zap.Strings("command", rs.cmd), zap.Stringers("rlimits", stringers(rs.rlimits)), zap.String("start_sched", rs.startSched.String()),
		zap.Bool("upgraded", st.conn != nil), zap.Bool("adopted", st.handover != nil))
	readyDone := make(chan struct{})
	go func() {
		defer close(readyDone)
		if announceReady(sup, st, upg, rs.log) {
			if herr := supervisor.MarkListenersServed(st.ctl.Path+".listeners", os.Getpid(), startedAt); herr != nil {
				rs.log.Warn("listener history", zap.Error(herr))
			}
		}
	}()
	runErr := sup.Run(context.Background())
	<-readyDone
	if sup.HandedOver() {
		// The new baton serves on this very socket: closing ours (which
		// Shutdown does) must not remove its path.
		st.ctl.Listener.SetUnlinkOnClose(false)
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	_ = srv.Shutdown(shutdownCtx)
	<-srvDone
	stopMetrics() // before st.close closes its listener: a clean stop logs no error
	cancel()
	<-reaperDone
	st.close(sup.HandedOver())
	switch {
	case sup.HandedOver():
		rs.log.Info("baton handed over to the new baton and exits")
	case runErr != nil:
		return fmt.Errorf("first generation failed: %w", runErr)
	default:
		rs.log.Info("baton stopped")
	}
	return nil
}

// announceReady tells tableflip (and, after an upgrade, the old baton) that
// this baton serves: once the first generation is ready, or, for a baton
// that took over, once its loop answers. It reports whether baton serves
// (false: it stopped, or took over but does not answer).
func announceReady(sup *supervisor.Supervisor, st *startState, upg *tableflip.Upgrader, log *zap.Logger) bool {
	if st.conn != nil {
		defer st.conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := sup.Status(ctx); err != nil {
			log.Error("took over but does not answer; the old baton will give up", zap.Error(err))
			return false
		}
		if err := supervisor.AckHandover(st.conn, os.Getpid()); err != nil {
			log.Error("tell the old baton", zap.Error(err))
		}
	} else {
		select {
		case <-sup.FirstReady():
		case <-sup.Done():
			return false
		}
	}
	if err := upg.Ready(); err != nil {
		log.Warn("upgrade support: ready", zap.Error(err))
	}
	return true
}

// sdNotify tells systemd (when baton runs under Type=notify, i.e.
// NOTIFY_SOCKET is set) about readiness, reloads and stopping.
func sdNotify(state string) {
	_, _ = daemon.SdNotify(false, state)
}

func stringers(rl []proc.Rlimit) []fmt.Stringer {
	out := make([]fmt.Stringer, len(rl))
	for i, r := range rl {
		out[i] = r
	}
	return out
}

// forwardSignals turns signals into supervisor requests: HUP reload,
// TERM/INT graceful stop, QUIT fast stop. It returns a function that stops
// forwarding and waits for every goroutine it started; call it after the
// supervisor has exited (pending requests then return at once).
func forwardSignals(sup *supervisor.Supervisor, log *zap.Logger) func() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGHUP, unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR2)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				log.Info("signal received", zap.String("signal", signalName(sig)))
				if f := signalAction(sup, log, sig); f != nil {
					wg.Add(1)
					go func() {
						defer wg.Done()
						f()
					}()
				}
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		wg.Wait()
	}
}

// signalName is sig as baton logs it: SIGHUP, not "hangup".
func signalName(sig os.Signal) string {
	if s, ok := sig.(unix.Signal); ok {
		return proc.SignalName(s)
	}
	return sig.String()
}

func signalAction(sup *supervisor.Supervisor, log *zap.Logger, sig os.Signal) func() {
	ctx := context.Background()
	switch sig {
	case unix.SIGHUP:
		return func() {
			res, err := sup.ReloadBy(ctx, api.TriggerSignal)
			switch {
			case errors.Is(err, supervisor.ErrNotRunning), errors.Is(err, lifecycle.ErrStopping):
				log.Info("reload on SIGHUP not done: baton is stopping")
			case err != nil:
				// The supervisor logged the failure (ERROR "reload failed").
			default:
				log.Info("reload on SIGHUP done", zap.Int("gen", res.Generation))
			}
		}
	case unix.SIGTERM, unix.SIGINT:
		return func() { _ = sup.Stop(ctx, false) }
	case unix.SIGQUIT:
		return func() { _ = sup.Stop(ctx, true) }
	case unix.SIGUSR2:
		return func() {
			res, err := sup.Upgrade(ctx)
			switch {
			case errors.Is(err, supervisor.ErrNotRunning), errors.Is(err, lifecycle.ErrStopping):
				log.Info("upgrade on SIGUSR2 not done: baton is stopping")
			case err != nil:
				// The supervisor logged the failure (ERROR "upgrade failed").
			default:
				log.Info("upgrade on SIGUSR2 done", zap.Int("new_pid", res.NewPid))
			}
		}
	}
	return nil
}
