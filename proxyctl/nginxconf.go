package proxyctl

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/batonproxy/baton/fdpass"
)

// NginxDirective is one nginx directive: its file and line, name and
// arguments.
type NginxDirective struct {
	File string
	Line int
	Name string
	Args []string
}

func (d NginxDirective) where() string { return fmt.Sprintf("%s:%d", d.File, d.Line) }

const dumpFileHeader = "# configuration file "

// opaqueBlocks hold key/value tables, not directives: a `listen` or `pid`
// key inside a map is not a directive.
var opaqueBlocks = map[string]bool{"map": true, "types": true, "geo": true, "split_clients": true, "charset_map": true}

// parseNginxDump reads the output of `nginx -T`: every configuration file
// nginx read, each after a "# configuration file PATH:" line. It returns
// the directives named in names (all of them when names is empty) with
// their file and line (block directives too; what baton checks does not
// depend on nesting: pid is only valid at top level, listen only in server
// blocks), skipping the contents of table blocks (map, types, geo,
// split_clients, charset_map). Time and memory are linear in the dump's
// size.
func parseNginxDump(dump string, names ...string) ([]NginxDirective, error) {
	var keep func(string) bool
	if len(names) > 0 {
		keep = func(name string) bool { return slices.Contains(names, name) }
	}
	var out []NginxDirective
	for _, f := range splitDump(dump) {
		ds, err := parseNginxText(f.name, f.text, keep)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

type dumpFile struct{ name, text string }

// splitDump cuts the dump at its file headers; text before the first header
// (nginx's own messages) is dropped. Each file's text is a substring of the
// dump: one pass, nothing copied.
func splitDump(dump string) []dumpFile {
	var out []dumpFile
	start := 0 // where the current file's text begins
	for off := 0; off < len(dump); {
		next := len(dump)
		if i := strings.IndexByte(dump[off:], '\n'); i >= 0 {
			next = off + i + 1
		}
		if f, ok := strings.CutPrefix(dump[off:next], dumpFileHeader); ok {
			if len(out) > 0 {
				out[len(out)-1].text = dump[start:off]
			}
			out = append(out, dumpFile{name: strings.TrimSuffix(strings.TrimRight(f, "\r\n"), ":")})
			start = next
		}
		off = next
	}
	if len(out) > 0 {
		out[len(out)-1].text = dump[start:]
	}
	return out
}

// ParseNginxFile reads one nginx file as nginx tokenizes it (quotes may
// span lines, '#' starts a comment only at the start of a word) and returns
// its directives, block directives included, skipping the contents of table
// blocks (map, types, geo, split_clients, charset_map), whose keys are not
// directives.
func ParseNginxFile(file, text string) ([]NginxDirective, error) {
	return parseNginxText(file, text, nil)
}

// parseNginxText is ParseNginxFile returning only the directives whose name
// keep accepts (every one when keep is nil).
func parseNginxText(file, text string, keep func(string) bool) ([]NginxDirective, error) {
	var out []NginxDirective
	var stack []string
	var cur NginxDirective
	var args []string // cur's arguments so far (reused)
	have := false     // a directive's name was read
	opaque := 0       // depth inside table blocks
	err := scanNginx(text, func(t ntoken) {
		switch t.punct {
		case 0:
			if !have {
				cur, args, have = NginxDirective{File: file, Line: t.line, Name: t.text}, args[:0], true
			} else {
				args = append(args, t.text)
			}
			return
		case '}':
			if len(stack) > 0 {
				if opaqueBlocks[stack[len(stack)-1]] {
					opaque--
				}
				stack = stack[:len(stack)-1]
			}
			have = false
			return
		}
		if !have {
			return // a stray ';' or '{'
		}
		if opaque == 0 && (keep == nil || keep(cur.Name)) {
			cur.Args = slices.Clone(args)
			out = append(out, cur)
		}
		if t.punct == '{' {
			stack = append(stack, cur.Name)
			if opaqueBlocks[cur.Name] {
				opaque++
			}
		}
		have = false
	})
	if err != nil {
		return nil, fmt.Errorf("%s:%w", file, err)
	}
	return out, nil
}

// ntoken is a word, or one of the punctuation bytes ';', '{', '}'. off
// and end are the byte span of its source text (quotes included).
type ntoken struct {
	text     string
	punct    byte
	line     int
	off, end int
}

// lexNginx returns the tokens of a file (see scanNginx).
func lexNginx(text string) ([]ntoken, error) {
	var out []ntoken
	err := scanNginx(text, func(t ntoken) { out = append(out, t) })
	return out, err
}

// scanNginx splits a file into tokens the way nginx does, in one pass,
// calling emit for each: whitespace and ';' '{' '}' separate words; a '#'
// at the start of a token starts a comment to the end of the line (inside a
// word it is a character); a quote at the start of a token runs to the
// matching quote, across lines, with backslash escapes. A word without
// quotes is a substring of text (nothing copied). Errors carry the line
// ("12: unterminated quote").
func scanNginx(text string, emit func(ntoken)) error {
	var w strings.Builder // a quoted token's text
	line, start, off := 1, 0, 0
	inWord, quoted := false, false
	flushAt := func(end int) {
		if !inWord {
			return
		}
		t := ntoken{text: text[off:end], line: start, off: off, end: end}
		if quoted {
			t.text = w.String()
			w.Reset()
		}
		emit(t)
		inWord, quoted = false, false
	}
	for i := 0; i < len(text); i++ {
		c := text[i]
		switch {
		case c == '\n':
			flushAt(i)
			line++
		case c == ' ' || c == '\t' || c == '\r':
			flushAt(i)
		case c == ';' || c == '{' || c == '}':
			flushAt(i)
			emit(ntoken{punct: c, line: line, off: i, end: i + 1})
		case c == '#' && !inWord:
			for i < len(text) && text[i] != '\n' {
				i++
			}
			i-- // let the newline count the line
		case (c == '"' || c == '\'') && !inWord:
			inWord, quoted, start, off = true, true, line, i
			j := i + 1
			for ; j < len(text) && text[j] != c; j++ {
				if text[j] == '\\' && j+1 < len(text) {
					j++
				}
				if text[j] == '\n' {
					line++
				}
				w.WriteByte(text[j])
			}
			if j >= len(text) {
				return fmt.Errorf("%d: unterminated quote", start)
			}
			i = j
		default:
			if !inWord {
				inWord, start, off = true, line, i
			} else if quoted {
				w.WriteByte(c)
			}
		}
	}
	flushAt(len(text))
	return nil
}

// nginxListen is what baton needs to know of one `listen` directive.
type nginxListen struct {
	d         NginxDirective
	key       string // same form as fdpass.Spec.Key
	reuseport bool
	quic      bool // HTTP/3: a UDP socket
	backlog   int  // 0: not set
}

// parseListen reads a listen directive's address and parameters. Ports
// alone mean 0.0.0.0; "*" means 0.0.0.0; no port means 80.
func parseListen(d NginxDirective) (nginxListen, error) {
	l := nginxListen{d: d}
	if len(d.Args) == 0 {
		return l, fmt.Errorf("%s: listen without an address", d.where())
	}
	addr := d.Args[0]
	switch {
	case strings.HasPrefix(addr, "unix:"):
		l.key = "unix:" + strings.TrimPrefix(addr, "unix:")
	default:
		ap, err := parseNginxAddr(addr)
		if err != nil {
			return l, fmt.Errorf("%s: listen %s: %w", d.where(), addr, err)
		}
		l.key = "stream:" + ap.String()
	}
	for _, p := range d.Args[1:] {
		switch {
		case p == "reuseport":
			l.reuseport = true
		case p == "udp" && strings.HasPrefix(l.key, "stream:"): // stream module
			l.key = "dgram:" + strings.TrimPrefix(l.key, "stream:")
		case p == "quic" && strings.HasPrefix(l.key, "stream:"): // HTTP/3
			l.key, l.quic = "dgram:"+strings.TrimPrefix(l.key, "stream:"), true
		case strings.HasPrefix(p, "backlog="):
			n, err := strconv.Atoi(strings.TrimPrefix(p, "backlog="))
			if err != nil {
				return l, fmt.Errorf("%s: listen %s: bad %s", d.where(), addr, p)
			}
			l.backlog = n
		}
	}
	return l, nil
}

// nginxListenSpec is the socket a listen directive asks for, as baton
// binds it: ipv6only defaults to on for IPv6 (as in nginx), backlog= is the
// socket's backlog; `quic` (HTTP/3) is a UDP socket. The stream module's
// udp is refused, and so are names instead of addresses.
func nginxListenSpec(d NginxDirective) (fdpass.Spec, error) {
	l, err := parseListen(d)
	if err != nil {
		return fdpass.Spec{}, err
	}
	if strings.HasPrefix(l.key, "dgram:") && !l.quic {
		return fdpass.Spec{}, fmt.Errorf("%s: listen %s udp: UDP listeners are not supported yet", d.where(), d.Args[0])
	}
	if path, ok := strings.CutPrefix(l.key, "unix:"); ok {
		if !strings.HasPrefix(path, "/") || len(path) > 107 {
			return fdpass.Spec{}, fmt.Errorf("%s: listen %s: baton needs an absolute unix path of at most 107 bytes", d.where(), d.Args[0])
		}
		return fdpass.Spec{Scheme: fdpass.Unix, Addr: path}.Named(), nil
	}
	if l.quic {
		return nginxInetSpec(d, fdpass.UDP4, fdpass.UDP6, strings.TrimPrefix(l.key, "dgram:"), 0), nil
	}
	return nginxInetSpec(d, fdpass.TCP4, fdpass.TCP6, strings.TrimPrefix(l.key, "stream:"), l.backlog), nil
}

// nginxInetSpec is the spec of an inet listen address: v4 or v6 as the
// address is, ipv6only unless the directive says ipv6only=off.
func nginxInetSpec(d NginxDirective, v4, v6 fdpass.Scheme, addr string, backlog int) fdpass.Spec {
	ap := netip.MustParseAddrPort(addr)
	sp := fdpass.Spec{Scheme: v4, Addr: ap.String(), Backlog: backlog}
	if ap.Addr().Is6() {
		sp.Scheme, sp.V6Only = v6, true
		for _, p := range d.Args[1:] {
			if p == "ipv6only=off" {
				sp.V6Only = false
			}
		}
	}
	return sp.Named()
}

func parseNginxAddr(s string) (netip.AddrPort, error) {
	if n, err := strconv.Atoi(s); err == nil { // "8080"
		return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(n)), nil
	}
	host, port := s, "80"
	if strings.HasPrefix(s, "[") {
		i := strings.Index(s, "]")
		if i < 0 {
			return netip.AddrPort{}, errors.New("unclosed [")
		}
		host = s[1:i]
		if rest := s[i+1:]; rest != "" {
			port = strings.TrimPrefix(rest, ":")
		}
	} else if i := strings.LastIndex(s, ":"); i >= 0 {
		host, port = s[:i], s[i+1:]
	}
	if host == "*" {
		host = "0.0.0.0"
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("baton needs an IP address here, not %q", host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return netip.AddrPort{}, fmt.Errorf("bad port %q", port)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// nginxDefaultBacklog is what nginx assumes of an inherited socket
// (NGX_LISTEN_BACKLOG on Linux); it calls listen() again when its configured
// backlog differs.
const nginxDefaultBacklog = 511

// checkNginxDump refuses configurations that would break baton's one socket
// per address or its pid files: a `pid` directive other than the
// generation's own (ownPid, which baton writes into its copy of the main
// file mainConf; "" when the generation runs no copy): generations would
// share one pid file, which an exiting old master deletes; `reuseport` on a
// passed address (nginx adds a second socket of its own); a `backlog=`
// other than baton's (nginx re-listens the shared socket, for every holder);
// listen addresses baton does not hand over (each generation would bind
// its own); a QUIC listener with more than one worker; and `quic_bpf on`
// (nginx would attach its own steering program to the reuseport group of
// baton's UDP sockets, in place of baton's).
func checkNginxDump(dump string, listeners []Listener, ownPid, mainConf string) error {
	ds, err := parseNginxDump(dump, "pid", "listen", "worker_processes", "quic_bpf")
	if err != nil {
		return fmt.Errorf("read nginx -T output: %w", err)
	}
	passed := map[string]Listener{}
	for _, l := range listeners {
		passed[l.Spec.Key()] = l
	}
	var errs []error
	var workers, quic *NginxDirective
	for i, d := range ds {
		switch d.Name {
		case "pid":
			errs = append(errs, checkPid(d, ownPid, mainConf))
		case "listen":
			errs = append(errs, checkListen(d, passed))
			if l, err := parseListen(d); err == nil && l.quic && quic == nil {
				quic = &ds[i]
			}
		case "worker_processes":
			workers = &ds[i]
		case "quic_bpf":
			if len(d.Args) == 1 && strings.EqualFold(d.Args[0], "on") {
				errs = append(errs, fmt.Errorf("%s: quic_bpf %s: nginx would attach its own eBPF program to the reuseport group of baton's UDP sockets, replacing the one with which baton steers each QUIC connection to its generation; remove quic_bpf (baton does that steering)", d.where(), d.Args[0]))
			}
		}
	}
	errs = append(errs, checkQUICWorkers(workers, quic))
	return joinFirst(errs)
}

// checkQUICWorkers refuses a QUIC listener with more than one worker:
// without reuseport (refused) nginx's workers share their generation's
// one UDP socket, and a packet read by another worker than its
// connection's is lost. worker_processes defaults to 1.
func checkQUICWorkers(workers, quic *NginxDirective) error {
	if quic == nil || workers == nil {
		return nil
	}
	if len(workers.Args) == 1 {
		if n, err := strconv.Atoi(workers.Args[0]); err == nil && n == 1 {
			return nil
		}
	}
	return fmt.Errorf("%s: worker_processes %s with listen %s quic (%s): nginx's workers would share the generation's one UDP socket, and a QUIC packet read by another worker than its connection's is lost; use worker_processes 1 with QUIC (sockets per worker are not supported yet)", workers.where(), strings.Join(workers.Args, " "), quic.Args[0], quic.where())
}

// maxRefusals is how many refusals of one configuration an error lists.
const maxRefusals = 20

// joinFirst joins the non-nil errors of errs, the first maxRefusals of
// them and a count of the rest: a configuration of 20,000 server blocks
// that repeat one refused listen gets a readable error, not megabytes.
func joinFirst(errs []error) error {
	var out []error
	more := 0
	for _, err := range errs {
		switch {
		case err == nil:
		case len(out) < maxRefusals:
			out = append(out, err)
		default:
			more++
		}
	}
	if more > 0 {
		out = append(out, fmt.Errorf("... and %d more like these", more))
	}
	return errors.Join(out...)
}

// checkPid accepts the generation's own pid directive only.
func checkPid(d NginxDirective, ownPid, mainConf string) error {
	switch {
	case len(d.Args) == 1 && d.Args[0] == ownPid:
		return nil
	case mainConf != "":
		return fmt.Errorf("%s: pid directive outside the main config file: baton gives each generation its own pid file by rewriting the pid directive of %s only (an exiting old master deletes a shared one); move it there", d.where(), mainConf)
	}
	return fmt.Errorf("%s: remove the pid directive: baton could not copy the main config file, so it cannot give each generation its own pid file (an exiting old master deletes a shared one)", d.where())
}

func checkListen(d NginxDirective, passed map[string]Listener) error {
	l, err := parseListen(d)
	if err != nil {
		return err
	}
	p, ok := passed[l.key]
	switch {
	case !ok:
		return fmt.Errorf("%s: listen %s is not handed over by baton: add it to baton's --listen, or nginx binds a socket of its own in every generation", d.where(), d.Args[0])
	case l.reuseport && l.quic:
		return fmt.Errorf("%s: listen %s quic reuseport: nginx would bind a socket of its own for every further worker into the reuseport group of baton's UDP sockets (the kernel admits any socket of baton's user), and baton steers only the sockets it created; remove reuseport", d.where(), d.Args[0])
	case l.reuseport:
		return fmt.Errorf("%s: listen %s reuseport: nginx would open a second socket beside baton's (a reuseport group resets queued connections when a generation exits); remove reuseport", d.where(), d.Args[0])
	case l.backlog != 0 && l.quic:
		return fmt.Errorf("%s: listen %s quic backlog=%d: a UDP socket has no listen backlog, and nginx would call listen() on it if the value changed; remove backlog= from the quic listen", d.where(), d.Args[0], l.backlog)
	case l.backlog != 0 && l.backlog != nginxDefaultBacklog && l.backlog != p.Backlog:
		return fmt.Errorf("%s: listen %s backlog=%d: nginx would call listen() again on baton's socket (backlog %d) for every generation; remove it or give baton the same backlog (?backlog=%d)", d.where(), d.Args[0], l.backlog, p.Backlog, l.backlog)
	}
	return nil
}
