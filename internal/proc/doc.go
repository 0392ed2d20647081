// Package proc is baton's process mechanism: starting children
// (ExecStarter, the exec shim, StartSched), the one reaper of wait4
// (Reaper), resource limits (Rlimit), readers of /proc (FS, ReadStat,
// ParentPid, CPUTicks, Children, Descendants, EpollInodes) and pidfds
// (OpenPidfd, TakeFd, Adopt). It is the bottom layer: it imports the
// standard library, x/sys/unix and prometheus/procfs, never the
// supervisor, the proxy drivers, fdpass or doctor; the policy of what to
// start and when stays with its callers, which declare the small
// interfaces they use (supervisor.Starter, supervisor.Proc,
// supervisor.ProcFS) and fake them in tests.
//
// # Invariants
//
//   - One owner of wait4: Reaper.Run is the only caller of wait4 in the
//     process, and nothing else waits for a child (no os/exec Wait): a
//     wait4(-1) elsewhere would steal an exit. baton is a child
//     subreaper; exits nobody registered (orphans) go to one callback.
//   - Register before start: Reaper.Start runs the fork with the routing
//     table locked and registers the pid before unlocking, so an exit,
//     however early, finds its callback.
//   - Every descriptor is close-on-exec unless it is deliberately passed
//     to a child (StartSpec.Files become fds 3, 4, ... there; the caller
//     keeps them open until Start returns).
//   - Never (*os.File).Fd() on a shared socket: it makes the shared open
//     file description blocking for every holder. Fd is used only on a
//     child's private stdio (its output pipe, /dev/null); a socket is
//     reached through SyscallConn().Control.
//   - A pid alone is not a process: OpenPidfd checks the start time, and
//     the stat readers report it (Stat.StartTicks) so that callers can.
//   - Exits are reported as 128+signal for a death by signal;
//     StatusUnknown for an adopted process, which is not baton's child.
package proc
