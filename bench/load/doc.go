// Package load is a small HTTP/1.1 and HTTP/3 load generator for the
// end-to-end tests of the reload supervisor (HAProxy and nginx behind baton)
// and for the bench (bench/cmd/storm, which also offers it to users as
// `storm run`).
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
// # HTTP/3
//
// With Proto HTTP3 the workers speak HTTP/3 over QUIC with quic-go's http3
// client, used below its Transport (which, like net/http's, retries a
// request that failed on a connection it deems unusable): each worker dials
// its own QUIC connection (on a UDP socket of its own, bound to the
// loopback when the target is there), opens one request stream per request
// and reads the response. KeepAlive means one long-lived QUIC connection
// per worker, NewConn a new QUIC connection (full handshake) per request,
// closed with H3_NO_ERROR after the response. ConnectTimeout bounds the
// handshake, ReadTimeout the request on its stream.
//
// TLS: the client trusts the certificates in CAFile (a CA, or the server's
// self-signed certificate) or, without it, the system roots;
// InsecureSkipVerify accepts any certificate and is meant for benches on
// the loopback only.
//
// Failures go into the same classes where they fit (5xx, other statuses,
// read timeout, a malformed response) and into HTTP/3's own: handshake
// timeout or failure, stateless reset, idle timeout, stream reset,
// application close and transport error. A long-lived connection that the
// server closed, or shut down with a GOAWAY, while it was idle is not used
// for the next request: that request dials a new connection and the close
// is counted in Result.ClosedIdle by cause. This is not a retry — nothing of
// the request was sent on the closed connection. A request already sent
// when its connection fails is a failure, except one the server says it
// did not process (RFC 9114): a stream reset with H3_REQUEST_REJECTED, or
// a stream ID at or above the one its GOAWAY named. That request is sent
// once more on a new connection, as quic-go's own http3.Transport does for
// the first and browsers do for both, and counted in Result.Resent.
//
// Stale and OldConnAnswers check the samples of a run against the reloads
// acknowledged by the supervisor to find answers served by an old
// configuration generation.
package load
