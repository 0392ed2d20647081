package load

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// countingReader counts the bytes read from the connection so that a failure
// can be attributed to "before any response byte" or "mid-response".
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// conn is one client connection, owned by a single worker.
type conn struct {
	nc    net.Conn
	cr    countingReader
	br    *bufio.Reader
	id    uint64
	start time.Time // when its dial began
	// stopAbort unregisters the hook that unblocks I/O when the run's
	// context is cancelled.
	stopAbort func() bool
}

// outcome is the result of one dial or round trip.
type outcome struct {
	class  Class
	status int
	gen    string
	err    string
	end    time.Time
	keep   bool // the connection may serve another request
	// unprocessed (HTTP/3) says why the server did not process the
	// request ("" if it may have): it can be sent again.
	unprocessed string
}

// dial opens a connection. start is recorded as the connection's start.
func dial(ctx context.Context, d *net.Dialer, addr string, id uint64, start time.Time) (*conn, error) {
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, id: id, start: start}
	c.cr.r = nc
	c.br = bufio.NewReaderSize(&c.cr, 4096)
	c.stopAbort = context.AfterFunc(ctx, func() {
		_ = nc.SetDeadline(time.Unix(1, 0))
	})
	return c, nil
}

func (c *conn) close() {
	c.stopAbort()
	_ = c.nc.Close()
}

// roundTrip sends req once and reads the whole response. It never retries.
// The deadline covers writing the request and reading the full body.
func (c *conn) roundTrip(ctx context.Context, req []byte, timeout time.Duration, genHeader string) outcome {
	if err := c.nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return c.fail(ctx, err, false)
	}
	// The abort hook may have run before SetDeadline overwrote its
	// deadline; re-check so a cancelled run never waits for the timeout.
	if err := ctx.Err(); err != nil {
		return outcome{class: aborted, end: time.Now()}
	}
	c.cr.n = 0
	leftover := c.br.Buffered() > 0
	if _, err := c.nc.Write(req); err != nil {
		return c.fail(ctx, err, leftover || c.cr.n > 0)
	}
	resp, err := c.readResponse()
	if err != nil {
		return c.fail(ctx, err, leftover || c.cr.n > 0)
	}
	// The body is read to EOF here; closing it would only try to drain
	// it again, so the connection itself is what gets closed on failure.
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		o := c.fail(ctx, err, true)
		o.status = resp.StatusCode
		return o
	}
	o := outcome{
		class:  statusClass(resp.StatusCode),
		status: resp.StatusCode,
		gen:    resp.Header.Get(genHeader),
		end:    time.Now(),
		keep:   !resp.Close,
	}
	if o.class != OK {
		o.err = resp.Status
	}
	return o
}

// max1xx bounds the informational responses skipped before the final one.
const max1xx = 8

// readResponse reads the final response head, skipping informational (1xx
// other than 101) responses as net/http does.
func (c *conn) readResponse() (*http.Response, error) {
	for range max1xx {
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
	}
	return nil, fmt.Errorf("more than %d informational responses", max1xx)
}

func (c *conn) fail(ctx context.Context, err error, gotBytes bool) outcome {
	return outcome{class: ioClass(ctx, err, gotBytes), err: err.Error(), end: time.Now()}
}
