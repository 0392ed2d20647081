package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/batonproxy/baton/internal/testbed"
)

// haproxyMW is HAProxy's own master-worker mode: `haproxy -W -db -S SOCK
// -f CFG`, reloaded with `reload` on the master CLI. Its ack depends on
// the version (ackKind): on 3.1 and later the master's synchronous answer
// `Success=1`, which comes once the new worker is ready; before 3.1, when
// `show proc` lists a new worker (2.7–3.0 answer after parse and fork,
// 2.6 not at all).
type haproxyMW struct {
	e                   *env
	dir, cfg, sock, log string
	port                int
	// render, when set, replaces the bench's config (a big config, its
	// ports baked in).
	render  func(version int) string
	p       *proc
	seen    map[procID]bool
	workers []int // the current workers after the last reload
}

func newHAProxyMW(e *env) *haproxyMW { return &haproxyMW{e: e} }

func (m *haproxyMW) ID() string   { return "haproxy-mw" }
func (m *haproxyMW) Name() string { return "HAProxy -W, master CLI `reload`" }

// ackKind says what the method's ack is on this HAProxy version.
func (m *haproxyMW) ackKind() string { return mwAckKind(m.e.haproxyBin) }

func mwAckKind(p proxyBin) string {
	if p.syncReload() {
		return "the master CLI's answer `Success=1`, once the new worker is ready"
	}
	return "`show proc` lists a new worker"
}

func (m *haproxyMW) writeConfig(version int) error {
	if m.render != nil {
		return testbed.WriteFileAtomic(m.cfg, []byte(m.render(version)))
	}
	return writeConfig(m.cfg, haproxyConfig, m.port, version)
}

func (m *haproxyMW) Start(ctx context.Context, port int) error {
	var err error
	if m.dir, err = m.e.dir(m.ID()); err != nil {
		return err
	}
	m.port, m.seen = port, map[procID]bool{}
	m.cfg = filepath.Join(m.dir, "haproxy.cfg")
	m.sock = filepath.Join(m.dir, "master.sock")
	m.log = filepath.Join(m.dir, "haproxy.log")
	if err := m.writeConfig(1); err != nil {
		return err
	}
	argv := []string{m.e.haproxy, "-W", "-db", "-S", m.sock, "-f", m.cfg}
	if m.p, err = startProc(argv, m.log, syscall.SIGTERM); err != nil {
		return err
	}
	if err := waitServing(ctx, addr(port), 1, 60*time.Second, func() bool { return !m.p.Exited() }); err != nil {
		return fmt.Errorf("haproxy -W: %w\n%s", err, tail(m.log, 10))
	}
	// The worker serves before the master, re-executed into its wait
	// mode, answers its CLI.
	mp, err := m.waitShowProc(ctx)
	m.workers = mp.workers
	return err
}

// waitShowProc asks `show proc` until the master answers (at most 10 s:
// it does not while it re-executes itself).
func (m *haproxyMW) waitShowProc(ctx context.Context) (masterProcs, error) {
	var mp masterProcs
	var err error
	pollUntil(10*time.Second, 2*time.Millisecond, func() bool {
		mp, err = m.showProc(ctx)
		return err == nil || ctx.Err() != nil || m.p.Exited()
	})
	if err != nil {
		return mp, fmt.Errorf("master CLI: %w", err)
	}
	return mp, nil
}

// masterProcs is what `show proc` says.
type masterProcs struct {
	workers []int // current workers
	reloads int   // the master's reload count
	failed  int   // failed reloads
}

// showProc asks the master CLI `show proc`.
func (m *haproxyMW) showProc(ctx context.Context) (masterProcs, error) {
	out, err := masterCommand(ctx, m.sock, "show proc")
	if err != nil {
		return masterProcs{}, err
	}
	return parseShowProc(out)
}

// parseShowProc reads HAProxy 2.6's `show proc`:
//
//	#<PID>          <type>          <reloads>       <uptime>        <version>
//	31818           master          2 [failed: 0]   0d00h00m20s     2.6.12
//	# workers
//	32054           worker          0               0d00h00m00s     2.6.12
//	# old workers
//	...
func parseShowProc(out string) (masterProcs, error) {
	var mp masterProcs
	section, sawMaster := "", false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "#") {
			section = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			continue
		}
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		switch {
		case f[1] == "master":
			sawMaster = true
			mp.reloads, _ = strconv.Atoi(f[2])
			if i := strings.Index(line, "[failed: "); i >= 0 {
				n := strings.TrimSuffix(strings.Fields(line[i+len("[failed: "):])[0], "]")
				mp.failed, _ = strconv.Atoi(n)
			}
		case f[1] == "worker" && section == "workers":
			mp.workers = append(mp.workers, pid)
		}
	}
	if !sawMaster {
		return mp, fmt.Errorf("no master in show proc: %q", out)
	}
	return mp, nil
}

// masterCommand sends one command to the master CLI and reads the answer
// (the write side is shut, so the master closes after answering).
func masterCommand(ctx context.Context, sock, command string) (string, error) {
	return masterExchange(ctx, sock, command, true, 5*time.Second)
}

// masterExchange sends command and reads until the master closes the
// connection, for at most timeout. halfClose shuts the write side after
// the command.
func masterExchange(ctx context.Context, sock, command string, halfClose bool, timeout time.Duration) (string, error) {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, command+"\n"); err != nil {
		return "", err
	}
	if halfClose {
		_ = c.(*net.UnixConn).CloseWrite()
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	return string(b), err
}

// Reload writes the config of version and reloads through the master
// CLI; the ack is the version's (ackKind).
func (m *haproxyMW) Reload(ctx context.Context, version int) (reloadInfo, error) {
	if m.e.haproxyBin.syncReload() {
		return m.reloadSync(ctx, version)
	}
	return m.reloadListed(ctx, version)
}

// reloadSync sends `reload` on a connection whose write side stays open
// and reads until the master closes it: HAProxy 3.1+ hands the connection
// to the re-executed master, which answers `Success=1` (or `Success=0`)
// and the startup logs once no worker is still starting, re-checking
// every 50 ms. The ack is that answer; afterwards `show proc` must list a
// worker that was not there before.
func (m *haproxyMW) reloadSync(ctx context.Context, version int) (reloadInfo, error) {
	if err := m.writeConfig(version); err != nil {
		return reloadInfo{}, err
	}
	out, err := masterExchange(ctx, m.sock, "reload", false, 2*time.Minute)
	ackAt := time.Now()
	if err != nil {
		return reloadInfo{}, fmt.Errorf("master CLI reload: %w (answer %q)", err, out)
	}
	if err := checkReloadAnswer(out); err != nil {
		return reloadInfo{}, err
	}
	old := map[int]bool{}
	for _, w := range m.workers {
		old[w] = true
	}
	now, err := m.waitShowProc(ctx)
	if err != nil {
		return reloadInfo{}, err
	}
	m.remember(now.workers)
	fresh := slices.ContainsFunc(now.workers, func(w int) bool { return !old[w] })
	m.workers = now.workers
	if !fresh {
		return reloadInfo{}, fmt.Errorf("the master answered Success=1 but show proc lists no new worker (workers %v, before %v)", now.workers, slices.Sorted(maps.Keys(old)))
	}
	return reloadInfo{AckAt: ackAt}, nil
}

// checkReloadAnswer reads a 3.1+ master's answer to `reload`:
// "Success=1\n--\n" and the startup logs, or "Success=0" and why.
func checkReloadAnswer(out string) error {
	switch {
	case strings.HasPrefix(out, "Success=1\n"):
		return nil
	case strings.HasPrefix(out, "Success=0"):
		return fmt.Errorf("the master reports a failed reload: %s", strings.TrimSpace(out))
	}
	return fmt.Errorf("master CLI reload: no Success= answer (the connection closed early?): %q", out)
}

// reloadListed sends `reload` and waits until `show proc` lists a worker
// that was not there before (or counts one more failed reload): HAProxy
// before 3.1, whose answer, if any, comes before the new worker is ready.
func (m *haproxyMW) reloadListed(ctx context.Context, version int) (reloadInfo, error) {
	before, err := m.waitShowProc(ctx)
	if err != nil {
		return reloadInfo{}, err
	}
	if err := m.writeConfig(version); err != nil {
		return reloadInfo{}, err
	}
	if _, err := masterCommand(ctx, m.sock, "reload"); err != nil {
		return reloadInfo{}, fmt.Errorf("master CLI reload: %w", err)
	}
	old := map[int]bool{}
	for _, w := range before.workers {
		old[w] = true
	}
	var failed error
	ok := pollUntil(30*time.Second, 2*time.Millisecond, func() bool {
		if ctx.Err() != nil || m.p.Exited() {
			return true
		}
		now, err := m.showProc(ctx)
		if err != nil {
			return false // the master re-executes itself meanwhile
		}
		if now.failed > before.failed {
			failed = errors.New("the master reports a failed reload")
			return true
		}
		for _, w := range now.workers {
			if !old[w] {
				m.remember(now.workers)
				m.workers = now.workers
				return true
			}
		}
		return false
	})
	switch {
	case ctx.Err() != nil:
		return reloadInfo{}, ctx.Err()
	case m.p.Exited():
		return reloadInfo{}, fmt.Errorf("haproxy master exited: %v\n%s", m.p.err, tail(m.log, 10))
	case failed != nil:
		return reloadInfo{}, fmt.Errorf("%w\n%s", failed, tail(m.log, 10))
	case !ok:
		return reloadInfo{}, fmt.Errorf("no new worker after 30 s: %w", errTimeout)
	}
	return reloadInfo{}, nil
}

// Kill kill -9s the current worker; HAProxy 2.6's master then exits (it
// stops when a current worker dies), and nothing serves any more.
func (m *haproxyMW) Kill() (string, error) {
	mp, err := m.showProc(context.Background())
	if err != nil {
		return "", err
	}
	if len(mp.workers) == 0 {
		return "", errors.New("no worker")
	}
	for _, w := range mp.workers {
		if id, ok := idOf(w); ok {
			m.seen[id] = true
			id.signal(syscall.SIGKILL)
		}
	}
	return fmt.Sprintf("worker %v", mp.workers), nil
}

// remember notes processes to stop in Stop even if their master is gone.
func (m *haproxyMW) remember(pids []int) {
	for _, pid := range pids {
		if id, ok := idOf(pid); ok {
			m.seen[id] = true
		}
	}
}

func (m *haproxyMW) Serving() bool { return m.p != nil && !m.p.Exited() }

// Stop is a hard stop (SIGTERM to the master), then SIGKILL by pid.
func (m *haproxyMW) Stop() error {
	if m.p == nil {
		return nil
	}
	for _, id := range descendantIDs(m.p.Pid()) {
		m.seen[id] = true
	}
	m.p.stop(syscall.SIGTERM, 10*time.Second)
	return reapSeen(m.ID(), m.seen)
}

// haproxySF is the init-script idiom: `haproxy -f CFG -D -p PIDFILE -sf
// $(cat PIDFILE)` run by /bin/sh, with HAProxy's default SO_REUSEPORT
// (no -dR): each reload binds a socket of its own beside the old one.
// The reload is done when the command returns.
type haproxySF struct {
	e                      *env
	dir, cfg, pidfile, log string
	port                   int
	ids                    []procID // every daemon started, oldest first
}

func newHAProxySF(e *env) *haproxySF { return &haproxySF{e: e} }

func (m *haproxySF) ID() string   { return "haproxy-sf" }
func (m *haproxySF) Name() string { return "HAProxy -D -sf (init script)" }

func (m *haproxySF) Start(ctx context.Context, port int) error {
	var err error
	if m.dir, err = m.e.dir(m.ID()); err != nil {
		return err
	}
	m.port = port
	m.cfg = filepath.Join(m.dir, "haproxy.cfg")
	m.pidfile = filepath.Join(m.dir, "haproxy.pid")
	m.log = filepath.Join(m.dir, "haproxy.log")
	if err := writeConfig(m.cfg, haproxyConfig, port, 1); err != nil {
		return err
	}
	if err := m.run(ctx, m.e.haproxy+" -f "+m.cfg+" -D -p "+m.pidfile); err != nil {
		return err
	}
	return waitServing(ctx, addr(port), 1, 30*time.Second, nil)
}

// run runs the shell command and records the daemon it left in the pid
// file.
func (m *haproxySF) run(ctx context.Context, script string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w\n%s", script, err, tail(m.log, 10))
	}
	b, err := os.ReadFile(m.pidfile)
	if err != nil {
		return err
	}
	for _, f := range strings.Fields(string(b)) {
		pid, _ := strconv.Atoi(f)
		if id, ok := idOf(pid); ok {
			m.ids = append(m.ids, id)
		}
	}
	return nil
}

func (m *haproxySF) Reload(ctx context.Context, version int) (reloadInfo, error) {
	if err := writeConfig(m.cfg, haproxyConfig, m.port, version); err != nil {
		return reloadInfo{}, err
	}
	script := m.e.haproxy + " -f " + m.cfg + " -D -p " + m.pidfile + " -sf $(cat " + m.pidfile + ")"
	return reloadInfo{}, m.run(ctx, script)
}

// Kill kill -9s the newest daemon.
func (m *haproxySF) Kill() (string, error) {
	if len(m.ids) == 0 {
		return "", errors.New("no daemon")
	}
	id := m.ids[len(m.ids)-1]
	id.signal(syscall.SIGKILL)
	return fmt.Sprintf("daemon %d", id.Pid), nil
}

func (m *haproxySF) Serving() bool {
	return len(m.ids) > 0 && m.ids[len(m.ids)-1].alive()
}

// Stop sends SIGTERM (hard stop) to every daemon still running, then
// SIGKILL after 5 s.
func (m *haproxySF) Stop() error {
	for _, id := range m.ids {
		id.signal(syscall.SIGTERM)
	}
	pollUntil(5*time.Second, 20*time.Millisecond, func() bool {
		for _, id := range m.ids {
			if id.alive() {
				return false
			}
		}
		return true
	})
	if left := reap(m.ids); len(left) > 0 {
		return fmt.Errorf("%s: daemons left after stop: %v", m.ID(), left)
	}
	return nil
}

// reapSeen SIGKILLs whatever of seen is still alive.
func reapSeen(id string, seen map[procID]bool) error {
	ids := make([]procID, 0, len(seen))
	for p := range seen {
		ids = append(ids, p)
	}
	if left := reap(ids); len(left) > 0 {
		return fmt.Errorf("%s: processes left after stop: %v", id, left)
	}
	return nil
}
