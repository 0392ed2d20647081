// Package lifecycle is the generation lifecycle of baton as a pure,
// deterministic state machine: events go in through Machine.Step, actions come
// out as data. It has no clock (time arrives inside events), performs no I/O
// and starts nothing; the supervisor runs the actions and feeds their results
// back as events. The machine never assumes an action worked.
//
// Invariants (checked after every step in the tests):
//
//   - At most one generation is Active.
//   - At most one generation is being checked or started: reloads are serial,
//     and requests that arrive meanwhile are coalesced into the next reload.
//   - Every generation older than the active one is draining, stopping or
//     killed, and has a deadline; none is forgotten until it exited.
//   - A reload request is answered exactly once. It is answered with success
//     only after every older generation released the listeners (exited or
//     observed holding none of them).
//   - Active plus draining generations never exceed MaxGenerations after a
//     switch: the oldest draining ones are hard stopped first.
//   - After Stop, no generation is started.
package lifecycle
