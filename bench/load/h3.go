package load

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	h3qlog "github.com/quic-go/quic-go/http3/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// tlsConfig is the TLS configuration of an HTTP/3 run: ALPN h3, the server
// name from Host, and the roots from CAFile (system roots without it).
func (c Config) tlsConfig() (*tls.Config, error) {
	name := c.Host
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	tc := &tls.Config{
		ServerName:         name,
		NextProtos:         []string{http3.NextProtoH3},
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: c.InsecureSkipVerify, // documented: loopback benches only
	}
	if c.CAFile != "" {
		b, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("ca file %s: no PEM certificate", c.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

// h3Dialer opens the QUIC connections of one HTTP/3 run.
type h3Dialer struct {
	addr    string
	tls     *tls.Config
	quic    *quic.Config
	timeout time.Duration
	// h3 only makes client connections (NewClientConn): its pool and its
	// retries are never used.
	h3 *http3.Transport
}

func newH3Dialer(cfg Config) (*h3Dialer, error) {
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	return &h3Dialer{
		addr: cfg.Addr,
		tls:  tc,
		quic: &quic.Config{
			HandshakeIdleTimeout: cfg.ConnectTimeout,
			MaxIncomingStreams:   -1, // the server opens no request streams
		},
		timeout: cfg.ConnectTimeout,
		h3:      &http3.Transport{DisableCompression: true},
	}, nil
}

// h3Conn is one QUIC connection and its HTTP/3 client, owned by a single
// worker. It has a UDP socket of its own, as a browser's connection has;
// close releases all three.
type h3Conn struct {
	udp    *net.UDPConn
	tr     *quic.Transport
	qc     *quic.Conn
	cc     *http3.ClientConn
	goaway *goawayTrace
	id     uint64
	start  time.Time // when its dial began
}

// goawayTrace keeps the stream ID of the last GOAWAY the server sent on one
// connection, read from quic-go's qlog events (http3 does not expose it).
// Every other event is ignored.
type goawayTrace struct{ id atomic.Int64 } // -1: none yet

func newGoawayTrace() *goawayTrace {
	t := &goawayTrace{}
	t.id.Store(-1)
	return t
}

func (t *goawayTrace) AddProducer() qlogwriter.Recorder { return t }
func (t *goawayTrace) Close() error                     { return nil }
func (t *goawayTrace) RecordEvent(e qlogwriter.Event) {
	if fp, ok := e.(h3qlog.FrameParsed); ok {
		if g, ok := fp.Frame.Frame.(h3qlog.GoAwayFrame); ok {
			t.id.Store(int64(g.StreamID))
		}
	}
}

// dial opens a QUIC connection and completes its handshake within the
// connect timeout.
func (d *h3Dialer) dial(ctx context.Context, id uint64, start time.Time) (*h3Conn, error) {
	raddr, err := net.ResolveUDPAddr("udp", d.addr)
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", localAddrFor(raddr))
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: udp}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	ga := newGoawayTrace()
	qconf := d.quic.Clone()
	qconf.Tracer = func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return ga }
	qc, err := tr.Dial(ctx, raddr, d.tls, qconf)
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return nil, err
	}
	return &h3Conn{udp: udp, tr: tr, qc: qc, cc: d.h3.NewClientConn(qc), goaway: ga, id: id, start: start}, nil
}

// localAddrFor binds the client socket to the loopback when the target is
// on it, and to any address otherwise.
func localAddrFor(raddr *net.UDPAddr) *net.UDPAddr {
	switch {
	case raddr.IP.To4() != nil && raddr.IP.IsLoopback():
		return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	case raddr.IP.IsLoopback():
		return &net.UDPAddr{IP: net.IPv6loopback}
	}
	return nil
}

// close closes the connection (H3_NO_ERROR), its transport and its socket.
func (c *h3Conn) close() {
	_ = c.qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
	_ = c.tr.Close()
	_ = c.udp.Close()
}

// closedReason names why the connection can no longer carry a request
// ("" while it can): the class of the error that closed it, or "goaway"
// when the client closed it after the server's GOAWAY.
func (c *h3Conn) closedReason() string {
	if c.qc.Context().Err() == nil {
		return ""
	}
	return closeReason(context.Cause(c.qc.Context()))
}

// h3Request is the request every HTTP/3 worker sends.
func (c Config) h3Request() (*http.Request, error) {
	req, err := http.NewRequest(http.MethodGet, "https://"+c.Addr+c.Path, nil)
	if err != nil {
		return nil, err
	}
	req.Host = c.Host
	req.Header.Set("User-Agent", "baton-load")
	return req, nil
}

// roundTrip sends one request on a new stream and reads the whole
// response. It never retries. The timeout covers opening the stream,
// sending the request and reading the full body. opened is false if no
// stream could be opened: nothing of the request was sent.
func (c *h3Conn) roundTrip(abort context.Context, req *http.Request, timeout time.Duration, genHeader string) (o outcome, opened bool) {
	if err := abort.Err(); err != nil {
		return outcome{class: aborted, end: time.Now()}, true
	}
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(abort, deadline)
	defer cancel()
	str, err := c.cc.OpenRequestStream(ctx)
	if err != nil {
		o := c.fail(abort, err)
		if why := c.closedReason(); o.class == BrokenResponse && (why == "" || why == "goaway") {
			// http3 opens no stream after the server's GOAWAY: the
			// server is shutting the connection down.
			o.class = ApplicationClose
		}
		return o, false
	}
	_ = str.SetDeadline(deadline)
	// Set after the deadline above, so a cancelled run never waits for it.
	stop := context.AfterFunc(abort, func() { _ = str.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := str.SendRequestHeader(req); err != nil {
		return c.unprocessed(str.StreamID(), c.fail(abort, err), err), true
	}
	_ = str.Close() // the request has no body: end the send side
	resp, err := str.ReadResponse()
	if err != nil {
		return c.unprocessed(str.StreamID(), c.fail(abort, err), err), true
	}
	if _, err := io.Copy(io.Discard, str); err != nil {
		o := c.fail(abort, err)
		o.status = resp.StatusCode
		return o, true
	}
	o = outcome{
		class:  statusClass(resp.StatusCode),
		status: resp.StatusCode,
		gen:    resp.Header.Get(genHeader),
		end:    time.Now(),
		keep:   true,
	}
	if o.class != OK {
		o.err = resp.Status
	}
	return o, true
}

// unprocessed marks a failure before any response as a request the
// server did not process (RFC 9114): its stream was reset with
// H3_REQUEST_REJECTED (section 8.1: "the request was not processed"), or
// the server's GOAWAY named a stream ID at or below the request's (section
// 5.2: such requests "were not processed"). Such a request may be sent
// again on a new connection, as quic-go's http3.Transport does for the
// first and browsers for both.
func (c *h3Conn) unprocessed(id quic.StreamID, o outcome, err error) outcome {
	if o.class == aborted {
		return o
	}
	var h3err *http3.Error
	switch {
	case errors.As(err, &h3err) && h3err.Remote && h3err.ErrorCode == http3.ErrCodeRequestRejected:
		o.unprocessed = "request_rejected"
	case c.goawayAtOrBelow(id):
		o.unprocessed = "above_goaway"
	}
	return o
}

// goawayAtOrBelow reports whether the server's GOAWAY names a stream ID at
// or below id. The GOAWAY travels on the control stream, which another
// goroutine reads: when the server closed the connection gracefully
// (H3_NO_ERROR, the close that ends a graceful shutdown, RFC 9114 section
// 5.2), that goroutine is given a moment to parse what came before the
// close.
func (c *h3Conn) goawayAtOrBelow(id quic.StreamID) bool {
	if g := c.goaway.id.Load(); g >= 0 {
		return int64(id) >= g
	}
	var app *quic.ApplicationError
	cause := context.Cause(c.qc.Context())
	if !errors.As(cause, &app) || !app.Remote || app.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeNoError) {
		return false
	}
	for range 20 {
		time.Sleep(time.Millisecond)
		if g := c.goaway.id.Load(); g >= 0 {
			return int64(id) >= g
		}
	}
	return false
}

func (c *h3Conn) fail(abort context.Context, err error) outcome {
	return outcome{class: h3Class(abort, c.qc, err), err: err.Error(), end: time.Now()}
}

// requestH3 performs one HTTP/3 request, dialing first if the worker has
// no connection. A kept connection that was closed (or shut down by a
// GOAWAY) while idle is not used: the request dials a new one, and the
// close is counted in closedIdle (the same when opening the request's
// stream finds the connection gone; the sample's ConnStart is then the new
// dial's start). That is not a retry: nothing of the request went out on
// the closed connection. ok is false if the request was aborted by
// cancellation.
func (w *worker) requestH3() (s Sample, ok bool) {
	s = Sample{Worker: w.id, Start: time.Now()}
	if w.h3 != nil {
		if why := w.h3.closedReason(); why != "" {
			w.noteClosedIdle(why)
		}
	}
	req, err := w.r.cfg.h3Request()
	if err != nil {
		return w.finish(s, outcome{class: ConnectError, err: err.Error(), end: time.Now()})
	}
	connStart := s.Start
	resent := false
	for {
		if w.h3 == nil {
			if o, dialed := w.dialH3(connStart); !dialed {
				s.ConnStart = connStart
				return w.finish(s, o)
			}
		} else {
			s.Reused = true
		}
		c := w.h3
		s.ConnID, s.ConnStart = c.id, c.start
		o, opened := c.roundTrip(w.r.abort, req, w.r.cfg.ReadTimeout, w.r.cfg.GenHeader)
		if !opened && s.Reused && o.class != aborted && o.class != ReadTimeout {
			// GOAWAY (or a close) between the check above and the
			// stream: the request was not sent.
			why := c.closedReason()
			if why == "" {
				why = "goaway"
			}
			w.noteClosedIdle(why)
			s.Reused, connStart = false, time.Now()
			continue
		}
		if o.unprocessed != "" && !resent {
			// The server did not process it: send it once more, on a
			// new connection.
			w.noteResent(o.unprocessed)
			w.drop()
			resent, s.Reused, connStart = true, false, time.Now()
			continue
		}
		if !o.keep || w.r.cfg.Mode == NewConn {
			w.drop()
		}
		return w.finish(s, o)
	}
}

// noteResent counts a request sent again because the server had not
// processed it.
func (w *worker) noteResent(why string) {
	if w.resent == nil {
		w.resent = make(map[string]int)
	}
	w.resent[why]++
}

// dialH3 gives the worker a new connection; on failure it returns the
// failed outcome and false.
func (w *worker) dialH3(start time.Time) (outcome, bool) {
	id := w.r.connIDs.Add(1)
	c, err := w.r.h3.dial(w.r.abort, id, start)
	if err != nil {
		return outcome{class: h3DialClass(w.r.abort, err), err: err.Error(), end: time.Now()}, false
	}
	w.h3 = c
	return outcome{}, true
}

// noteClosedIdle drops the worker's closed connection and counts why it
// closed.
func (w *worker) noteClosedIdle(why string) {
	w.drop()
	if w.closedIdle == nil {
		w.closedIdle = make(map[string]int)
	}
	w.closedIdle[why]++
}
