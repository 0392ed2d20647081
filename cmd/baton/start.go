package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"

	"github.com/cloudflare/tableflip"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor"
)

// handoverName names the socketpair end tableflip passes to the new baton.
const handoverName = "baton-handover"

// startState is what `baton run` holds before the supervisor runs: sockets
// it bound, took over from the baton it replaces (an upgrade), or took back
// from the generations a crashed baton left behind.
type startState struct {
	ctl       *supervisor.ControlSocket
	run       *supervisor.RunDir
	listeners *supervisor.ListenerSet
	metrics   net.Listener
	initPipe  *os.File
	procfs    supervisor.ProcFS
	handover  *supervisor.Handover // generations to adopt
	fds       []int                // descriptors received with handover
	conn      *net.UnixConn        // upgrade: where to say "ready"
}

// startFresh binds everything, unless a previous baton (killed, so the
// lock was free) left generations serving: then those proven to be its
// (supervisor.Recover) are adopted and their sockets taken back.
func startFresh(rs *runSetup, control, metricsAddr string) (*startState, error) {
	st := &startState{}
	var err error
	if st.procfs, err = proc.NewFS(); err != nil {
		return nil, err
	}
	if st.ctl, err = openControl(control, rs.group); err != nil {
		return nil, err
	}
	if st.run, err = supervisor.OpenRunDir(st.ctl.Path+".d", false); err != nil {
		st.close(false)
		return nil, err
	}
	if st.run.Marked() {
		rs.log.Warn("run directory had no marker (left by a crashed baton): marked and used, its generations are adopted if proven",
			zap.String("path", st.run.Path))
	}
	if st.metrics, err = listenMetrics(metricsAddr); err != nil {
		st.close(false)
		return nil, err
	}
	st.initPipe = initPipeFromEnv()
	prev, err := supervisor.Recover(st.ctl.Path+".state", st.run, rs.log)
	switch {
	case err != nil:
	case prev != nil:
		var found int
		st.listeners, found, err = supervisor.RecoverListeners(prev, rs.specs, st.procfs)
		if err == nil {
			st.handover = prev
			rs.log.Info("a previous baton left generations behind: adopting them",
				zap.Int("previous_pid", prev.BatonPid), zap.Int("generations", len(prev.Gens)), zap.Int("listeners_taken_back", found))
		}
	default:
		st.listeners, err = supervisor.BindListeners(rs.specs)
	}
	if err != nil {
		st.close(false)
		return nil, err
	}
	return st, nil
}

// initPipeFromEnv is the pipe to baton's PID 1 init (BATON_INIT_FD).
func initPipeFromEnv() *os.File {
	fd, err := strconv.Atoi(os.Getenv("BATON_INIT_FD"))
	if err != nil || fd < 3 {
		return nil
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "baton-init")
}

// receiveUpgrade takes over from the baton that started this one: the
// handover comes over the socketpair tableflip passed.
func receiveUpgrade(upg *tableflip.Upgrader, rs *runSetup, control string) (*startState, error) {
	f, err := upg.Fds.File(handoverName)
	if err != nil || f == nil {
		return nil, fmt.Errorf("upgrade: no handover from the old baton: %v", err)
	}
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	conn, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("upgrade: handover is not a unix socket")
	}
	h, fds, err := supervisor.ReceiveHandover(conn, supervisor.UpgradeTimeout)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	st := &startState{handover: &h, fds: fds, conn: conn}
	if st.procfs, err = proc.NewFS(); err == nil {
		control, err = checkedControlPath(control)
	}
	if err == nil {
		st.ctl, err = supervisor.AdoptControl(control, h, fds)
	}
	if err == nil {
		// The old baton's run directory (it hands it over): one of an
		// older baton without a marker is accepted and marked.
		st.run, err = supervisor.OpenRunDir(st.ctl.Path+".d", true)
	}
	if err == nil {
		st.listeners, err = supervisor.AdoptListeners(h, fds)
	}
	if err == nil {
		st.metrics, err = supervisor.AdoptMetricsListener(h, fds)
	}
	st.initPipe = supervisor.AdoptInitPipe(h, fds)
	if err != nil {
		st.abort()
		return nil, err
	}
	rs.log.Info("taking over from the old baton", zap.Int("old_pid", h.BatonPid), zap.Int("generations", len(h.Gens)))
	return st, nil
}

// closeFds closes received descriptors nobody took.
func (st *startState) closeFds() {
	for _, fd := range st.fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	st.fds = nil
}

// abort lets go of everything after a failed start. A baton that was
// taking over (an upgrade) removes no path and no lock file: they are the
// old baton's, which carries on with them.
func (st *startState) abort() { st.close(st.conn != nil) }

// close lets go of everything; after a handover without removing paths the
// next baton serves on.
func (st *startState) close(handedOver bool) {
	st.closeFds()
	if st.conn != nil {
		st.conn.Close()
	}
	if st.listeners != nil {
		if handedOver {
			_ = st.listeners.ReleaseAll()
		} else {
			_ = st.listeners.CloseAll()
		}
	}
	if st.ctl != nil {
		if handedOver {
			_ = st.ctl.Release()
		} else {
			_ = st.ctl.Close()
		}
	}
	if st.metrics != nil {
		st.metrics.Close()
	}
	if st.initPipe != nil {
		st.initPipe.Close()
	}
	if st.run != nil && !handedOver {
		_ = st.run.Discard() // only if this start created it
	}
}

// flipper is the supervisor's Upgrader: tableflip starts the binary now on
// disk with the same arguments and passes it the handover socketpair.
type flipper struct {
	upg   *tableflip.Upgrader
	exits *unregisteredExits
}

func (f flipper) Upgrade(handover *os.File) error {
	if err := f.upg.Fds.AddFile(handoverName, handover); err != nil {
		return err
	}
	f.exits.watch()
	err := f.upg.Upgrade()
	exits := f.exits.stop()
	if err == nil {
		return nil
	}
	// baton's reaper collects every child's exit, the new baton's too, so
	// tableflip cannot tell how it ended: the reaper can. The new baton is
	// the one child tableflip starts outside the reaper; an exit of another
	// such process (an orphan of a generation) in the same moment makes the
	// pid uncertain, and then none is named.
	if len(exits) == 1 {
		return fmt.Errorf("the new baton (%s, pid %d) did not take over: it ended with %s; its own words are in this baton's log", os.Args[0], exits[0].pid, exits[0].st)
	}
	return fmt.Errorf("the new baton (%s) did not take over: %w", os.Args[0], err)
}

// unregisteredExits keeps, while an upgrade runs, the exits the reaper
// routes to nobody: children not started through the reaper (the new baton)
// and orphans of generations. The reaper's goroutine notes them; the loop
// goroutine, running the upgrade, watches and reads them.
type unregisteredExits struct {
	mu       sync.Mutex
	watching bool
	seen     []childExit
}

type childExit struct {
	pid int
	st  proc.ExitStatus
}

// note is the reaper's orphan callback: it must not block.
func (u *unregisteredExits) note(pid int, st proc.ExitStatus) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.watching {
		u.seen = append(u.seen, childExit{pid, st})
	}
}

func (u *unregisteredExits) watch() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.watching, u.seen = true, nil
}

func (u *unregisteredExits) stop() []childExit {
	u.mu.Lock()
	defer u.mu.Unlock()
	seen := u.seen
	u.watching, u.seen = false, nil
	return seen
}
