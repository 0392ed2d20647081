package load

import (
	"context"
	"errors"
	"syscall"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// quicClass classifies the QUIC errors that name their cause. Local
// application and stream errors are the client's reaction to a malformed
// response, hence BrokenResponse.
func quicClass(err error) (Class, bool) {
	var (
		reset   *quic.StatelessResetError
		idle    *quic.IdleTimeoutError
		hs      *quic.HandshakeTimeoutError
		version *quic.VersionNegotiationError
		app     *quic.ApplicationError
		trans   *quic.TransportError
		stream  *quic.StreamError
		h3      *http3.Error
	)
	switch {
	case errors.As(err, &reset):
		return StatelessReset, true
	case errors.As(err, &idle):
		return IdleTimeout, true
	case errors.As(err, &hs):
		return HandshakeTimeout, true
	case errors.As(err, &version):
		return HandshakeFailure, true
	case errors.As(err, &app):
		return remoteOrBroken(app.Remote, ApplicationClose), true
	case errors.As(err, &trans) && trans.ErrorCode == quic.ApplicationErrorErrorCode:
		// An application close before the handshake completed goes on
		// the wire as the transport error APPLICATION_ERROR (RFC 9000,
		// section 10.2.3).
		return remoteOrBroken(trans.Remote, ApplicationClose), true
	case errors.As(err, &trans) && trans.ErrorCode == quic.ConnectionRefused && trans.Remote:
		// The server refused the connection (CONNECTION_REFUSED, RFC 9000
		// section 20.1: it is not accepting new connections, e.g. while
		// it closes): QUIC's ECONNREFUSED.
		return Refused, true
	case errors.As(err, &trans):
		return TransportClose, true
	case errors.As(err, &stream):
		return remoteOrBroken(stream.Remote, StreamReset), true
	case errors.As(err, &h3):
		// http3 turns a stream's error into an *http3.Error; the
		// connection's own close is looked at first (h3Class).
		return remoteOrBroken(h3.Remote, StreamReset), true
	}
	return 0, false
}

func remoteOrBroken(remote bool, c Class) Class {
	if remote {
		return c
	}
	return BrokenResponse
}

// h3DialClass classifies an error from dialing a QUIC connection.
func h3DialClass(abort context.Context, err error) Class {
	switch {
	case cancelled(abort, err):
		return aborted
	case errors.Is(err, context.DeadlineExceeded):
		return HandshakeTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return Refused
	}
	if c, ok := quicClass(err); ok {
		switch c {
		case StatelessReset, HandshakeTimeout:
			return c
		case IdleTimeout:
			return HandshakeTimeout
		}
		return HandshakeFailure
	}
	return ConnectError
}

// h3Class classifies an error from a request on an established
// connection: the connection's close, if it is closed (by the server or the
// network), names the cause better than the stream's error.
func h3Class(abort context.Context, qc *quic.Conn, err error) Class {
	if cancelled(abort, err) {
		return aborted
	}
	// The client's own close after a GOAWAY says nothing of the request.
	if cause := context.Cause(qc.Context()); cause != nil && closeReason(cause) != "goaway" {
		if c, ok := quicClass(cause); ok {
			return c
		}
	}
	if c, ok := quicClass(err); ok {
		return c
	}
	if isTimeout(err) {
		return ReadTimeout
	}
	return BrokenResponse
}

// closeReason names the error that closed a connection between requests:
// "goaway" when the client closed it itself with H3_NO_ERROR after the
// server's GOAWAY, else its class name ("other" if it has none).
func closeReason(err error) string {
	var app *quic.ApplicationError
	if errors.As(err, &app) && !app.Remote && app.ErrorCode == quic.ApplicationErrorCode(http3.ErrCodeNoError) {
		return "goaway"
	}
	if c, ok := quicClass(err); ok {
		return c.String()
	}
	return "other"
}
