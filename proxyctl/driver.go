package proxyctl

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

// ErrBadCommand is wrapped by errors about the proxy command line.
var ErrBadCommand = errors.New("bad proxy command")

// Listener is one socket handed to a generation. Fd is borrowed from the
// supervisor's listener set and stays open while the generation lives.
type Listener struct {
	Spec    fdpass.Spec
	Fd      int
	Addr    string // bound address (real port)
	Inode   uint64
	Backlog int // the listen(2) backlog in effect
}

// GenSpec describes one generation to a driver.
type GenSpec struct {
	Gen       int
	Dir       string // private (0700) directory for this generation's paths
	Listeners []Listener
	// Run runs a short command (a readiness probe) through the supervisor,
	// which owns every child process; nil error means exit status 0.
	Run func(ctx context.Context, argv []string) error
	// Config maps the driver's ConfigFiles to the copies this generation
	// uses (nil: use the originals). See ConfigSnapshotter.
	Config map[string]string
	// Env is the environment the generation's processes get (HAProxy
	// expands ${VAR} in bind lines from it).
	Env []string
	// Warn reports an incident that is not the generation's failure (a
	// refused peer on its socket handover), at WARN in the generation's
	// log; nil drops it.
	Warn func(msg string, err error)
}

// warn calls g.Warn when set.
func (g GenSpec) warn(msg string, err error) {
	if g.Warn != nil {
		g.Warn(msg, err)
	}
}

// ConfigPath is the path the generation reads for the config file orig.
func (g GenSpec) ConfigPath(orig string) string {
	if c, ok := g.Config[orig]; ok {
		return c
	}
	return orig
}

// ProcessRoles is implemented by drivers that name the processes of a
// generation in `baton status`: the leader (the process baton started) and
// the others, from their command line. Without it: "leader" and "child".
type ProcessRoles interface {
	ProcessRole(leader bool, cmdline string) string
}

// ConfigSnapshotter is implemented by drivers whose configuration files can
// be read from a copy: baton copies them for each generation before the
// check, so the generation runs exactly what was checked (not a file edited
// in between), and keeps the last checked copy so that a crash replacement
// runs the last good configuration, not whatever is on disk.
type ConfigSnapshotter interface {
	// ConfigFiles lists the files to copy (absolute paths); none when
	// copies would not work (the driver says why in the error).
	ConfigFiles() ([]string, error)
}

// ConfigStager is implemented by ConfigSnapshotters whose generations run
// a changed version of the copies (nginx: a pid directive naming the
// generation's own pid file). Right after the copies are made, for the
// check and for a crash replacement, baton calls StageConfig; it writes
// what the generation runs into g.Dir, and returns each path it wrote (a
// file, or a directory ending in "/") mapped to the user's path, so that
// messages name the user's files.
type ConfigStager interface {
	StageConfig(g GenSpec) (map[string]string, error)
}

// PidFiler is implemented by sessions whose proxy configuration names a pid
// file of the user's (nginx's pid directive): baton writes the generation's
// pid there whenever the generation becomes the one that serves, so that
// tools that signal the pid in that file (logrotate, `nginx -s reopen`)
// reach it. "" means no such file; an error says why the file named cannot
// be used.
type PidFiler interface {
	PidFile() (string, error)
}

// Launch says how to start a generation's process.
type Launch struct {
	Argv      []string // argv[0] is the resolved program path
	Env       []string // extra environment entries
	Files     []int    // borrowed descriptors passed as fds 3, 4, ...
	ListenPID bool     // the exec shim sets LISTEN_PID to the child's pid
}

// Session is one generation's driver-side state: it runs alongside the
// process from Prepare until Close.
type Session interface {
	// Started is called once, right after the process was started.
	Started(pid int)
	// Ready makes one readiness probe; nil means the generation serves.
	Ready(ctx context.Context) error
	// Close releases what the session holds (sockets, goroutines). The
	// borrowed listener descriptors are not used after it returns.
	Close() error
}

// Driver knows one proxy program.
type Driver interface {
	Name() string
	// CheckArgv is the command that validates the configuration.
	CheckArgv(g GenSpec) []string
	// Prepare sets up a generation: its command line, how it receives the
	// listeners, and its readiness check.
	Prepare(g GenSpec) (Launch, Session, error)
	// Signal maps a drain or hard stop to the proxy's signal.
	Signal(kind SignalKind) unix.Signal
}

// OutputChecker is implemented by drivers that read the output of a
// successful config check (nginx -T's dump) to refuse configurations that
// would break baton's guarantees.
type OutputChecker interface {
	CheckOutput(g GenSpec, output string) error
}

// StartChecks is implemented by drivers whose generation start is a full
// check of the configuration: the proxy parses all of it before it serves,
// and a start that fails to parse is a failed reload with the proxy's own
// error, while the serving generation is untouched (it becomes active only
// when ready). Unless the user asks for the check command at every reload
// (CheckAlways), baton then skips it: one parse per reload instead of two.
type StartChecks interface {
	// ConfigDump returns, read by baton itself, what the driver's
	// OutputChecker and ListenerSource would read from the check command's
	// output (nginx: the -T dump of every file nginx reads); "" when they
	// read nothing. An error says why baton cannot read it alone (an
	// include it cannot follow, a file it will not read): the check
	// command then runs, and its output is read instead, so the error the
	// user sees is the proxy's own.
	ConfigDump(g GenSpec) (string, error)
}

// CheckMode says when baton runs the driver's config check command.
type CheckMode int

// Check modes.
const (
	// CheckAuto runs the check command only for drivers whose start is not
	// a check (StartChecks), or when their ConfigDump cannot be read.
	CheckAuto CheckMode = iota
	// CheckAlways runs it before every start.
	CheckAlways
)

// ParseCheckMode reads a check mode: auto or always.
func ParseCheckMode(s string) (CheckMode, error) {
	switch s {
	case "", "auto":
		return CheckAuto, nil
	case "always":
		return CheckAlways, nil
	}
	return 0, fmt.Errorf("check mode %q: want auto or always", s)
}

func (m CheckMode) String() string {
	if m == CheckAlways {
		return "always"
	}
	return "auto"
}

// GroupDrainer is implemented by drivers whose every process acts on the
// drain signal by itself (nginx: master and workers each close their
// listeners on SIGQUIT): baton sends it to the generation's whole process
// group at once, so the workers let go of the listeners without waiting for
// the master to relay it.
type GroupDrainer interface {
	DrainGroup() bool
}

// SignalKind is the intent of a signal.
type SignalKind int

// Signal kinds a driver maps.
const (
	Drain SignalKind = iota + 1
	HardStop
)

// New returns the driver named name ("haproxy", "nginx", "generic"), or
// guesses from the program's base name when name is empty. cmd is the proxy
// command line, argv[0] already resolved; it is validated here. generic
// configures the generic driver.
func New(name string, cmd []string, generic GenericOptions) (Driver, error) {
	if len(cmd) == 0 {
		return nil, fmt.Errorf("%w: no command given after --", ErrBadCommand)
	}
	if name == "" {
		name = Guess(cmd[0])
	}
	switch name {
	case "haproxy":
		return NewHAProxy(cmd)
	case "nginx":
		return NewNginx(cmd)
	case "generic":
		return NewGeneric(cmd, generic)
	default:
		return nil, fmt.Errorf("%w: unknown proxy %q (want haproxy, nginx or generic)", ErrBadCommand, name)
	}
}

// Guess names the driver for a program path: haproxy, nginx, else generic.
func Guess(path string) string {
	base := filepath.Base(path)
	switch {
	case strings.Contains(base, "haproxy"):
		return "haproxy"
	case strings.Contains(base, "nginx"):
		return "nginx"
	}
	return "generic"
}
