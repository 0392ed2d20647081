package proxyctl

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// directive is one nginx directive from an `nginx -T` dump.
type directive struct {
	File string
	Line int
	Name string
	Args []string
}

func (d directive) where() string { return fmt.Sprintf("%s:%d", d.File, d.Line) }

const dumpFileHeader = "# configuration file "

// parseNginxDump tokenizes the output of `nginx -T`: every configuration file
// nginx read, each after a "# configuration file PATH:" line. It returns
// every directive (block directives included, without their blocks'
// structure: pid is only valid at top level and listen only in server
// blocks, so nesting does not matter for what baton checks).
func parseNginxDump(dump string) ([]directive, error) {
	var out []directive
	var file string
	var cur *directive
	lines := strings.Split(dump, "\n")
	for i, line := range lines {
		if f, ok := strings.CutPrefix(line, dumpFileHeader); ok {
			file, cur = strings.TrimSuffix(f, ":"), nil
			continue
		}
		if file == "" {
			continue // nginx's own messages before the dump
		}
		words, ends, err := splitNginxLine(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", file, i+1, err)
		}
		for j, w := range words {
			if cur == nil {
				cur = &directive{File: file, Line: lineInFile(lines, i), Name: w}
			} else {
				cur.Args = append(cur.Args, w)
			}
			if ends[j] {
				out = append(out, *cur)
				cur = nil
			}
		}
	}
	return out, nil
}

// lineInFile is the line number of lines[i] within its file in the dump.
func lineInFile(lines []string, i int) int {
	n := 0
	for j := i; j >= 0 && !strings.HasPrefix(lines[j], dumpFileHeader); j-- {
		n++
	}
	return n
}

// splitNginxLine splits one line into words; ends[i] reports that word i
// ended a directive (it was followed by ';', '{' or '}'). Quotes and
// backslash escapes are honoured; '#' starts a comment outside quotes.
func splitNginxLine(line string) (words []string, ends []bool, err error) {
	var w strings.Builder
	inWord, quote := false, byte(0)
	flush := func(end bool) {
		if inWord {
			words, ends = append(words, w.String()), append(ends, end)
			w.Reset()
			inWord = false
		} else if end && len(ends) > 0 {
			ends[len(ends)-1] = true
		}
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == '\\' && i+1 < len(line):
			i++
			w.WriteByte(line[i])
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			w.WriteByte(c)
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == '#':
			flush(false)
			return words, ends, nil
		case c == ';' || c == '{' || c == '}':
			flush(true)
		case c == ' ' || c == '\t' || c == '\r':
			flush(false)
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, nil, errors.New("unterminated quote")
	}
	flush(false)
	return words, ends, nil
}

// nginxListen is what baton needs to know of one `listen` directive.
type nginxListen struct {
	d         directive
	key       string // same form as fdpass.Spec.Key
	reuseport bool
	backlog   int // 0: not set
}

// parseListen reads a listen directive's address and parameters. Ports
// alone mean 0.0.0.0; "*" means 0.0.0.0; no port means 80.
func parseListen(d directive) (nginxListen, error) {
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
// per address: a `pid` directive (generations would share one pid file, which
// an exiting old master deletes), `reuseport` on a passed address (nginx adds
// a second socket of its own), a `backlog=` other than baton's (nginx
// re-listens the shared socket, for every holder), and listen addresses baton
// does not hand over (each generation would bind its own).
func checkNginxDump(dump string, listeners []Listener) error {
	ds, err := parseNginxDump(dump)
	if err != nil {
		return fmt.Errorf("read nginx -T output: %w", err)
	}
	passed := map[string]Listener{}
	for _, l := range listeners {
		passed[l.Spec.Key()] = l
	}
	var errs []error
	for _, d := range ds {
		switch d.Name {
		case "pid":
			errs = append(errs, fmt.Errorf("%s: remove the pid directive: baton gives each generation its own pid file (an exiting old master deletes a shared one)", d.where()))
		case "listen":
			errs = append(errs, checkListen(d, passed))
		}
	}
	return errors.Join(errs...)
}

func checkListen(d directive, passed map[string]Listener) error {
	l, err := parseListen(d)
	if err != nil {
		return err
	}
	p, ok := passed[l.key]
	switch {
	case !ok:
		return fmt.Errorf("%s: listen %s is not handed over by baton: add it to baton's --listen, or nginx binds a socket of its own in every generation", d.where(), d.Args[0])
	case l.reuseport:
		return fmt.Errorf("%s: listen %s reuseport: nginx would open a second socket beside baton's (a reuseport group resets queued connections when a generation exits); remove reuseport", d.where(), d.Args[0])
	case l.backlog != 0 && l.backlog != nginxDefaultBacklog && l.backlog != p.Backlog:
		return fmt.Errorf("%s: listen %s backlog=%d: nginx would call listen() again on baton's socket (backlog %d) for every generation; remove it or give baton the same backlog (?backlog=%d)", d.where(), d.Args[0], l.backlog, p.Backlog, l.backlog)
	}
	return nil
}
