// Package doctor implements `baton doctor`: host checks for what goes wrong
// around proxy reloads. Each check looks for one condition — SO_REUSEPORT
// groups of TCP listeners and of unconnected UDP (QUIC) sockets, UDP
// sockets beside baton's, and old proxies still listening (old answers
// after a reload), low or uneven NOFILE limits and descriptor exhaustion
// (failed accepts, flapping health checks), kernel queues and limits that
// drop connections, proxy configurations whose drains cut clients off or
// never end, baton generations that drain too long, and listening sockets
// re-created for an unchanged address — and reports what it saw, why it
// matters and how to fix it.
//
// Invariants:
//
//   - Read only. doctor never signals, writes, binds or connects to anything
//     but baton control sockets (GET /v1/status), and runs no program.
//   - Facts are gathered once per run (Gather: sock_diag dumps of the
//     listening TCP and unconnected UDP sockets, one pass over /proc, the
//     sysctls and counters, the status of each baton), then every check is
//     a pure function of those Facts and the Options (Evaluate), so tests
//     feed checks fake facts.
//   - Every finding names its check, a severity (info, warning, critical), a
//     subject, and says what it saw, why it matters (one sentence) and the
//     fix (a command or config line), in words an operator with only the
//     binary can act on: no source paths, no project history. Only warning
//     and critical findings make `baton doctor` exit 1.
//   - What could not be read (another user's /proc entries, a baton that does
//     not answer) is reported as a note, never silently taken as "all clear",
//     and never fails the run.
//   - Bounded reads of what other users name: a file at a path taken from
//     a process's command line (proxy configurations, a baton's --config)
//     or beside a control socket found that way is read only if it is a
//     regular file within a size bound (readfile_linux.go), checked on an
//     O_PATH descriptor before anything is opened; otherwise a note says
//     why it was skipped.
//   - Its cost does not grow with the host's connection count beyond one
//     readlink per open descriptor: sockets are listed by state in the
//     kernel (TCP LISTEN, UDP unconnected: not one entry per QUIC
//     connection), TIME_WAIT is counted by /proc/net/sockstat.
//
// Dependencies: cmd/baton → doctor → supervisor (status and history types),
// fdpass (sock_diag).
package doctor
