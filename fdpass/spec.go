package fdpass

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// ErrBadSpec is wrapped by every listener spec parse error.
var ErrBadSpec = errors.New("bad listener spec")

// Scheme is the transport of a listener.
type Scheme string

// Schemes a listener spec may use.
const (
	TCP  Scheme = "tcp"
	TCP4 Scheme = "tcp4"
	TCP6 Scheme = "tcp6"
	UDP  Scheme = "udp"
	UDP4 Scheme = "udp4"
	UDP6 Scheme = "udp6"
	Unix Scheme = "unix"
)

// Spec describes one listening socket: [NAME=]SCHEME://ADDRESS[?OPTIONS].
//
// Examples: tcp://127.0.0.1:8080, web=tcp6://[::1]:443?backlog=1024,
// unix:///run/app.sock?mode=0660, udp://127.0.0.1:5353.
type Spec struct {
	// Name identifies the listener (LISTEN_FDNAMES, logs, status). Defaults
	// to a name derived from the address.
	Name   string
	Scheme Scheme
	// Addr is the address without options: an IP literal (or empty host)
	// and a port for inet schemes, an absolute path for unix.
	Addr string
	// Backlog is the listen(2) backlog; 0 means the host's somaxconn.
	Backlog int
	// Mode is the file mode of a unix socket path; 0 means 0666 minus umask.
	Mode os.FileMode
	// V6Only sets IPV6_V6ONLY on tcp6/udp6 sockets.
	V6Only bool
	// FreeBind sets IP_FREEBIND (bind an address not yet configured).
	FreeBind bool
	// DeferAccept sets TCP_DEFER_ACCEPT, in seconds.
	DeferAccept int
}

// validName reports whether name is 1-64 of [A-Za-z0-9_.-]. (A regexp
// with {1,64} compiled at init cost every baton command, `baton reload`
// included, most of a millisecond of start-up.)
func validName(name string) bool {
	if len(name) < 1 || len(name) > 64 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// ParseSpec parses a --listen value.
func ParseSpec(s string) (Spec, error) {
	var sp Spec
	raw := s
	if i, j := strings.Index(s, "="), strings.Index(s, "://"); i >= 0 && (j < 0 || i < j) {
		sp.Name, s = s[:i], s[i+1:]
		if !validName(sp.Name) {
			return Spec{}, fmt.Errorf("%w %q: name %q must be 1-64 of [A-Za-z0-9_.-]", ErrBadSpec, raw, sp.Name)
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || !strings.Contains(s, "://") {
		return Spec{}, fmt.Errorf("%w %q: want [NAME=]SCHEME://ADDRESS[?OPTIONS], e.g. tcp://127.0.0.1:8080", ErrBadSpec, raw)
	}
	sp.Scheme = Scheme(u.Scheme)
	switch sp.Scheme {
	case TCP, TCP4, TCP6, UDP, UDP4, UDP6:
		sp.Addr, err = parseInetAddr(sp.Scheme, u)
	case Unix:
		sp.Addr, err = parseUnixAddr(u)
	default:
		err = fmt.Errorf("unknown scheme %q (want tcp, tcp4, tcp6, udp, udp4, udp6 or unix)", u.Scheme)
	}
	if err == nil {
		var q url.Values
		if q, err = url.ParseQuery(u.RawQuery); err != nil {
			err = fmt.Errorf("options %q: %w", u.RawQuery, err)
		} else {
			err = sp.parseOptions(q)
		}
	}
	if err != nil {
		return Spec{}, fmt.Errorf("%w %q: %w", ErrBadSpec, raw, err)
	}
	if sp.Name == "" {
		sp.Name = defaultName(sp)
	}
	return sp, nil
}

func parseInetAddr(scheme Scheme, u *url.URL) (string, error) {
	if u.Path != "" && u.Path != "/" || u.User != nil || u.Fragment != "" {
		return "", errors.New("an inet address is HOST:PORT with nothing after it but ?OPTIONS")
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return "", fmt.Errorf("address %q: want HOST:PORT (IPv6 in brackets)", u.Host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("port %q: want 0-65535", port)
	}
	if host == "" {
		if scheme == TCP6 || scheme == UDP6 {
			host = "::"
		} else {
			host = "0.0.0.0"
		}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.Zone() != "" {
		return "", fmt.Errorf("host %q: want an IP address (names are not resolved; proxies match sockets by address)", host)
	}
	switch {
	case (scheme == TCP4 || scheme == UDP4) && !ip.Is4():
		return "", fmt.Errorf("%s needs an IPv4 address, got %s", scheme, host)
	case (scheme == TCP6 || scheme == UDP6) && !ip.Is6():
		return "", fmt.Errorf("%s needs an IPv6 address, got %s", scheme, host)
	}
	return netip.AddrPortFrom(ip, uint16(p)).String(), nil
}

func parseUnixAddr(u *url.URL) (string, error) {
	if u.Host != "" || !strings.HasPrefix(u.Path, "/") {
		return "", errors.New("unix needs an absolute path: unix:///path/to.sock")
	}
	if u.Fragment != "" || strings.ContainsRune(u.Path, 0) {
		return "", errors.New("a unix path may not contain '#' or NUL (escape '#' as %23)")
	}
	if len(u.Path) > 107 {
		return "", fmt.Errorf("unix path is %d bytes, the limit is 107", len(u.Path))
	}
	return u.Path, nil
}

func (sp *Spec) parseOptions(q url.Values) error {
	for key, vals := range q {
		if len(vals) != 1 {
			return fmt.Errorf("option %s given %d times", key, len(vals))
		}
		if err := sp.setOption(key, vals[0]); err != nil {
			return err
		}
	}
	return nil
}

func (sp *Spec) setOption(key, val string) error {
	inet, stream := sp.Scheme != Unix, sp.IsStream()
	var err error
	switch {
	case key == "backlog" && stream:
		sp.Backlog, err = atoiRange(val, 1, 1<<20)
	case key == "mode" && !inet:
		var m uint64
		m, err = strconv.ParseUint(val, 8, 32)
		if err != nil || m > 0o777 {
			err = fmt.Errorf("octal mode up to 0777")
		}
		sp.Mode = os.FileMode(m)
	case key == "v6only" && (sp.Scheme == TCP6 || sp.Scheme == UDP6):
		sp.V6Only, err = parseBool(val)
	case key == "freebind" && inet:
		sp.FreeBind, err = parseBool(val)
	case key == "defer_accept" && inet && stream:
		sp.DeferAccept, err = atoiRange(val, 0, 3600)
	default:
		return fmt.Errorf("option %q does not apply to %s listeners (known: backlog, mode, v6only, freebind, defer_accept)", key, sp.Scheme)
	}
	if err != nil {
		return fmt.Errorf("option %s=%q: %w", key, val, err)
	}
	return nil
}

func atoiRange(s string, lo, hi int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("want an integer from %d to %d", lo, hi)
	}
	return n, nil
}

func parseBool(s string) (bool, error) {
	switch s {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, errors.New("want 1 or 0")
}

// defaultName derives a valid name (validName) from the address: other bytes
// become '_', and a long unix path keeps its end.
func defaultName(sp Spec) string {
	b := []byte(string(sp.Scheme) + "_" + strings.NewReplacer("[", "", "]", "").Replace(sp.Addr))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			b[i] = '_'
		}
	}
	name := strings.Trim(string(b), "_")
	if len(name) > 64 {
		name = strings.TrimLeft(name[len(name)-64:], "_")
	}
	if name == "" {
		name = string(sp.Scheme)
	}
	return name
}

// Named returns sp with Name set to the name derived from its address when
// it has none (as ParseSpec does).
func (sp Spec) Named() Spec {
	if sp.Name == "" {
		sp.Name = defaultName(sp)
	}
	return sp
}

// IsStream reports whether the listener is a stream (listening) socket.
func (sp Spec) IsStream() bool {
	return sp.Scheme != UDP && sp.Scheme != UDP4 && sp.Scheme != UDP6
}

// Key identifies the bound address: two specs with the same Key cannot both
// be bound. Options are not part of it.
func (sp Spec) Key() string {
	proto := "stream"
	if !sp.IsStream() {
		proto = "dgram"
	}
	if sp.Scheme == Unix {
		return "unix:" + sp.Addr
	}
	return proto + ":" + sp.Addr
}

// String renders the spec in the form ParseSpec reads.
func (sp Spec) String() string {
	var opts []string
	if sp.Backlog != 0 {
		opts = append(opts, "backlog="+strconv.Itoa(sp.Backlog))
	}
	if sp.Mode != 0 {
		opts = append(opts, fmt.Sprintf("mode=%04o", uint32(sp.Mode)))
	}
	if sp.V6Only {
		opts = append(opts, "v6only=1")
	}
	if sp.FreeBind {
		opts = append(opts, "freebind=1")
	}
	if sp.DeferAccept != 0 {
		opts = append(opts, "defer_accept="+strconv.Itoa(sp.DeferAccept))
	}
	addr := sp.Addr
	if sp.Scheme == Unix {
		addr = (&url.URL{Path: sp.Addr}).EscapedPath()
		addr = strings.NewReplacer("?", "%3F", "#", "%23").Replace(addr)
	}
	s := sp.Name + "=" + string(sp.Scheme) + "://" + addr
	if len(opts) > 0 {
		s += "?" + strings.Join(opts, "&")
	}
	return s
}
