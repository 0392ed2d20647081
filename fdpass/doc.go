// Package fdpass is mechanism only: it creates listening sockets from listener
// specs, moves file descriptors between processes with SCM_RIGHTS, serves
// HAProxy's _getsocks protocol, and builds the environment conventions
// (LISTEN_FDS, NGINX) that name inherited sockets. It holds no policy: who gets
// which socket, and when, is decided by the supervisor.
//
// Invariants:
//
//   - Sockets are created without SO_REUSEPORT, so a second bind of the same
//     address fails loudly instead of forming a reuseport group. A UDP
//     socket gets SO_REUSEADDR only once it is bound (HAProxy binds its
//     per-connection QUIC sockets beside it), so its own bind still fails
//     on an address another socket holds.
//   - Every descriptor this package creates or receives is close-on-exec.
//     Passing one to a child is the caller's deliberate act.
//   - Sockets are held as raw descriptors, never as *os.File or net.Listener:
//     both register the descriptor in the Go netpoller, which would wake
//     baton for every incoming connection, and (*os.File).Fd switches the
//     shared open file description to blocking mode.
//   - SCM_RIGHTS messages carry at most MaxBatch descriptors; full batches go
//     first, because HAProxy's receiver cannot take a batch larger than its
//     first one.
//   - A receiver closes every descriptor it got on every error path.
//
// Ownership is stated on each function: "borrowed" descriptors stay owned by
// the caller and must stay open for the duration of the call.
package fdpass
