// Package load is a small HTTP/1.1 load generator for the end-to-end tests of
// the reload supervisor (HAProxy and nginx behind baton) and for the bench
// (bench/cmd/storm, which also offers it to users as `storm run`).
//
// The tests use it to prove that a reload drops zero requests, so it measures
// every request individually and records a Sample for it: when it started,
// when the TCP connection it used was dialed, whether that connection had
// already served a request, the latency, the HTTP status, the generation
// header (X-Gen by default) naming the configuration version that answered,
// and a precise failure Class: refused, connect timeout, other connect error,
// reset or clean EOF before any response byte, read timeout, broken (partial
// or malformed) response, 5xx, or other non-2xx status.
//
// # No retries
//
// The client is written by hand on top of net.Dialer and http.ReadResponse.
// net/http.Transport is deliberately not used: it silently retries idempotent
// requests that fail on a reused keep-alive connection, which would hide
// exactly the failures a reload can cause. Here every request is attempted
// exactly once; a request that fails on a reused connection is counted as a
// failure and the connection is discarded.
//
// # Connection modes
//
// In KeepAlive mode each worker reuses its connection until the server asks
// to close it or an error happens. In NewConn mode every request dials a new
// connection, sends "Connection: close" and closes the connection afterwards.
//
// # Bounds
//
// A run is always bounded: by MaxRequests, by Duration (at most MaxDuration,
// which is also the implicit limit when only MaxRequests is set), and by the
// caller's context. Cancelling the context aborts in-flight requests; those
// are not failures of the server and are only counted in Result.Aborted.
// When Duration elapses no new request is started, but requests already in
// flight are allowed to finish (bounded by the connect and read timeouts).
//
// Stale and OldConnAnswers check the samples of a run against the reloads
// acknowledged by the supervisor to find answers served by an old
// configuration generation.
package load
