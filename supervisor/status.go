package supervisor

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Status is the supervisor's state, as `baton status` shows it.
type Status struct {
	Pid         int              `json:"pid"`
	Proxy       string           `json:"proxy"`
	Command     []string         `json:"command"`
	StartedAt   time.Time        `json:"started_at"`
	Stopping    bool             `json:"stopping"`
	Rlimits     []string         `json:"rlimits"`
	Listeners   []ListenerStatus `json:"listeners"`
	Generations []GenStatus      `json:"generations"`
	// LastReload is the last reload or the first start (trigger "start"),
	// crash replacements left out; Reloads the history, oldest first
	// (reloadhistory.go).
	LastReload *ReloadRecord  `json:"last_reload,omitempty"`
	Reloads    []ReloadRecord `json:"reloads"`
	// Config is the applied config and whether the files on disk differ;
	// nil when the active generation has no config copy (the generic
	// driver) or none is active.
	Config   *ConfigStatus `json:"config,omitempty"`
	Counters Counters      `json:"counters"`
	// ConsecutiveCrashes counts crashes of the active generation in a row;
	// RestartAt is set while a replacement waits out its backoff.
	ConsecutiveCrashes int        `json:"consecutive_crashes"`
	RestartAt          *time.Time `json:"restart_at,omitempty"`
	// Watch is the config watch's state, when --watch is set.
	Watch *WatchStatus `json:"watch,omitempty"`

	// procs finds each generation's processes (same order as Generations),
	// taken on the loop for gatherProcs; not part of the document.
	procs []proc.GenProcs
}

// Counters are totals since baton started. The first start and crash
// replacements are not reloads.
type Counters struct {
	ReloadsOK     int `json:"reloads_ok"`
	ReloadsFailed int `json:"reloads_failed"`
	Crashes       int `json:"crashes"`
	HardStops     int `json:"hard_stops"`
	Kills         int `json:"kills"`
}

// ListenerStatus is one listening socket baton holds. For TCP listeners,
// Queue is the accept queue now (connections the kernel completed that no
// generation accepted yet) and Backlog its limit, from sock_diag.
type ListenerStatus struct {
	Name    string `json:"name"`
	Spec    string `json:"spec"`
	Addr    string `json:"addr"`
	Inode   uint64 `json:"inode"`
	Queue   uint32 `json:"accept_queue"`
	Backlog uint32 `json:"backlog"`
	// Where is the file:line of the active configuration that declares it
	// (baton run without --listen).
	Where string `json:"where,omitempty"`
}

// GenStatus is one generation.
type GenStatus struct {
	Gen         int        `json:"generation"`
	State       string     `json:"state"`
	Pid         int        `json:"pid"`
	Replacement bool       `json:"replacement,omitempty"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	ReadyAt     *time.Time `json:"ready_at,omitempty"`
	DrainedAt   *time.Time `json:"drain_started_at,omitempty"`
	// Deadline is when the generation is escalated: killed when not ready
	// (starting), hard stopped (draining), SIGKILLed (stopping).
	Deadline       *time.Time `json:"deadline,omitempty"`
	DeadlineAction string     `json:"deadline_action,omitempty"`
	// Connections counts the ESTABLISHED TCP sockets its processes hold;
	// OpenFds their open descriptors.
	Connections int          `json:"connections"`
	OpenFds     int          `json:"open_fds"`
	Processes   []ProcStatus `json:"processes"`
	// ForeignListeners are listening sockets it bound itself (addresses
	// missing from --listen).
	ForeignListeners []ForeignListener `json:"foreign_listeners,omitempty"`
}

// ProcStatus is one process of a generation, with limits read back from
// /proc/PID/limits. Role is what the driver calls it: master or worker
// (HAProxy, nginx; nginx's other processes by their title, "cache
// manager"), leader or child (generic).
type ProcStatus struct {
	Pid         int        `json:"pid"`
	Role        string     `json:"role"`
	Nofile      proc.Limit `json:"nofile"`
	OpenFds     int        `json:"open_fds"`
	Connections int        `json:"connections"`
}

var deadlineActions = map[lifecycle.State]string{
	lifecycle.Starting: "kill (not ready)",
	lifecycle.Draining: "hard stop",
	lifecycle.Stopping: "kill",
}

// status builds, on the loop goroutine, the part of a Status that baton
// holds in memory: generations with their leader pid, listeners with their
// inodes, counters. What the kernel knows (each generation's processes,
// their descriptors, limits and connections, the accept queues) is read
// afterwards by gatherProcs, on the caller's goroutine: a host-wide
// sock_diag dump and a /proc walk never run on the loop.
func (s *Supervisor) status() Status {
	st := Status{
		Pid: os.Getpid(), Proxy: s.cfg.Driver.Name(), Command: s.cfg.Command,
		StartedAt: s.startedAt, Stopping: s.m.Stopping(), Counters: Counters(s.m.Counters()),
		Listeners: []ListenerStatus{}, Generations: []GenStatus{},
	}
	for _, r := range s.cfg.Rlimits {
		st.Rlimits = append(st.Rlimits, r.String())
	}
	for _, sock := range s.cfg.Listeners.Sockets() {
		sp := sock.Spec()
		st.Listeners = append(st.Listeners, ListenerStatus{Name: sp.Name, Spec: sp.String(), Addr: sock.Addr(), Inode: sock.Inode(), Where: s.cfg.Listeners.Where(ListenerKey(sp.Key()))})
	}
	for _, g := range s.m.Generations() {
		st.Generations = append(st.Generations, s.genStatus(g))
		st.procs = append(st.procs, s.genProcs(g))
	}
	if s.lastReload != nil {
		last := *s.lastReload
		st.LastReload = &last
	}
	st.Reloads = s.history.list()
	st.Config = s.configStatus()
	var restart time.Time
	st.ConsecutiveCrashes, restart = s.m.Backoff()
	st.RestartAt = timePtr(restart)
	if s.watch != nil {
		w := s.watch.Status()
		st.Watch = &w
	}
	return st
}

// genProcs is how the processes of g are found, read on the loop for a
// gathering off it: every process it spawned (tracking.go).
func (s *Supervisor) genProcs(g lifecycle.GenInfo) proc.GenProcs {
	if rt := s.gens[g.Gen]; rt != nil && rt.proc != nil {
		return rt.procs()
	}
	return proc.GenProcs{Pgid: g.Pid, Leader: g.Pid}
}

func (s *Supervisor) genStatus(g lifecycle.GenInfo) GenStatus {
	gs := GenStatus{
		Gen: int(g.Gen), State: g.State.String(), Pid: g.Pid, Replacement: g.Replacement,
		StartedAt: timePtr(g.StartedAt), ReadyAt: timePtr(g.ReadyAt), DrainedAt: timePtr(g.DrainedAt),
		Deadline: timePtr(g.Deadline), Processes: []ProcStatus{},
	}
	if gs.Deadline != nil {
		gs.DeadlineAction = deadlineActions[g.State]
	}
	if rt := s.gens[g.Gen]; rt != nil {
		gs.ForeignListeners = rt.foreign
	}
	return gs
}

// gatherProcs completes st, a snapshot from the loop, with what the kernel
// says now: accept queues and backlogs (sock_diag), and for each generation
// its processes with their limits, descriptors and connections (/proc). It
// runs on the caller's goroutine, one gathering at a time (s.gathering):
// scrapes and status requests that arrive meanwhile wait for their turn,
// up to ctx, and never hold up the loop.
func (s *Supervisor) gatherProcs(ctx context.Context, st *Status) error {
	select {
	case s.gathering <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("read process data: %w", ctx.Err())
	}
	defer func() { <-s.gathering }()
	s.gatherConfig(st.Config)
	queues, established := tcpState()
	for i := range st.Listeners {
		if q, ok := queues[st.Listeners[i].Inode]; ok {
			st.Listeners[i].Queue, st.Listeners[i].Backlog = q.Queue, q.Backlog
		}
	}
	for i := range st.Generations {
		s.gatherGen(&st.Generations[i], st.procs[i], established)
	}
	return nil
}

// tcpState reads, through sock_diag, the listening sockets (by inode) and
// the inodes of the established ones.
func tcpState() (map[uint64]fdpass.ListenInfo, map[uint64]bool) {
	queues := map[uint64]fdpass.ListenInfo{}
	established := map[uint64]bool{}
	all, err := fdpass.DiagTCP(1<<fdpass.TCPListen | 1<<fdpass.TCPEstablished)
	if err != nil {
		return queues, established
	}
	for _, l := range all {
		if l.State == fdpass.TCPListen {
			queues[l.Inode] = l
		} else {
			established[l.Inode] = true
		}
	}
	return queues, established
}

// gatherGen reads the processes of the generation whose leader is gs.Pid
// and that procs (taken on the loop) finds.
func (s *Supervisor) gatherGen(gs *GenStatus, procs proc.GenProcs, established map[uint64]bool) {
	if gs.Pid == 0 {
		return
	}
	pids, _ := s.procfs.Members(procs)
	roles, _ := s.cfg.Driver.(proxyctl.ProcessRoles)
	for _, pid := range pids {
		ps := ProcStatus{Pid: pid, Role: "child"}
		switch {
		case roles != nil:
			cmdline, _ := s.procfs.Cmdline(pid)
			ps.Role = roles.ProcessRole(pid == gs.Pid, cmdline)
		case pid == gs.Pid:
			ps.Role = "leader"
		}
		if lim, err := s.procfs.Limits(pid); err == nil {
			ps.Nofile = lim["nofile"]
		}
		ps.OpenFds, _ = s.procfs.FdCount(pid)
		if in, err := s.procfs.SocketInodes(pid); err == nil {
			for inode := range in {
				if established[inode] {
					ps.Connections++
				}
			}
		}
		gs.OpenFds += ps.OpenFds
		gs.Connections += ps.Connections
		gs.Processes = append(gs.Processes, ps)
	}
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
