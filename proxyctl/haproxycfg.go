package proxyctl

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/batonproxy/baton/fdpass"
)

// haproxyConfigFile is one configuration file HAProxy reads: Path as the
// user wrote it (for messages), Text as this generation reads it.
type haproxyConfigFile struct {
	Path string
	Text string
}

// haproxySectionKeywords start a section of an HAProxy configuration.
var haproxySectionKeywords = map[string]bool{
	"global": true, "defaults": true, "frontend": true, "backend": true, "listen": true,
	"resolvers": true, "peers": true, "userlist": true, "program": true, "http-errors": true,
	"ring": true, "cache": true, "mailers": true, "fcgi-app": true, "crt-store": true,
	"log-forward": true, "traces": true,
}

// haproxyBindSections are the sections whose bind lines are listeners.
var haproxyBindSections = map[string]bool{"frontend": true, "listen": true, "peers": true, "log-forward": true}

// maxPortRange bounds the listeners one port range may declare.
const maxPortRange = 1024

// ConfigListeners implements ListenerSource: the bind lines of the -f files
// (this generation's copies), in the order HAProxy reads them. Lines inside
// .if blocks count as present.
func (h *HAProxy) ConfigListeners(g GenSpec, _ string) ([]ConfigListener, error) {
	files, err := h.readConfigs(g)
	if err != nil {
		return nil, err
	}
	return parseHAProxyBinds(files, envMap(g.Env), v6OnlyDefault())
}

// ListenersFromCheck implements ListenerSource: the bind lines are read
// before haproxy -c runs.
func (h *HAProxy) ListenersFromCheck() bool { return false }

// readConfigs reads the -f files in command-line order (a directory: its
// *.cfg files in lexical order, as HAProxy does).
func (h *HAProxy) readConfigs(g GenSpec) ([]haproxyConfigFile, error) {
	idx := make([]int, 0, len(h.cfgs))
	for i := range h.cfgs {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	var out []haproxyConfigFile
	for _, i := range idx {
		orig := h.cfgs[i]
		paths := []string{orig}
		if st, err := os.Stat(orig); err == nil && st.IsDir() {
			ents, err := os.ReadDir(orig)
			if err != nil {
				return nil, fmt.Errorf("read config directory: %w", err)
			}
			paths = nil
			for _, e := range ents {
				if !e.IsDir() && strings.HasSuffix(e.Name(), ".cfg") {
					paths = append(paths, filepath.Join(orig, e.Name()))
				}
			}
		}
		for _, p := range paths {
			data, err := os.ReadFile(g.ConfigPath(p))
			if err != nil {
				return nil, fmt.Errorf("read config: %w", err)
			}
			out = append(out, haproxyConfigFile{Path: p, Text: string(data)})
		}
	}
	return out, nil
}

// envMap turns KEY=VALUE entries into a map.
func envMap(env []string) map[string]string {
	m := map[string]string{}
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

// v6OnlyDefault is the system's IPV6_V6ONLY default (net.ipv6.bindv6only),
// which HAProxy applies to an IPv6 bind line without v4v6 or v6only.
func v6OnlyDefault() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/bindv6only")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// parseHAProxyBinds returns the listeners the bind lines of files declare,
// each address of a line (a comma-separated list, a port range) its own.
// Every address that parses is returned; the error joins every refusal.
func parseHAProxyBinds(files []haproxyConfigFile, env map[string]string, v6only bool) ([]ConfigListener, error) {
	var out []ConfigListener
	var errs []error
	unixPrefix := ""
	for _, f := range files {
		section := ""
		depth := 0 // inside .if blocks
		text := f.Text
		for i := 0; text != ""; i++ {
			raw, rest, _ := strings.Cut(text, "\n")
			text = rest
			if irrelevantLine(raw) {
				continue
			}
			words, unset := haproxyLine(raw, env)
			if len(words) > 0 && strings.HasPrefix(words[0], ".") {
				switch words[0] {
				case ".if":
					depth++
				case ".endif":
					depth = max(depth-1, 0)
				}
				continue
			}
			if len(words) == 0 {
				continue
			}
			where := func() string { return f.Path + ":" + strconv.Itoa(i+1) }
			switch {
			case haproxySectionKeywords[words[0]]:
				section = words[0]
			case section == "global" && len(words) >= 3 && words[0] == "unix-bind" && words[1] == "prefix":
				unixPrefix = words[2]
			case haproxyBindSections[section] && words[0] == "dgram-bind":
				errs = append(errs, fmt.Errorf("%w: %s: dgram-bind: UDP listeners are not supported yet", ErrListenerRefused, where()))
			case haproxyBindSections[section] && words[0] == "bind":
				if len(unset) > 0 {
					errs = append(errs, fmt.Errorf("%w: %s: bind: environment variable %s is not set in baton's environment", ErrListenerRefused, where(), strings.Join(unset, ", ")))
					continue
				}
				cls, err := parseBindLine(words[1:], where(), unixPrefix, v6only)
				for i := range cls {
					cls[i].Conditional = depth > 0
				}
				out = append(out, cls...)
				if err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	out, err := dedupe(out, true)
	return out, errors.Join(append(errs, err)...)
}

// irrelevantLine reports whether a line certainly declares nothing the bind
// parser reads: its first word, plain (no quote, escape, variable or
// comment in it), is none of the keywords it looks at. Most lines of a big
// config (servers, options) are skipped without being split into words:
// a 10,000-backend config is read in a few milliseconds instead of 10–20.
func irrelevantLine(line string) bool {
	i := 0
	for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
		i++
	}
	j := i
	for j < len(line) && line[j] != ' ' && line[j] != '\t' && line[j] != '\r' {
		if strings.IndexByte("\"'\\$#", line[j]) >= 0 {
			return false
		}
		j++
	}
	if i == j {
		return true // blank
	}
	w := line[i:j]
	return w[0] != '.' && !haproxySectionKeywords[w] && w != "bind" && w != "dgram-bind" && w != "unix-bind"
}

// bindOptions are the bind-line options that shape baton's socket.
type bindOptions struct {
	v6only, v4v6, freebind bool
	backlog                int
	mode                   os.FileMode
}

// parseBindLine reads `bind ADDR[,ADDR...] [OPTIONS]` (args without the
// keyword). Options that change how HAProxy matches a passed socket and that
// a Spec cannot express are refused.
func parseBindLine(args []string, where, unixPrefix string, v6only bool) ([]ConfigListener, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("%w: %s: bind without an address", ErrListenerRefused, where)
	}
	var o bindOptions
	var errs []error
	refuse := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: bind %s: %s", ErrListenerRefused, where, args[0], fmt.Sprintf(format, a...)))
	}
	opts := args[1:]
	for i := 0; i < len(opts); i++ {
		val := ""
		if i+1 < len(opts) {
			val = opts[i+1]
		}
		switch opts[i] {
		case "v6only":
			o.v6only = true
		case "v4v6":
			o.v4v6 = true
		case "freebind":
			o.freebind = true
		case "transparent":
			refuse("option transparent (IP_TRANSPARENT) is not supported yet: HAProxy would not take baton's socket for this line")
		case "interface", "namespace":
			refuse("option %s is not supported yet: HAProxy would not take baton's socket for this line", opts[i])
			i++
		case "backlog":
			n, err := strconv.Atoi(val)
			if err != nil || n < 1 || n > 1<<20 {
				refuse("backlog %q: want 1 to %d", val, 1<<20)
			}
			o.backlog = n
			i++
		case "mode":
			m, err := strconv.ParseUint(val, 8, 32)
			if err != nil || m > 0o777 {
				refuse("mode %q: want octal up to 0777", val)
			}
			o.mode = os.FileMode(m)
			i++
		case "user", "uid", "group", "gid":
			refuse("option %s is not supported yet: baton binds the unix socket and cannot set its owner", opts[i])
			i++
		}
	}
	var out []ConfigListener
	for _, a := range strings.Split(args[0], ",") {
		specs, err := bindAddrSpecs(a, o, unixPrefix, v6only)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: bind %s: %w", ErrListenerRefused, where, a, err))
			continue
		}
		for _, sp := range specs {
			out = append(out, ConfigListener{Spec: sp.Named(), Where: where})
		}
	}
	return out, errors.Join(errs...)
}

// bindAddrSpecs turns one bind address into specs: one per port of a range.
func bindAddrSpecs(a string, o bindOptions, unixPrefix string, v6only bool) ([]fdpass.Spec, error) {
	family, quic, rest, err := bindPrefix(a)
	if err != nil {
		return nil, err
	}
	if family == "unix" {
		path := rest
		if !strings.HasPrefix(path, "/") {
			path = unixPrefix + path
		}
		if !strings.HasPrefix(path, "/") {
			return nil, errors.New("a unix socket needs an absolute path (or unix-bind prefix)")
		}
		if len(path) > 107 {
			return nil, fmt.Errorf("unix path is %d bytes, the limit is 107", len(path))
		}
		return []fdpass.Spec{{Scheme: fdpass.Unix, Addr: path, Mode: o.mode}}, nil
	}
	host, ports, err := splitBindHostPort(rest)
	if err != nil {
		return nil, err
	}
	ip, err := bindHost(host, family)
	if err != nil {
		return nil, err
	}
	lo, hi, err := parsePortRange(ports)
	if err != nil {
		return nil, err
	}
	scheme, backlog := fdpass.TCP4, o.backlog
	switch {
	case quic && ip.Is6():
		scheme, backlog = fdpass.UDP6, 0
	case quic:
		scheme, backlog = fdpass.UDP4, 0
	case ip.Is6():
		scheme = fdpass.TCP6
	}
	var out []fdpass.Spec
	for p := lo; p <= hi; p++ {
		sp := fdpass.Spec{Scheme: scheme, Addr: netip.AddrPortFrom(ip, uint16(p)).String(), Backlog: backlog, FreeBind: o.freebind}
		if ip.Is6() {
			sp.V6Only = o.v6only || (v6only && !o.v4v6)
		}
		out = append(out, sp)
	}
	return out, nil
}

// bindPrefix reads an address's protocol prefix (ipv4@ and the like): the
// family ("4", "6", "" for either, "unix"), whether it is a QUIC (UDP)
// listener, and the rest.
func bindPrefix(a string) (family string, quic bool, rest string, err error) {
	if strings.HasPrefix(a, "/") {
		return "unix", false, a, nil
	}
	p, rest, ok := strings.Cut(a, "@")
	if !ok || strings.ContainsAny(p, ":/[") {
		return "", false, a, nil
	}
	switch p {
	case "ipv4", "tcp4":
		return "4", false, rest, nil
	case "ipv6", "tcp6":
		return "6", false, rest, nil
	case "tcp":
		return "", false, rest, nil
	case "unix", "uxst":
		return "unix", false, rest, nil
	case "quic4":
		return "4", true, rest, nil
	case "quic6":
		return "6", true, rest, nil
	case "udp", "udp4", "udp6", "uxdg":
		return "", false, "", fmt.Errorf("%s@: UDP listeners other than QUIC (quic4@, quic6@) are not supported yet", p)
	case "fd", "sockpair":
		return "", false, "", fmt.Errorf("%s@: HAProxy takes this socket from elsewhere, baton cannot hand it over", p)
	case "abns":
		return "", false, "", errors.New("abns@: abstract unix sockets are not supported: use a unix socket path")
	}
	return "", false, "", fmt.Errorf("%s@: unknown or unsupported address prefix", p)
}

// splitBindHostPort splits HOST:PORT, [IPV6]:PORT or an IPv6 address whose
// last colon starts the port; "" and "*" are any address.
func splitBindHostPort(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		i := strings.Index(s, "]")
		if i < 0 || !strings.HasPrefix(s[i+1:], ":") {
			return "", "", errors.New("want [IPV6]:PORT")
		}
		return s[1:i], s[i+2:], nil
	}
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", "", errors.New("no port: want HOST:PORT")
	}
	return s[:i], s[i+1:], nil
}

// bindHost reads the host part for family ("4", "6" or either).
func bindHost(host, family string) (netip.Addr, error) {
	if host == "" || host == "*" {
		if family == "6" {
			return netip.IPv6Unspecified(), nil
		}
		return netip.IPv4Unspecified(), nil
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return ip, fmt.Errorf("%q is not an IP address: baton binds the socket itself and does not resolve names; write the address", host)
	case ip.Zone() != "":
		return ip, fmt.Errorf("%q: scoped IPv6 addresses are not supported", host)
	case family == "4" && !ip.Is4():
		return ip, fmt.Errorf("ipv4@ needs an IPv4 address, got %s", host)
	case family == "6" && !ip.Is6():
		return ip, fmt.Errorf("ipv6@ needs an IPv6 address, got %s", host)
	}
	return ip, nil
}

// parsePortRange reads PORT or LOW-HIGH.
func parsePortRange(s string) (lo, hi int, err error) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(a)
	hi, err2 := lo, error(nil)
	if isRange {
		hi, err2 = strconv.Atoi(b)
	}
	switch {
	case err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi:
		return 0, 0, fmt.Errorf("port %q: want 1-65535 or a range LOW-HIGH", s)
	case hi-lo >= maxPortRange:
		return 0, 0, fmt.Errorf("port range %q has %d ports, baton binds at most %d per range", s, hi-lo+1, maxPortRange)
	}
	return lo, hi, nil
}

// haproxyLine splits one configuration line into words as HAProxy does:
// blanks separate words, a '#' outside quotes starts a comment, a backslash
// escapes the next byte, single quotes keep everything, double quotes and
// unquoted text expand $VAR, ${VAR} and ${VAR-default} from env. It returns
// the words and the names of variables env lacks.
func haproxyLine(line string, env map[string]string) (words, unset []string) {
	var w strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote == 0 && (c == ' ' || c == '\t' || c == '\r'):
			if inWord {
				words, inWord = append(words, w.String()), false
				w.Reset()
			}
			continue
		case quote == 0 && c == '#':
			i = len(line)
			continue
		case c == '\\' && quote != '\'' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
		case (c == '"' || c == '\'') && (quote == 0 || quote == c):
			if quote == 0 {
				quote = c
			} else {
				quote = 0
			}
		case c == '$' && quote != '\'':
			val, n, missing := expandVar(line[i:], env)
			if n == 0 {
				w.WriteByte(c)
				break
			}
			if missing != "" {
				unset = append(unset, missing)
			}
			w.WriteString(val)
			i += n - 1
		default:
			w.WriteByte(c)
		}
		inWord = true
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, unset
}

// expandVar reads $NAME, ${NAME} or ${NAME-default} at the start of s: its
// value, the bytes read (0: not a variable) and the name when it is unset
// and has no default.
func expandVar(s string, env map[string]string) (val string, n int, missing string) {
	isName := func(c byte, first bool) bool {
		return c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || !first && c >= '0' && c <= '9'
	}
	if strings.HasPrefix(s, "${") {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", 0, ""
		}
		name, def, hasDef := strings.Cut(s[2:end], "-")
		if v, ok := env[name]; ok {
			return v, end + 1, ""
		}
		if hasDef {
			return def, end + 1, ""
		}
		return "", end + 1, name
	}
	j := 1
	for j < len(s) && isName(s[j], j == 1) {
		j++
	}
	if j == 1 {
		return "", 0, ""
	}
	if v, ok := env[s[1:j]]; ok {
		return v, j, ""
	}
	return "", j, s[1:j]
}
