package supervisor

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/proxyctl"
)

// fakeDriver is a proxyctl.Driver for the fake proxy of fake_proxy_test.go:
// sockets as LISTEN_FDS (fds 3..), the check as `TESTBIN check FILE`,
// readiness as an answer on GEN_DIR/ready from the pid baton started, drain
// SIGUSR1, hard stop SIGTERM. It is safe for concurrent use: the test
// goroutine queues modes while the supervisor loop calls Prepare.
type fakeDriver struct {
	exe       string // the test binary
	checkFile string // what the check reads: ok, slow=MS or an error text
	// wrapShell starts each generation through /bin/sh, which records the
	// NOFILE limits it was started with in GEN_DIR/nofile and then execs the
	// fake: a Go program raises its own soft NOFILE at init, a shell does not.
	wrapShell bool

	mu       sync.Mutex
	modes    []string // FAKE_MODE of the next starts, in order
	prepared []int    // generations prepared, in order
	pids     map[int]int
	dirs     map[int]string
}

func newFakeDriver(exe, checkFile string) *fakeDriver {
	return &fakeDriver{exe: exe, checkFile: checkFile, pids: map[int]int{}, dirs: map[int]string{}}
}

// queueModes sets the FAKE_MODE of the next generations started, in order;
// later ones get the default (serve normally).
func (d *fakeDriver) queueModes(modes ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.modes = append(d.modes, modes...)
}

// pid returns the pid baton reported starting for gen (0 if none yet).
func (d *fakeDriver) pid(gen int) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pids[gen]
}

// dir returns gen's private directory.
func (d *fakeDriver) dir(gen int) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dirs[gen]
}

// preparedGens lists the generations prepared so far.
func (d *fakeDriver) preparedGens() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.prepared...)
}

func (d *fakeDriver) Name() string { return "fake" }

func (d *fakeDriver) CheckArgv(proxyctl.GenSpec) []string {
	return []string{d.exe, roleCheck, d.checkFile}
}

func (d *fakeDriver) Prepare(g proxyctl.GenSpec) (proxyctl.Launch, proxyctl.Session, error) {
	d.mu.Lock()
	mode := ""
	if len(d.modes) > 0 {
		mode, d.modes = d.modes[0], d.modes[1:]
	}
	d.prepared = append(d.prepared, g.Gen)
	d.dirs[g.Gen] = g.Dir
	d.mu.Unlock()
	files := make([]int, len(g.Listeners))
	for i, l := range g.Listeners {
		files[i] = l.Fd
	}
	argv := []string{d.exe, roleServe}
	if d.wrapShell {
		script := `ulimit -Sn >"$FAKE_DIR/nofile" && ulimit -Hn >>"$FAKE_DIR/nofile" && exec "$0" "$@"`
		argv = append([]string{"/bin/sh", "-c", script}, argv...)
	}
	return proxyctl.Launch{
		Argv: argv,
		Env: []string{
			"LISTEN_FDS=" + strconv.Itoa(len(files)),
			envGen + "=" + strconv.Itoa(g.Gen),
			envDir + "=" + g.Dir,
			envMode + "=" + mode,
		},
		Files:     files,
		ListenPID: true,
	}, &fakeSession{d: d, gen: g.Gen, path: filepath.Join(g.Dir, "ready")}, nil
}

func (d *fakeDriver) Signal(kind proxyctl.SignalKind) unix.Signal {
	if kind == proxyctl.Drain {
		return unix.SIGUSR1
	}
	return unix.SIGTERM
}

type fakeSession struct {
	d    *fakeDriver
	gen  int
	path string

	mu  sync.Mutex
	pid int
}

func (s *fakeSession) Started(pid int) {
	s.mu.Lock()
	s.pid = pid
	s.mu.Unlock()
	s.d.mu.Lock()
	s.d.pids[s.gen] = pid
	s.d.mu.Unlock()
}

// Ready connects to the generation's readiness socket and checks that the
// process baton started answers.
func (s *fakeSession) Ready(ctx context.Context) error {
	s.mu.Lock()
	want := s.pid
	s.mu.Unlock()
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", s.path)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read %s: %w", s.path, err)
	}
	var pid, gen int
	if _, err := fmt.Sscanf(strings.TrimSpace(line), "ready pid=%d gen=%d", &pid, &gen); err != nil {
		return fmt.Errorf("bad readiness answer %q: %w", line, err)
	}
	if pid != want || gen != s.gen {
		return fmt.Errorf("readiness answered by pid %d gen %d, want pid %d gen %d", pid, gen, want, s.gen)
	}
	return nil
}

func (s *fakeSession) Close() error { return nil }
