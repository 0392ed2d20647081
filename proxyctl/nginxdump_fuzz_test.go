package proxyctl

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzNginxDump feeds the nginx -T dump reader arbitrary text, and what
// reads it after a check: the listen, pid, reuseport and backlog checks,
// the listeners of a configuration, and the pid directive baton rewrites
// in its copy of the main file. Nothing may panic; the directives kept by
// name are those of the full parse with that name; every directive has a
// line within its file; a pid directive found is rewritten at
// the byte span of its argument. Seeds (testdata/fuzz/FuzzNginxDump): the
// output of `nginx -T` (stderr included, as baton reads it) for Debian's
// stock configuration and for examples/nginx/nginx.conf.
func FuzzNginxDump(f *testing.F) {
	f.Add("# configuration file /etc/nginx/nginx.conf:\nhttp { server { listen 127.0.0.1:8080 reuseport backlog=1024; } }\n")
	f.Add("nginx: [warn] x\n# configuration file /a:\npid 'run/x\\'.pid';\nmap $a $b { listen 1; }\n# configuration file /b:\nlisten [::1]:80 ipv6only=off;\n")
	f.Add("# configuration file /a:\nlog_format x \"a;{}\n#\" 'b' ; listen unix:/run/a.sock; listen 80 udp;\n")
	passed := []Listener{{Addr: "127.0.0.1:8080", Backlog: 511}}
	f.Fuzz(func(t *testing.T, dump string) {
		all, err := parseNginxDump(dump)
		kept, err2 := parseNginxDump(dump, "listen", "pid")
		if (err == nil) != (err2 == nil) {
			t.Fatalf("full parse: %v; by name: %v", err, err2)
		}
		if err != nil {
			return
		}
		var want []NginxDirective
		lines := map[string]int{}
		for _, f := range splitDump(dump) { // a name may come twice
			lines[f.name] = max(lines[f.name], strings.Count(f.text, "\n")+1)
		}
		for _, d := range all {
			if d.Line < 1 || d.Line > lines[d.File] {
				t.Fatalf("directive %+v: line outside its file (%d lines)", d, lines[d.File])
			}
			if d.Name == "listen" || d.Name == "pid" {
				want = append(want, d)
			}
		}
		if !reflect.DeepEqual(kept, want) {
			t.Fatalf("directives by name differ from the full parse's:\n%+v\n%+v", kept, want)
		}
		_ = checkNginxDump(dump, passed, "/run/baton/gen1/nginx.pid", "/etc/nginx/nginx.conf")
		_, _ = (&Nginx{}).ConfigListeners(GenSpec{}, dump)
		p, err := findNginxPid(dump)
		if err != nil || p.path == "" {
			return
		}
		toks, err := lexNginx(dump[p.off:p.end])
		if err != nil || len(toks) != 1 || toks[0].text != p.path {
			t.Fatalf("pid argument %q at [%d,%d) reads %q: %+v %v", p.path, p.off, p.end, dump[p.off:p.end], toks, err)
		}
	})
}
