// Package supervisor runs the generations of one proxy for `baton run`: it
// owns the listening sockets, starts each generation with them, makes it
// active once it is ready, drains and stops the older ones, and serves the
// control API, the state file and the handover to an upgraded baton. The
// contract it keeps is docs/design.md; the numbers below are its
// invariants.
//
// # Ownership
//
//   - One goroutine, the loop (Supervisor.Run), owns all mutable state: the
//     lifecycle machine, the ListenerSet, the generation table (one
//     genRuntime each), the pending requests and the reload history. Every
//     other method (Reload, Stop, Status, Upgrade, Reloads) sends the loop
//     a request carrying its own reply channel; cancelling the caller's
//     context stops the waiting, never the reload. Serial, coalesced
//     reloads follow from this structure, not from locks.
//   - The lifecycle is the pure machine of supervisor/lifecycle: events in
//     through Step, actions out as data, time only inside events. The loop
//     arms one timer from NextDeadline.
//   - Effects run the actions (Supervisor.do): an action whose result is
//     known at once (a start) returns its event to the same step; the
//     others (config check, readiness probe, release watch, exit watch) run
//     on goroutines the loop owns (goEffect) and report back as events.
//     The machine never assumes an action worked.
//   - Each generation has its watchers, bound to its context and cancelled
//     when the machine forgets it: the exit watch (leader reaped and no
//     process of it left), the readiness probe, the release watch.
//   - Carry-over: an upgrade hands the next baton a Handover (machine
//     snapshot, listeners, generations with a pidfd and output pipe each,
//     control socket and lock, metrics socket, init pipe, last good config,
//     reload history) over a socketpair; the state file keeps the same
//     Handover without descriptors for a baton restarted after a crash.
//
// # Where things live
//
// A reload: control.go (POST /v1/reload) → requests.go (the request,
// ReloadRequested) → supervisor.go (step: machine, followActive,
// saveState) → effects.go (check, start, signal, release watch, reply,
// forget) → generation.go (genRuntime, exit watch, readiness probe).
// Around it:
//
//   - configcheck.go, check.go: the config check, shared with `baton check`;
//     configlisteners.go, listeners.go, listenerdiff.go, foreign.go: the
//     listener set and its per-generation diff; configdigest.go: digests.
//   - release_linux.go: the release watch; readyevent.go: sd_notify
//     readiness; tracking.go, cgroup_linux.go, genmarker_linux.go: which
//     processes belong to a generation.
//   - statefile.go: CONTROL.state; recover.go: adoption after a crash;
//     handover.go, upgrade.go: the upgrade; rundir.go: CONTROL.d.
//   - control*.go, connlimit.go: the control socket, its lock, peer checks
//     and connection cap; status.go, reloadhistory.go, history.go
//     (CONTROL.listeners): what status and doctor read; metrics*.go.
//   - watch.go, watchfilter.go: --watch; pidfile.go: the user's pid file;
//     startsched.go: when --start-nice and --start-cpus apply.
//   - starter.go, procfs.go: the OS interfaces the loop uses (Starter,
//     Proc, ProcFS), faked in tests.
//
// Process mechanism (starting children, the one reaper of wait4, the exec
// shim, rlimits, /proc readers, pidfds) lives in internal/proc; the JSON
// types of the control API and the status document live in api.
//
// # Invariants kept here (docs/design.md)
//
//   - 1: one ListenerSet, one socket per address, bound by baton; an
//     upgrade hands the sockets over, a restart after a crash takes them
//     back from the generations that hold them (pidfd_getfd).
//   - 2: a generation becomes active only once ready; a failed check,
//     start or readiness leaves the serving generation as it was, and the
//     reply carries the child's own words.
//   - 3 and 4: every older generation is drained, tracked through all of
//     its processes to its exit, stopped and killed at its deadlines; a
//     reload is answered only once the release watch saw no older
//     generation hold a listener.
//   - 5: one loop, one machine: one reload at a time, requests coalesced.
//   - 6: every child gets baton's rlimits; status reads them back.
//   - 7: listeners are diffed per generation; a watch event that leaves the
//     digest unchanged does not reload.
//   - 8: listeners are raw descriptors, never in Go's netpoller.
package supervisor
