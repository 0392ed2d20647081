package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// Class is the outcome of one request.
type Class uint8

// Request outcomes. Everything but OK is a failure.
const (
	// OK is a complete 2xx response.
	OK Class = iota
	// Refused means the dial failed with ECONNREFUSED.
	Refused
	// ConnectTimeout means the dial timed out.
	ConnectTimeout
	// ConnectError is any other dial error.
	ConnectError
	// ResetBeforeResponse means ECONNRESET or EPIPE while writing the
	// request or before any response byte was read.
	ResetBeforeResponse
	// EOFBeforeResponse means the server closed the connection cleanly
	// before sending any response byte.
	EOFBeforeResponse
	// ReadTimeout means the request was not written and its response fully
	// read within Config.ReadTimeout.
	ReadTimeout
	// BrokenResponse is a malformed response, or a reset/EOF after some
	// bytes of the response (in the head or mid-body).
	BrokenResponse
	// Status5xx is a complete response with a 5xx status.
	Status5xx
	// StatusOther is a complete response with a non-2xx, non-5xx status.
	StatusOther

	// The classes below are HTTP/3's (a dial is a QUIC handshake; a
	// request is a stream).

	// HandshakeTimeout means the QUIC handshake did not complete within
	// Config.ConnectTimeout (also what a UDP port nobody listens on
	// gives: the client's socket gets no ICMP error).
	HandshakeTimeout
	// HandshakeFailure means the QUIC or TLS handshake failed: a
	// CONNECTION_CLOSE, a TLS alert, a certificate not trusted, no
	// common QUIC version.
	HandshakeFailure
	// StatelessReset means a stateless reset ended the connection: the
	// server no longer knew it (quic.StatelessResetError).
	StatelessReset
	// IdleTimeout means the connection timed out for lack of packets
	// from the server (quic.IdleTimeoutError).
	IdleTimeout
	// StreamReset means the server reset the request's stream (or asked
	// the client to stop sending) while the connection stayed open
	// (quic.StreamError).
	StreamReset
	// ApplicationClose means the server closed the connection with an
	// application error (CONNECTION_CLOSE with an HTTP/3 code, e.g.
	// H3_NO_ERROR on shutdown) while the request was in flight
	// (quic.ApplicationError, or the transport error APPLICATION_ERROR
	// during the handshake), or had sent a GOAWAY before the request's
	// stream could be opened on a new connection.
	ApplicationClose
	// TransportClose means the connection was closed with a QUIC
	// transport error (quic.TransportError).
	TransportClose

	numClasses
	// aborted marks a request interrupted by cancellation of the run's
	// context. It never appears in a Sample.
	aborted Class = 255
)

// String returns a short snake_case name, e.g. "reset_before_response".
func (c Class) String() string {
	switch c {
	case OK:
		return "ok"
	case Refused:
		return "refused"
	case ConnectTimeout:
		return "connect_timeout"
	case ConnectError:
		return "connect_error"
	case ResetBeforeResponse:
		return "reset_before_response"
	case EOFBeforeResponse:
		return "eof_before_response"
	case ReadTimeout:
		return "read_timeout"
	case BrokenResponse:
		return "broken_response"
	case Status5xx:
		return "status_5xx"
	case StatusOther:
		return "status_other"
	case HandshakeTimeout:
		return "handshake_timeout"
	case HandshakeFailure:
		return "handshake_failure"
	case StatelessReset:
		return "stateless_reset"
	case IdleTimeout:
		return "idle_timeout"
	case StreamReset:
		return "stream_reset"
	case ApplicationClose:
		return "application_close"
	case TransportClose:
		return "transport_error"
	case aborted:
		return "aborted"
	default:
		return fmt.Sprintf("class(%d)", uint8(c))
	}
}

// Classes returns every class in declaration order, OK first.
func Classes() []Class {
	cs := make([]Class, 0, numClasses)
	for c := OK; c < numClasses; c++ {
		cs = append(cs, c)
	}
	return cs
}

// cancelled reports whether err is the consequence of ctx being done.
func cancelled(ctx context.Context, err error) bool {
	return ctx.Err() != nil && (isTimeout(err) || errors.Is(err, context.Canceled))
}

// dialClass classifies an error returned by the dialer.
func dialClass(ctx context.Context, err error) Class {
	switch {
	case cancelled(ctx, err):
		return aborted
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	case isTimeout(err):
		return ConnectTimeout
	default:
		return ConnectError
	}
}

// ioClass classifies an error from writing a request or reading its
// response. gotBytes reports whether any byte of the response was read.
func ioClass(ctx context.Context, err error, gotBytes bool) Class {
	switch {
	case cancelled(ctx, err):
		return aborted
	case isTimeout(err):
		return ReadTimeout
	case gotBytes:
		return BrokenResponse
	case isReset(err):
		return ResetBeforeResponse
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return EOFBeforeResponse
	default:
		return BrokenResponse
	}
}

// statusClass classifies a complete response by its status code.
func statusClass(code int) Class {
	switch {
	case code >= 200 && code < 300:
		return OK
	case code >= 500 && code < 600:
		return Status5xx
	default:
		return StatusOther
	}
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNABORTED)
}
