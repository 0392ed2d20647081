package proxyctl

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proctree"
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
// the foreground whatever `daemon` says). Each generation gets its own pid
// file through -g. The check is `nginx -T`, whose dump baton reads to refuse
// configurations that would re-listen or duplicate a passed socket.
// Readiness: a worker of the new master has every listener in its epoll set
// (read from /proc/PID/fdinfo), i.e. it accepts on them. Drain: SIGQUIT.
// Hard stop: SIGTERM.
type Nginx struct {
	bin    string
	args   []string // the user's arguments without -g
	global string   // the user's -g directives, if any
}

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
	return n, nil
}

// Name implements Driver.
func (n *Nginx) Name() string { return "nginx" }

func (n *Nginx) globals(g GenSpec) string {
	s := "pid " + filepath.Join(g.Dir, "nginx.pid") + ";"
	if n.global != "" {
		s += " " + n.global
	}
	return s
}

// CheckArgv implements Driver: nginx -T (test and dump the configuration)
// with the generation's -g.
func (n *Nginx) CheckArgv(g GenSpec) []string {
	argv := append([]string{n.bin}, n.args...)
	return append(argv, "-T", "-g", n.globals(g))
}

// CheckOutput implements OutputChecker: it reads the dump of nginx -T.
func (n *Nginx) CheckOutput(g GenSpec, output string) error {
	return checkNginxDump(output, g.Listeners)
}

// Signal implements Driver.
func (n *Nginx) Signal(kind SignalKind) unix.Signal {
	if kind == Drain {
		return unix.SIGQUIT
	}
	return unix.SIGTERM
}

// Prepare implements Driver.
func (n *Nginx) Prepare(g GenSpec) (Launch, Session, error) {
	fds := make([]int, len(g.Listeners))
	inodes := map[uint64]bool{}
	for i, l := range g.Listeners {
		fds[i] = l.Fd
		inodes[l.Inode] = true
	}
	argv := append(append([]string{n.bin}, n.args...), "-g", n.globals(g))
	return Launch{Argv: argv, Env: []string{fdpass.NginxEnv(len(fds))}, Files: fds},
		&epollSession{inodes: inodes, workers: true}, nil
}

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
		pids = proctree.Descendants(s.pid)
	}
	for _, p := range pids {
		if polled := EpollInodes(p); containsAll(polled, s.inodes) {
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
	ds, err := parseNginxDump(checkOutput)
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
	return out, errors.Join(errs...)
}

// ListenersFromCheck implements ListenerSource: the listen directives come
// from nginx -T's dump.
func (n *Nginx) ListenersFromCheck() bool { return true }
