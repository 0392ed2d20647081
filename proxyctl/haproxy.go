package proxyctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
)

// haproxyForbidden lists the command-line flags baton owns, with the reason.
var haproxyForbidden = map[string]string{
	"-sf": "baton drains old generations itself; -sf/-st make haproxy pause (SIGTTOU) the shared sockets for every holder",
	"-st": "baton drains old generations itself; -sf/-st make haproxy pause (SIGTTOU) the shared sockets for every holder",
	"-x":  "baton hands each generation its sockets with its own -x",
	"-D":  "haproxy must stay in the foreground under baton (baton adds -W -db)",
	"-W":  "baton runs haproxy in master-worker mode itself",
	"-Ws": "baton runs haproxy in master-worker mode itself and speaks sd_notify for it",
	"-S":  "baton gives each generation its own master CLI",
	"-c":  "baton runs the config check itself",
}

// HAProxy drives HAProxy 2.6+ in master-worker mode. Each generation is a
// fresh master started with -W -db (foreground master, forked worker: a
// foreground -db process would spin on the shared listener while draining),
// -x on a per-generation _getsocks socket served by baton, -dR so a bind
// line that matches no passed socket fails instead of creating a second
// SO_REUSEPORT socket, and -S for a per-generation master CLI. An extra -f
// file adds a per-generation stats socket to the worker; readiness is the
// worker answering "show info" there, which it does as soon as its event loop
// runs with every listener enabled, and, before 3.1, the master CLI listing
// that worker: the master re-executes itself into wait mode tens of
// milliseconds after forking, and a drain signal sent before it settles is
// lost (see masterSettled). It never passes -sf/-st and never sends SIGTTOU.
//
// HAProxy 3.1+ masters send sd_notify READY=1 once their worker is ready:
// a generation of a binary known to be 3.1+ runs with -Ws instead of -W and
// a NOTIFY_SOCKET of its own, and its readiness is that event (then one
// "show info" confirms it). The version is learned from the "show info" of
// an earlier generation of the same binary file (same device, inode, size
// and times): no extra process, and a binary replaced on disk is probed
// again. Older masters send READY=1 before the worker is ready (and 2.6/2.8
// accept -Ws only when built with systemd support): they keep the probe.
type HAProxy struct {
	bin  string
	args []string
	cfgs map[int]string // index in args of each -f value → absolute path

	mu       sync.Mutex
	notifies map[binaryID]bool // binary files whose master sends READY=1 once its worker is ready
}

// What the HAProxy driver and its session implement, checked at compile
// time: the supervisor finds the optional interfaces by type assertion, so
// a changed signature would otherwise silently drop a feature.
var (
	_ Driver            = (*HAProxy)(nil)
	_ ProcessRoles      = (*HAProxy)(nil)
	_ ConfigSnapshotter = (*HAProxy)(nil)
	_ ListenerSource    = (*HAProxy)(nil)
	_ StartChecks       = (*HAProxy)(nil)

	_ Session       = (*haproxySession)(nil)
	_ ReadyNotifier = (*haproxySession)(nil)
)

// NewHAProxy validates cmd (argv[0] resolved) for use under baton.
func NewHAProxy(cmd []string) (*HAProxy, error) {
	h := &HAProxy{bin: cmd[0], args: cmd[1:], cfgs: map[int]string{}, notifies: map[binaryID]bool{}}
	dir, _ := os.Getwd()
	for i, a := range h.args {
		if why, bad := haproxyForbidden[a]; bad {
			return nil, fmt.Errorf("%w: remove %s from the haproxy command line: %s", ErrBadCommand, a, why)
		}
		if a == "-C" && i+1 < len(h.args) {
			dir = h.args[i+1] // haproxy chdirs there before reading -f files
		}
	}
	for i, a := range h.args {
		if a == "-f" && i+1 < len(h.args) {
			p := h.args[i+1]
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			h.cfgs[i+1] = p
		}
	}
	return h, nil
}

// userArgs returns the user's arguments with each -f file mapped through
// the generation's config copies.
func (h *HAProxy) userArgs(g GenSpec) []string {
	out := append([]string(nil), h.args...)
	for i, p := range h.cfgs {
		if c, ok := g.Config[p]; ok {
			out[i] = c
		}
	}
	return out
}

// ConfigFiles implements ConfigSnapshotter: the -f files (directories are
// read in place). A config that sets default-path resolves relative paths
// against its own location, which a copy would change: then nothing is
// copied.
func (h *HAProxy) ConfigFiles() ([]string, error) {
	var out []string
	for _, p := range h.cfgs {
		st, err := os.Stat(p)
		if err != nil || st.IsDir() {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if usesDefaultPath(string(data)) {
			return nil, fmt.Errorf("%s sets default-path: generations read the config files in place", p)
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func usesDefaultPath(cfg string) bool {
	if !strings.Contains(cfg, "default-path") {
		return false // most configs: no line to split
	}
	for _, line := range strings.Split(cfg, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == "default-path" && f[1] != "current" {
			return true
		}
	}
	return false
}

// Name implements Driver.
func (h *HAProxy) Name() string { return "haproxy" }

// ProcessRole implements ProcessRoles: the master baton started, and the
// workers it forked.
func (h *HAProxy) ProcessRole(leader bool, _ string) string {
	if leader {
		return "master"
	}
	return "worker"
}

// CheckArgv implements Driver: haproxy -c with the user's arguments.
func (h *HAProxy) CheckArgv(g GenSpec) []string {
	return append([]string{h.bin, "-c"}, h.userArgs(g)...)
}

// Signal implements Driver: SIGUSR1 is HAProxy's soft stop (the master
// forwards it to its workers and exits after them); SIGTERM its hard stop.
func (h *HAProxy) Signal(kind SignalKind) unix.Signal {
	if kind == Drain {
		return unix.SIGUSR1
	}
	return unix.SIGTERM
}

// Prepare implements Driver.
func (h *HAProxy) Prepare(g GenSpec) (Launch, Session, error) {
	entries := make([]fdpass.GetsocksEntry, len(g.Listeners))
	for i, l := range g.Listeners {
		entries[i] = fdpass.GetsocksEntry{Fd: l.Fd}
	}
	s := &haproxySession{stats: filepath.Join(g.Dir, "stats.sock"), master: filepath.Join(g.Dir, "master.sock"), errs: make(chan error, 4), warn: g.warn}
	bin, binErr := statBinary(h.bin)
	if binErr == nil {
		s.learn = func(version string) { h.learn(bin, version) }
	}
	mode := "-W"
	var env []string
	if binErr == nil && h.notifiesReady(bin) {
		ns, err := newNotifySession(filepath.Join(g.Dir, "notify.sock"))
		if err != nil {
			return Launch{}, nil, fmt.Errorf("haproxy: %w", err)
		}
		ns.leaderOnly = true // the master sends it; nothing else may
		s.notify, mode, env = ns, "-Ws", []string{"NOTIFY_SOCKET=" + ns.path}
	}
	extra := filepath.Join(g.Dir, "baton.cfg")
	snippet := "# written by baton for generation " + strconv.Itoa(g.Gen) + "\nglobal\n    stats socket " + s.stats + " mode 600 level user\n"
	if err := os.WriteFile(extra, []byte(snippet), 0o600); err != nil {
		s.closeNotify()
		return Launch{}, nil, fmt.Errorf("haproxy: %w", err)
	}
	gs, err := fdpass.NewGetsocksServer(filepath.Join(g.Dir, "getsocks.sock"), entries, s.noteError)
	if err != nil {
		s.closeNotify()
		return Launch{}, nil, err
	}
	s.gs = gs
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		gs.Serve()
	}()
	argv := append([]string{h.bin, mode, "-db", "-S", s.master, "-x", gs.Path(), "-dR"}, h.userArgs(g)...)
	argv = append(argv, "-f", extra)
	return Launch{Argv: argv, Env: env}, s, nil
}

type haproxySession struct {
	stats  string
	master string // the generation's master CLI
	gs     *fdpass.GetsocksServer
	wg     sync.WaitGroup
	pid    int
	errs   chan error
	warn   func(string, error)
	// refused counts the peers the getsocks server refused; written by its
	// goroutine, read by closeGetsocks after that goroutine ended.
	refused int
	// notify is the generation's NOTIFY_SOCKET under -Ws (HAProxy 3.1+);
	// nil: readiness is probed.
	notify *notifySession
	// learn records the version "show info" reports for the binary the
	// generation runs; nil when its file could not be identified.
	learn func(version string)

	closeOnce sync.Once
}

// refusalsLogged is how many refused getsocks peers are logged one by one;
// the rest are counted in one line when the server closes (at readiness),
// so a flood of connections cannot flood the log.
const refusalsLogged = 5

// noteError keeps a failed transfer for Ready; a refused peer is someone
// else's attempt, not the generation's failure: it is only reported.
func (s *haproxySession) noteError(err error) {
	if errors.Is(err, fdpass.ErrPeerRefused) {
		s.refused++
		if s.refused <= refusalsLogged {
			s.warn("getsocks peer refused", err)
		}
		return
	}
	select {
	case s.errs <- err:
	default:
	}
}

func (s *haproxySession) Started(pid int) {
	s.pid = pid
	s.gs.AllowPeer(generationPeer(pid))
	if s.notify != nil {
		s.notify.Started(pid)
	}
}

// ReadyNotified implements ReadyNotifier: closed at the master's READY=1
// under -Ws; nil (probe) otherwise.
func (s *haproxySession) ReadyNotified() <-chan struct{} {
	if s.notify == nil {
		return nil
	}
	return s.notify.ReadyNotified()
}

// generationPeer lets the generation's own processes take the sockets: its
// master (HAProxy up to 3.0 fetches them in the master before forking) and
// the master's children (3.1+ forks the worker first and the worker
// fetches them). A child is recognised by its parent and by a start time
// not before the master's, so a recycled pid cannot pass; any other
// process, of any uid, is refused.
func generationPeer(master int) fdpass.PeerCheck {
	mstart, merr := proc.StartTicks(master)
	return func(peer int) error {
		if merr != nil {
			return fmt.Errorf("the generation's master %d: %w", master, merr)
		}
		if peer == master {
			return nil
		}
		p, err := procfs.NewProc(peer)
		if err != nil {
			return fmt.Errorf("not a process of the generation (master %d): %w", master, err)
		}
		st, err := p.Stat()
		if err != nil {
			return fmt.Errorf("not a process of the generation (master %d): %w", master, err)
		}
		if st.PPID != master || st.Starttime < mstart {
			return fmt.Errorf("%q, parent %d, is not the generation's master %d or a worker it forked", st.Comm, st.PPID, master)
		}
		return nil
	}
}

// Ready asks the generation's stats socket for "show info" and checks that
// the answer comes from a worker forked by this generation's master. A reply
// means the worker's event loop runs with every listener enabled.
//
// Under -Ws it first needs the master's READY=1; a READY=1 whose STATUS
// says the load failed is not readiness (the master then exits, and the
// exit ends the reload with HAProxy's words).
func (s *haproxySession) Ready(ctx context.Context) error {
	select {
	case err := <-s.errs:
		return err
	default:
	}
	if s.notify != nil {
		ready, status := s.notify.state()
		if !ready {
			return errors.New("no READY=1 from the haproxy master on its NOTIFY_SOCKET yet")
		}
		if strings.Contains(strings.ToLower(status), "fail") {
			return fmt.Errorf("haproxy master: %s", status)
		}
	}
	out, err := CLI(ctx, s.stats, "show info")
	if err != nil {
		return err
	}
	pid := infoField(out, "Pid")
	if pid == "" {
		return fmt.Errorf("show info: no Pid in %q", firstLine(out))
	}
	worker, _ := strconv.Atoi(pid)
	if ppid := proc.ParentPid(worker); ppid != s.pid {
		return fmt.Errorf("show info answered by pid %d, whose parent is %d, not this generation's master %d", worker, ppid, s.pid)
	}
	if s.notify == nil {
		if err := s.masterSettled(ctx, worker); err != nil {
			return err
		}
	}
	if s.learn != nil {
		s.learn(infoField(out, "Version"))
	}
	s.closeGetsocks()
	return nil
}

// masterSettled checks that a master without READY=1 (before 3.1) has
// re-executed itself into wait mode and knows its worker: its master CLI
// answers "show proc" with the worker listed. Until then a drain would be
// lost: the master blocks signals across that exec and then sets SIGUSR1 to
// SIG_IGN before installing its handler, which discards a pending SIGUSR1,
// so the generation would keep its listeners until the drain deadline. The
// CLI answers only from the master's event loop, after the handlers.
func (s *haproxySession) masterSettled(ctx context.Context, worker int) error {
	out, err := CLI(ctx, s.master, "show proc")
	if err != nil {
		return fmt.Errorf("the haproxy master has not re-executed into wait mode yet (a drain signal now would be lost): %w", err)
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == strconv.Itoa(worker) && f[1] == "worker" {
			return nil
		}
	}
	return fmt.Errorf("the haproxy master's show proc does not list worker %d yet: %q", worker, firstLine(out))
}

// closeGetsocks closes the handover server and the NOTIFY_SOCKET once the
// generation is ready (or forgotten): neither has anything more to say, and
// the serving generation then holds no descriptor of baton's beyond its
// output.
func (s *haproxySession) closeGetsocks() {
	s.closeOnce.Do(func() {
		_ = s.closeNotify()
		s.gs.Close()
		s.wg.Wait()
		if n := s.refused - refusalsLogged; n > 0 {
			s.warn("getsocks peers refused", fmt.Errorf("%d more peers (%d in all) were refused the sockets; only the first %d are logged one by one", n, s.refused, refusalsLogged))
		}
	})
}

func (s *haproxySession) Close() error {
	s.closeGetsocks()
	return nil
}

func (s *haproxySession) closeNotify() error {
	if s.notify == nil {
		return nil
	}
	return s.notify.Close()
}

// CLI sends one command to an HAProxy CLI socket (stats socket or master
// CLI) and returns the whole answer.
func CLI(ctx context.Context, path, cmd string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return "", fmt.Errorf("haproxy cli: %w", err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", fmt.Errorf("haproxy cli: %w", err)
	}
	_ = c.(*net.UnixConn).CloseWrite()
	var b strings.Builder
	if _, err := bufio.NewReader(c).WriteTo(&b); err != nil {
		return "", fmt.Errorf("haproxy cli: %w", err)
	}
	return b.String(), nil
}

func infoField(out, key string) string {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
