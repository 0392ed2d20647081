package load

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"time"
)

// Mode selects how a worker uses TCP connections.
type Mode int

const (
	// KeepAlive reuses a connection until the server closes it or an error
	// happens.
	KeepAlive Mode = iota
	// NewConn dials a new connection for every request, sends
	// "Connection: close" and closes the connection after the response.
	NewConn
)

// String returns "keepalive" or "newconn".
func (m Mode) String() string {
	switch m {
	case KeepAlive:
		return "keepalive"
	case NewConn:
		return "newconn"
	default:
		return fmt.Sprintf("mode(%d)", int(m))
	}
}

// Proto selects the HTTP version a run speaks.
type Proto string

const (
	// HTTP1 is HTTP/1.1 over TCP, the default.
	HTTP1 Proto = ""
	// HTTP3 is HTTP/3 over QUIC (UDP), with quic-go's http3 client.
	HTTP3 Proto = "h3"
)

// String returns "http/1.1" or "h3".
func (p Proto) String() string {
	if p == HTTP1 {
		return "http/1.1"
	}
	return string(p)
}

// Limits and defaults applied by Run.
const (
	// MaxDuration is the longest allowed run. It is also the time limit of
	// a run bounded only by MaxRequests.
	MaxDuration = 10 * time.Minute
	// MaxWorkers is the largest allowed number of workers.
	MaxWorkers = 10000
	// DefaultConnectTimeout is used when Config.ConnectTimeout is zero.
	DefaultConnectTimeout = 2 * time.Second
	// DefaultReadTimeout is used when Config.ReadTimeout is zero.
	DefaultReadTimeout = 5 * time.Second
	// DefaultGenHeader is used when Config.GenHeader is empty.
	DefaultGenHeader = "X-Gen"
)

// ErrInvalidConfig is wrapped by every error returned by Config.Validate.
var ErrInvalidConfig = errors.New("invalid load config")

// Config describes a load run.
type Config struct {
	// Addr is the host:port to connect to.
	Addr string
	// Path is the request path; default "/".
	Path string
	// Host is the Host header; default Addr.
	Host string
	// Workers is the number of concurrent workers (each with at most one
	// connection); must be at least 1.
	Workers int
	// Mode selects keep-alive or one connection per request (for HTTP3:
	// one long-lived QUIC connection per worker, or a new QUIC connection
	// per request).
	Mode Mode
	// Proto is HTTP1 (default) or HTTP3.
	Proto Proto
	// CAFile, for HTTP3, is a PEM file of the certificates (a CA, or the
	// server's self-signed certificate) the client trusts instead of the
	// system roots.
	CAFile string
	// InsecureSkipVerify, for HTTP3, accepts any server certificate: for
	// benches on the loopback only.
	InsecureSkipVerify bool
	// Duration stops the run after this long (at most MaxDuration).
	Duration time.Duration
	// MaxRequests is the total number of requests across all workers;
	// 0 means unbounded, in which case Duration must be > 0.
	MaxRequests int
	// Rate optionally caps the total request rate in requests/s; 0 = none.
	Rate float64
	// ConnectTimeout bounds each dial (for HTTP3 the QUIC handshake);
	// default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ReadTimeout bounds each request from writing it to reading the whole
	// response body; default DefaultReadTimeout.
	ReadTimeout time.Duration
	// GenHeader is the response header naming the generation (config
	// version) that answered; default DefaultGenHeader.
	GenHeader string
}

// Validate reports whether c describes a valid, bounded run.
func (c Config) Validate() error {
	_, err := c.normalize()
	return err
}

// normalize validates c and returns a copy with defaults filled in.
func (c Config) normalize() (Config, error) {
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Host == "" {
		c.Host = c.Addr
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.GenHeader == "" {
		c.GenHeader = DefaultGenHeader
	}
	if err := c.check(); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return c, nil
}

func (c Config) check() error {
	if err := c.checkTarget(); err != nil {
		return err
	}
	if err := c.checkBounds(); err != nil {
		return err
	}
	if err := c.checkProto(); err != nil {
		return err
	}
	switch {
	case c.Mode != KeepAlive && c.Mode != NewConn:
		return fmt.Errorf("unknown mode %d", int(c.Mode))
	case math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate < 0:
		return fmt.Errorf("rate must be a finite number >= 0, got %v", c.Rate)
	case c.ConnectTimeout < 0:
		return fmt.Errorf("connect timeout must be >= 0, got %v", c.ConnectTimeout)
	case c.ReadTimeout < 0:
		return fmt.Errorf("read timeout must be >= 0, got %v", c.ReadTimeout)
	}
	return nil
}

func (c Config) checkTarget() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("addr %q: %w", c.Addr, err)
	}
	switch {
	case !strings.HasPrefix(c.Path, "/") || badHeaderValue(c.Path):
		return fmt.Errorf("path %q must start with / and contain no spaces or control characters", c.Path)
	case badHeaderValue(c.Host):
		return fmt.Errorf("host %q contains spaces or control characters", c.Host)
	case badHeaderValue(c.GenHeader) || strings.Contains(c.GenHeader, ":"):
		return fmt.Errorf("gen header %q is not a valid header name", c.GenHeader)
	}
	return nil
}

func (c Config) checkBounds() error {
	switch {
	case c.Workers < 1 || c.Workers > MaxWorkers:
		return fmt.Errorf("workers must be in [1, %d], got %d", MaxWorkers, c.Workers)
	case c.MaxRequests < 0:
		return fmt.Errorf("max requests must be >= 0, got %d", c.MaxRequests)
	case c.Duration < 0:
		return fmt.Errorf("duration must be >= 0, got %v", c.Duration)
	case c.Duration > MaxDuration:
		return fmt.Errorf("duration %v exceeds the hard limit of %v", c.Duration, MaxDuration)
	case c.Duration == 0 && c.MaxRequests == 0:
		return errors.New("unbounded run: set duration > 0 or max requests > 0")
	}
	return nil
}

func (c Config) checkProto() error {
	switch c.Proto {
	case HTTP1:
		if c.CAFile != "" || c.InsecureSkipVerify {
			return errors.New("ca file and insecure skip verify are for HTTP/3 only")
		}
		return nil
	case HTTP3:
		_, err := c.tlsConfig()
		return err
	}
	return fmt.Errorf("unknown proto %q (want \"\" for HTTP/1.1 or %q)", string(c.Proto), string(HTTP3))
}

// badHeaderValue reports whether s would break the request line or headers.
func badHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return true
		}
	}
	return false
}

// requestBytes renders the request every worker sends.
func (c Config) requestBytes() []byte {
	var b strings.Builder
	b.WriteString("GET " + c.Path + " HTTP/1.1\r\n")
	b.WriteString("Host: " + c.Host + "\r\n")
	b.WriteString("User-Agent: baton-load\r\n")
	if c.Mode == NewConn {
		b.WriteString("Connection: close\r\n")
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// paceInterval is the minimum spacing between request starts across all
// workers, or 0 when Rate is not set.
func (c Config) paceInterval() time.Duration {
	if c.Rate == 0 {
		return 0
	}
	iv := float64(time.Second) / c.Rate
	if iv > float64(MaxDuration) {
		return MaxDuration
	}
	return time.Duration(iv)
}
