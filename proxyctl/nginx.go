package proxyctl

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
)

// nginxForbidden lists command-line flags baton owns, with the reason.
var nginxForbidden = map[string]string{
	"-s": "baton sends the signals itself (drain: SIGQUIT, hard stop: SIGTERM)",
	"-t": "baton runs the config check itself (nginx -T)",
	"-T": "baton runs the config check itself (nginx -T)",
	"-v": "not a server command line", "-V": "not a server command line",
	"-h": "not a server command line", "-?": "not a server command line",
}

// Nginx drives nginx 1.22+. Each generation is a fresh nginx master that
// inherits baton's sockets as fds 3, 4, ... named in NGINX=3;4; (nginx
// matches them to its listen directives by address and, inheriting, stays in
// the foreground whatever `daemon` says). Each generation runs from its own
// copy of the main config file (see StageConfig) and gets its own pid file:
// the copy's pid directive names it, or, when the main file has none, -g
// does. The check is `nginx -T` on the same copy, whose dump baton reads to
// refuse configurations that would re-listen or duplicate a passed socket.
// Readiness: a worker of the new master has every listener in its epoll set
// (read from /proc/PID/fdinfo), i.e. it accepts on them. Drain: SIGQUIT.
// Hard stop: SIGTERM.
type Nginx struct {
	bin     string
	args    []string // the user's arguments without -g
	global  string   // the user's -g directives, if any
	conf    string   // absolute path of the main config file (-c or nginx's default)
	prefix  string   // nginx's prefix (-p or nginx's default), for relative paths
	pathErr error    // why conf or prefix is unknown
}

// What the nginx driver and its session implement, checked at compile
// time: the supervisor finds the optional interfaces by type assertion, so
// a changed signature would otherwise silently drop a feature.
var (
	_ Driver            = (*Nginx)(nil)
	_ ProcessRoles      = (*Nginx)(nil)
	_ ConfigSnapshotter = (*Nginx)(nil)
	_ ConfigStager      = (*Nginx)(nil)
	_ OutputChecker     = (*Nginx)(nil)
	_ StartChecks       = (*Nginx)(nil)
	_ ListenerSource    = (*Nginx)(nil)
	_ GroupDrainer      = (*Nginx)(nil)

	_ Session  = (*nginxSession)(nil)
	_ PidFiler = (*nginxSession)(nil)
)

// NewNginx validates cmd (argv[0] resolved) for use under baton. It reads
// nginx's options the way nginx does (flags may be joined, "-tq"; values
// attached, "-gpid x;", or separate), refuses the ones baton owns and takes
// -g apart so that baton's per-generation directives can be added.
func NewNginx(cmd []string) (*Nginx, error) {
	n := &Nginx{bin: cmd[0]}
	args := cmd[1:]
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			n.args = append(n.args, a)
			continue
		}
		flagsOnly := true
		for j := 1; j < len(a); j++ {
			c := a[j]
			if why, bad := nginxForbidden["-"+string(c)]; bad {
				return nil, fmt.Errorf("%w: remove -%c from the nginx command line: %s", ErrBadCommand, c, why)
			}
			if !strings.ContainsRune("pecg", rune(c)) {
				continue // -q and the like
			}
			flagsOnly = false
			val := a[j+1:]
			if val == "" {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("%w: -%c needs a value", ErrBadCommand, c)
				}
				i++
				val = args[i]
			}
			if c == 'g' {
				n.global = strings.TrimSpace(n.global + " " + val)
			} else {
				n.args = append(n.args, "-"+string(c), val)
			}
			break
		}
		if flagsOnly {
			n.args = append(n.args, a)
		}
	}
	if strings.Contains(" "+n.global, " pid ") || strings.Contains(n.global, ";pid ") {
		return nil, fmt.Errorf("%w: remove pid from -g: baton gives each generation its own pid file", ErrBadCommand)
	}
	n.conf, n.prefix, n.pathErr = nginxPaths(n.bin, n.args)
	return n, nil
}

// Name implements Driver.
func (n *Nginx) Name() string { return "nginx" }

// ProcessRole implements ProcessRoles: the master baton started; the
// others by the title nginx gives them ("nginx: cache manager process":
// cache manager), worker when it says nothing else.
func (n *Nginx) ProcessRole(leader bool, cmdline string) string {
	if leader {
		return "master"
	}
	if title, ok := strings.CutPrefix(cmdline, "nginx: "); ok {
		if role, ok := strings.CutSuffix(title, " process"); ok && role != "" && !strings.Contains(role, "master") {
			return role
		}
	}
	return "worker"
}

// genPid is the pid file of generation g.
func genPid(g GenSpec) string { return filepath.Join(g.Dir, "nginx.pid") }

// globals is the -g value: with pid, baton's pid directive first.
func (n *Nginx) globals(g GenSpec, pid bool) []string {
	s := n.global
	if pid {
		s = strings.TrimSpace("pid " + nginxWord(genPid(g)) + "; " + s)
	}
	if s == "" {
		return nil
	}
	return []string{"-g", s}
}

// staged reports whether generation g runs a copy of the main config file.
func (n *Nginx) staged(g GenSpec) bool {
	_, ok := g.Config[n.conf]
	return ok && n.conf != ""
}

// stagedPath is the copy of the main config file generation g runs.
func (n *Nginx) stagedPath(g GenSpec) string {
	return filepath.Join(g.Dir, nginxCopyDir, filepath.Base(n.conf))
}

// userArgs returns the user's arguments with -c naming the generation's
// copy when it runs one.
func (n *Nginx) userArgs(g GenSpec) []string {
	out := append([]string(nil), n.args...)
	if !n.staged(g) {
		return out
	}
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "-c" {
			out[i+1] = n.stagedPath(g)
			return out
		}
	}
	return append(out, "-c", n.stagedPath(g))
}

// CheckArgv implements Driver: nginx -T (test and dump the configuration)
// on the generation's copy. The copy's pid directive names the
// generation's pid file; when it has none, the check runs without one
// (nginx -T writes no pid file), so that a pid directive in an included
// file shows in the dump and is refused with its file and line, instead of
// as nginx's "duplicate" error. Without a copy, -g names the pid file.
func (n *Nginx) CheckArgv(g GenSpec) []string {
	argv := append([]string{n.bin}, n.userArgs(g)...)
	return append(append(argv, "-T"), n.globals(g, !n.staged(g))...)
}

// CheckOutput implements OutputChecker: it reads the dump of nginx -T.
func (n *Nginx) CheckOutput(g GenSpec, output string) error {
	main := ""
	if n.staged(g) {
		main = n.conf
	}
	return checkNginxDump(output, g.Listeners, genPid(g), main)
}

// ConfigFiles implements ConfigSnapshotter: the main config file. Files it
// includes are read in place.
func (n *Nginx) ConfigFiles() ([]string, error) {
	if n.pathErr != nil {
		return nil, n.pathErr
	}
	if _, err := os.Stat(n.conf); err != nil {
		return nil, err
	}
	return []string{n.conf}, nil
}

// StageConfig implements ConfigStager: from the checked copy of the main
// config file, it writes the file generation g runs (its pid directive
// naming g's own pid file) into a directory of its own beside a symlink to
// every other entry of the main file's directory, so that relative paths
// mean what they mean for the original. It maps that directory to the
// user's, for messages.
func (n *Nginx) StageConfig(g GenSpec) (map[string]string, error) {
	if !n.staged(g) {
		return nil, nil
	}
	dir := filepath.Join(g.Dir, nginxCopyDir)
	if _, _, err := stageNginxConf(n.conf, g.ConfigPath(n.conf), dir, genPid(g)); err != nil {
		return nil, fmt.Errorf("nginx config copy: %w", err)
	}
	return map[string]string{dir + "/": filepath.Dir(n.conf) + "/"}, nil
}

// userPidFile reads the pid directive of the main config file as copied for
// g: whether it has one (then the generation's copy names g's own pid file
// instead), and its path resolved as nginx does (relative to the prefix).
// A path that cannot be resolved is an error, but the directive is there.
func (n *Nginx) userPidFile(g GenSpec) (string, bool, error) {
	if !n.staged(g) {
		return "", false, nil
	}
	data, err := os.ReadFile(g.ConfigPath(n.conf))
	if err != nil {
		return "", false, err
	}
	p, err := findNginxPid(string(data))
	if err != nil || p.path == "" {
		return "", false, err
	}
	if filepath.IsAbs(p.path) {
		return p.path, true, nil
	}
	if n.prefix == "" {
		return "", true, fmt.Errorf("%s:%d: pid %s is relative and nginx's prefix is unknown", n.conf, p.line, p.path)
	}
	return filepath.Join(n.prefix, p.path), true, nil
}

// Signal implements Driver.
func (n *Nginx) Signal(kind SignalKind) unix.Signal {
	if kind == Drain {
		return unix.SIGQUIT
	}
	return unix.SIGTERM
}

// DrainGroup implements GroupDrainer: an nginx worker handles SIGQUIT
// itself exactly as the master's relay (graceful shutdown: close the
// listeners, finish the requests), so the whole group gets it at once.
func (n *Nginx) DrainGroup() bool { return true }

// Prepare implements Driver.
func (n *Nginx) Prepare(g GenSpec) (Launch, Session, error) {
	fds := make([]int, len(g.Listeners))
	inodes := map[uint64]bool{}
	for i, l := range g.Listeners {
		fds[i] = l.Fd
		inodes[l.Inode] = true
	}
	userPid, has, err := n.userPidFile(g)
	if err != nil && !has {
		return Launch{}, nil, fmt.Errorf("nginx pid directive: %w", err)
	}
	// The copy names the generation's pid file when the user's names one.
	argv := append(append([]string{n.bin}, n.userArgs(g)...), n.globals(g, !has)...)
	return Launch{Argv: argv, Env: []string{fdpass.NginxEnv(len(fds))}, Files: fds},
		&nginxSession{epollSession: epollSession{inodes: inodes, workers: true}, pidFile: userPid, pidErr: err}, nil
}

// nginxSession is an nginx generation: ready like an epollSession; its
// master's pid belongs in the pid file the user's config names.
type nginxSession struct {
	epollSession
	pidFile string
	pidErr  error
}

// PidFile implements PidFiler.
func (s *nginxSession) PidFile() (string, error) { return s.pidFile, s.pidErr }

// epollSession is ready when one process of the generation polls every
// listener: its epoll set (/proc/PID/fdinfo of an eventpoll fd) names the
// listeners' inodes. With workers set, only the leader's descendants count
// (an nginx master holds the sockets but never polls them).
type epollSession struct {
	inodes  map[uint64]bool
	workers bool
	pid     int
}

func (s *epollSession) Started(pid int) { s.pid = pid }

func (s *epollSession) Ready(context.Context) error {
	pids := []int{s.pid}
	if s.workers {
		pids = proc.Descendants(s.pid)
	}
	for _, p := range pids {
		if polled := proc.EpollInodes(p); containsAll(polled, s.inodes) {
			return nil
		}
	}
	if s.workers {
		return fmt.Errorf("no worker of pid %d polls all %d listeners yet (%d workers)", s.pid, len(s.inodes), len(pids))
	}
	return fmt.Errorf("pid %d does not poll all %d listeners yet", s.pid, len(s.inodes))
}

func (s *epollSession) Close() error { return nil }

func containsAll(have, want map[uint64]bool) bool {
	for k := range want {
		if !have[k] {
			return false
		}
	}
	return true
}

// ConfigListeners implements ListenerSource: the listen directives of the
// nginx -T dump (checkOutput); an address repeated in several server blocks
// is one listener, declared where it first appears.
func (n *Nginx) ConfigListeners(_ GenSpec, checkOutput string) ([]ConfigListener, error) {
	ds, err := parseNginxDump(checkOutput, "listen")
	if err != nil {
		return nil, fmt.Errorf("read nginx -T output: %w", err)
	}
	var out []ConfigListener
	var errs []error
	for _, d := range ds {
		if d.Name != "listen" {
			continue
		}
		sp, err := nginxListenSpec(d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %w", ErrListenerRefused, err))
			continue
		}
		out = append(out, ConfigListener{Spec: sp, Where: d.where()})
	}
	out, _ = dedupe(out, false)
	return out, joinFirst(errs)
}

// ListenersFromCheck implements ListenerSource: the listen directives come
// from nginx -T's dump.
func (n *Nginx) ListenersFromCheck() bool { return true }
