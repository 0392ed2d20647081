package main

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/batonproxy/baton/internal/testbed"
)

// nginxHUP is nginx's own reload: a foreground master (`daemon off`) that
// gets SIGHUP, which is all `nginx -s reload` does; the reload is done
// when the signal was sent (when `nginx -s reload` would return). The
// master then re-reads the config, starts new workers and asks the old
// ones to finish, on its own time.
type nginxHUP struct {
	e                  *env
	dir, cfg, log, pid string
	port               int
	// render, when set, replaces the bench's config (the HTTP/3 one, its
	// port baked in).
	render func(version int) string
	p      *proc
	seen   map[procID]bool
}

func newNginxHUP(e *env) *nginxHUP { return &nginxHUP{e: e} }

func (m *nginxHUP) ID() string   { return "nginx-hup" }
func (m *nginxHUP) Name() string { return "nginx -s reload (SIGHUP)" }

func (m *nginxHUP) Start(ctx context.Context, port int) error {
	var err error
	if m.dir, err = m.e.dir(m.ID()); err != nil {
		return err
	}
	m.port, m.seen = port, map[procID]bool{}
	m.cfg = filepath.Join(m.dir, "nginx.conf")
	m.log = filepath.Join(m.dir, "nginx.log")
	m.pid = filepath.Join(m.dir, "nginx.pid")
	if err := m.writeConfig(1); err != nil {
		return err
	}
	if m.p, err = startNginx(m.e.nginx, m.cfg, m.pid, m.log); err != nil {
		return err
	}
	if err := waitServing(ctx, addr(port), 1, 30*time.Second, func() bool { return !m.p.Exited() }); err != nil {
		return fmt.Errorf("nginx: %w\n%s", err, tail(m.log, 10))
	}
	return nil
}

// startNginx runs a foreground nginx master with its own pid file.
func startNginx(bin, cfg, pidfile, log string) (*proc, error) {
	argv := []string{bin, "-e", "stderr", "-c", cfg, "-g", "daemon off; pid " + pidfile + ";"}
	return startProc(argv, log, syscall.SIGTERM)
}

func (m *nginxHUP) writeConfig(version int) error {
	if m.render != nil {
		return testbed.WriteFileAtomic(m.cfg, []byte(m.render(version)))
	}
	return writeConfig(m.cfg, nginxConfig, m.port, version)
}

func (m *nginxHUP) Reload(_ context.Context, version int) (reloadInfo, error) {
	if err := m.writeConfig(version); err != nil {
		return reloadInfo{}, err
	}
	m.note()
	if err := m.p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return reloadInfo{}, fmt.Errorf("nginx master: %w", err)
	}
	return reloadInfo{}, nil
}

// note remembers the master's workers, so Stop finds them even if the
// master is gone.
func (m *nginxHUP) note() {
	for _, id := range descendantIDs(m.p.Pid()) {
		m.seen[id] = true
	}
}

// Kill kill -9s the master and its workers: nginx is gone.
func (m *nginxHUP) Kill() (string, error) {
	m.note()
	victims := append([]procID{{Pid: m.p.Pid()}}, descendantIDs(m.p.Pid())...)
	pids := make([]int, 0, len(victims))
	for _, v := range victims {
		_ = syscall.Kill(v.Pid, syscall.SIGKILL)
		pids = append(pids, v.Pid)
	}
	return fmt.Sprintf("master and workers %v", pids), nil
}

func (m *nginxHUP) Serving() bool { return m.p != nil && !m.p.Exited() }

// Stop is nginx's fast shutdown (SIGTERM), then SIGKILL by pid.
func (m *nginxHUP) Stop() error {
	if m.p == nil {
		return nil
	}
	m.note()
	m.p.stop(syscall.SIGTERM, 10*time.Second)
	return reapSeen(m.ID(), m.seen)
}
