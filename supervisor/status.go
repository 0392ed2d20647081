package supervisor

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

var deadlineActions = map[lifecycle.State]string{
	lifecycle.Starting: "kill (not ready)",
	lifecycle.Draining: "hard stop",
	lifecycle.Stopping: "kill",
}

// status builds, on the loop goroutine, the part of an api.Status that baton
// holds in memory: generations with their leader pid, listeners with their
// inodes, counters. What the kernel knows (each generation's processes,
// their descriptors, limits and connections, the accept queues) is read
// afterwards by gatherProcs, on the caller's goroutine: a host-wide
// sock_diag dump and a /proc walk never run on the loop. procs finds
// each generation's processes, in the order of st.Generations.
func (s *Supervisor) status() (st api.Status, procs []proc.GenProcs) {
	st = api.Status{
		Pid: os.Getpid(), Proxy: s.cfg.Driver.Name(), Command: s.cfg.Command,
		StartedAt: s.startedAt, Stopping: s.m.Stopping(), Counters: api.Counters(s.m.Counters()),
		Listeners: []api.ListenerStatus{}, Generations: []api.GenStatus{},
	}
	for _, r := range s.cfg.Rlimits {
		st.Rlimits = append(st.Rlimits, r.String())
	}
	for _, sock := range s.cfg.Listeners.Sockets() {
		sp := sock.Spec()
		st.Listeners = append(st.Listeners, api.ListenerStatus{Name: sp.Name, Spec: sp.String(), Addr: sock.Addr(), Inode: sock.Inode(), Where: s.cfg.Listeners.where(listenerKey(sp.Key()))})
	}
	for _, g := range s.m.Generations() {
		st.Generations = append(st.Generations, s.genStatus(g))
		procs = append(procs, s.genProcs(g))
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
	return st, procs
}

// genProcs is how the processes of g are found, read on the loop for a
// gathering off it: every process it spawned (tracking.go).
func (s *Supervisor) genProcs(g lifecycle.GenInfo) proc.GenProcs {
	if rt := s.gens[g.Gen]; rt != nil && rt.proc != nil {
		return rt.procs()
	}
	return proc.GenProcs{Pgid: g.Pid, Leader: g.Pid}
}

func (s *Supervisor) genStatus(g lifecycle.GenInfo) api.GenStatus {
	gs := api.GenStatus{
		Gen: int(g.Gen), State: g.State.String(), Pid: g.Pid, Replacement: g.Replacement,
		StartedAt: timePtr(g.StartedAt), ReadyAt: timePtr(g.ReadyAt), DrainedAt: timePtr(g.DrainedAt),
		Deadline: timePtr(g.Deadline), Processes: []api.ProcStatus{},
	}
	if gs.Deadline != nil {
		gs.DeadlineAction = deadlineActions[g.State]
	}
	if rt := s.gens[g.Gen]; rt != nil {
		gs.ForeignListeners = rt.foreign
	}
	return gs
}

// gatherProcs completes st, a snapshot from the loop, and procs, how its
// generations' processes are found, with what the kernel
// says now: accept queues and backlogs (sock_diag), and for each generation
// its processes with their limits, descriptors and connections (/proc). It
// runs on the caller's goroutine, one gathering at a time (s.gathering):
// scrapes and status requests that arrive meanwhile wait for their turn,
// up to ctx, and never hold up the loop.
func (s *Supervisor) gatherProcs(ctx context.Context, st *api.Status, procs []proc.GenProcs) error {
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
		s.gatherGen(&st.Generations[i], procs[i], established)
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
func (s *Supervisor) gatherGen(gs *api.GenStatus, procs proc.GenProcs, established map[uint64]bool) {
	if gs.Pid == 0 {
		return
	}
	pids, _ := s.procfs.Members(procs)
	roles, _ := s.cfg.Driver.(proxyctl.ProcessRoles)
	for _, pid := range pids {
		ps := api.ProcStatus{Pid: pid, Role: "child"}
		switch {
		case roles != nil:
			cmdline, _ := s.procfs.Cmdline(pid)
			ps.Role = roles.ProcessRole(pid == gs.Pid, cmdline)
		case pid == gs.Pid:
			ps.Role = "leader"
		}
		if lim, err := s.procfs.Limits(pid); err == nil {
			ps.Nofile = api.Limit(lim["nofile"])
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
