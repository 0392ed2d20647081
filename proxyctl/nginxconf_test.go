package proxyctl

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
)

func TestSplitNginxLine(t *testing.T) {
	cases := []struct {
		name  string
		line  string
		words []string
		ends  []bool
	}{
		{"empty", "", nil, nil},
		{"blank", " \t \r", nil, nil},
		{"simple", "listen 127.0.0.1:8080;", []string{"listen", "127.0.0.1:8080"}, []bool{false, true}},
		{"no-space-before-semicolon", "worker_processes 2 ;", []string{"worker_processes", "2"}, []bool{false, true}},
		{"block-open", "server {", []string{"server"}, []bool{true}},
		{"block-close", "}", nil, nil},
		{"block-close-after-word", "location / { return 200 x; }", []string{"location", "/", "return", "200", "x"}, []bool{false, true, false, false, true}},
		{"two-directives", "a 1; b 2;", []string{"a", "1", "b", "2"}, []bool{false, true, false, true}},
		{"unfinished", "listen", []string{"listen"}, []bool{false}},
		{"tabs", "\tlisten\t8080\t;", []string{"listen", "8080"}, []bool{false, true}},
		{"comment-line", "# listen 80;", nil, nil},
		{"trailing-comment", "listen 80; # reuseport;", []string{"listen", "80"}, []bool{false, true}},
		{"comment-after-space-ends-words", "listen 80 # backlog=1;", []string{"listen", "80"}, []bool{false, false}},
		{"double-quotes", `return 200 "a;b # not a comment { }";`, []string{"return", "200", "a;b # not a comment { }"}, []bool{false, false, true}},
		{"single-quotes", `add_header X 'v "1"';`, []string{"add_header", "X", `v "1"`}, []bool{false, false, true}},
		{"escaped-quote", `return 200 'x\'y';`, []string{"return", "200", "x'y"}, []bool{false, false, true}},
		{"escaped-backslash", `return 200 "a\\b";`, []string{"return", "200", `a\b`}, []bool{false, false, true}},
		{"empty-quoted", `set $x "";`, []string{"set", "$x", ""}, []bool{false, false, true}},
		{"quoted-directive-name", `"listen" 80;`, []string{"listen", "80"}, []bool{false, true}},
		{"crlf", "listen 80;\r", []string{"listen", "80"}, []bool{false, true}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			words, ends, err := splitNginxLine(c.line)
			if err != nil {
				t.Fatalf("splitNginxLine(%q): %v", c.line, err)
			}
			if !reflect.DeepEqual(words, c.words) || !reflect.DeepEqual(ends, c.ends) {
				t.Errorf("splitNginxLine(%q) = %q %v, want %q %v", c.line, words, ends, c.words, c.ends)
			}
		})
	}
	for _, bad := range []string{`return 200 "abc;`, `return 200 'abc;`, `return 200 "abc\"`} {
		if _, _, err := splitNginxLine(bad); err == nil {
			t.Errorf("splitNginxLine(%q): no error for an unterminated quote", bad)
		}
	}
}

// TestSplitNginxLineHashInsideWord: nginx starts a comment with '#' only at
// the start of a token; inside a word it is an ordinary character (URLs with
// a fragment, colours). Read as a comment, it would swallow the ';' and glue
// the next directive (a listen line, say) onto this one as arguments.
func TestSplitNginxLineHashInsideWord(t *testing.T) {
	words, ends, err := splitNginxLine("return 301 https://example.com/page#section;")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"return", "301", "https://example.com/page#section"}
	if !reflect.DeepEqual(words, want) || !reflect.DeepEqual(ends, []bool{false, false, true}) {
		t.Errorf("got %q %v, want %q ending the directive", words, ends, want)
	}
}

// dumpOf renders files the way `nginx -T` dumps them.
func dumpOf(files ...[2]string) string {
	var b strings.Builder
	b.WriteString("nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n")
	b.WriteString("nginx: configuration file /etc/nginx/nginx.conf test is successful\n")
	for _, f := range files {
		fmt.Fprintf(&b, "# configuration file %s:\n%s\n", f[0], f[1])
	}
	return b.String()
}

func TestParseNginxDumpHandWritten(t *testing.T) {
	main := `# a comment line
worker_processes 2;
error_log stderr warn;

events {
    worker_connections 1024;
}
http {
    include /etc/nginx/sites/*.conf;
    log_format main '$remote_addr "$request" # not a comment;'
                    ' $status';
    server {
        listen
            127.0.0.1:8080
            backlog=511;   # trailing ; comment {
        location / { return 200 "hi;there"; }
    }
}`
	site := `server {
	listen [::1]:8443 reuseport; listen unix:/run/app.sock;
	server_name "a b";
}`
	dump := dumpOf([2]string{"/etc/nginx/nginx.conf", main}, [2]string{"/etc/nginx/sites/app.conf", site})
	ds, err := parseNginxDump(dump)
	if err != nil {
		t.Fatal(err)
	}
	type at struct {
		file string
		line int
		name string
		args string
	}
	var got []at
	for _, d := range ds {
		got = append(got, at{filepath.Base(d.File), d.Line, d.Name, strings.Join(d.Args, "|")})
	}
	want := []at{
		{"nginx.conf", 2, "worker_processes", "2"},
		{"nginx.conf", 3, "error_log", "stderr|warn"},
		{"nginx.conf", 5, "events", ""},
		{"nginx.conf", 6, "worker_connections", "1024"},
		{"nginx.conf", 8, "http", ""},
		{"nginx.conf", 9, "include", "/etc/nginx/sites/*.conf"},
		{"nginx.conf", 10, "log_format", `main|$remote_addr "$request" # not a comment;| $status`},
		{"nginx.conf", 12, "server", ""},
		{"nginx.conf", 13, "listen", "127.0.0.1:8080|backlog=511"},
		{"nginx.conf", 16, "location", "/"},
		{"nginx.conf", 16, "return", "200|hi;there"},
		{"app.conf", 1, "server", ""},
		{"app.conf", 2, "listen", "[::1]:8443|reuseport"},
		{"app.conf", 2, "listen", "unix:/run/app.sock"},
		{"app.conf", 3, "server_name", "a b"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("directives:\n got %v\nwant %v", got, want)
	}
	if ds[0].File != "/etc/nginx/nginx.conf" || ds[len(ds)-1].File != "/etc/nginx/sites/app.conf" {
		t.Errorf("files %q ... %q, want the full paths of the headers", ds[0].File, ds[len(ds)-1].File)
	}
	if w := ds[8].where(); w != "/etc/nginx/nginx.conf:13" {
		t.Errorf("where() = %q, want /etc/nginx/nginx.conf:13", w)
	}
}

func TestParseNginxDumpEdges(t *testing.T) {
	t.Run("no-dump", func(t *testing.T) {
		ds, err := parseNginxDump("nginx: the configuration file x syntax is ok\nlisten 80;\n")
		if err != nil || len(ds) != 0 {
			t.Errorf("text before any header: %v %v, want no directives", ds, err)
		}
	})
	t.Run("unterminated-quote-names-file-line", func(t *testing.T) {
		_, err := parseNginxDump(dumpOf([2]string{"/c/a.conf", "events {}\nhttp { return 200 \"x; }"}))
		if err == nil || !strings.Contains(err.Error(), "/c/a.conf:2") {
			t.Errorf("err = %v, want one naming /c/a.conf:2", err)
		}
	})
	t.Run("directive-does-not-leak-into-next-file", func(t *testing.T) {
		ds, err := parseNginxDump(dumpOf([2]string{"/c/a.conf", "worker_processes 1"}, [2]string{"/c/b.conf", "listen 80;"}))
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 1 || ds[0].Name != "listen" || ds[0].File != "/c/b.conf" || ds[0].Line != 1 {
			t.Errorf("got %+v, want only b.conf:1 listen", ds)
		}
	})
	t.Run("file-header-without-trailing-newline-in-file", func(t *testing.T) {
		dump := "# configuration file /c/a.conf:\nworker_processes 1;\n# configuration file /c/b.conf:\n\n\nlisten 80;\n"
		ds, err := parseNginxDump(dump)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || ds[1].where() != "/c/b.conf:3" {
			t.Errorf("got %+v, want listen at /c/b.conf:3", ds)
		}
	})
}

// TestParseNginxDumpRealNginx runs the installed nginx -T on a config with
// an include, quotes, comments and a multi-line listen, and checks that
// every listen is attributed to the right file and line.
func TestParseNginxDumpRealNginx(t *testing.T) {
	bin := batontest.RequireBinary(t, "nginx")
	dir := t.TempDir()
	inc := filepath.Join(dir, "site.conf")
	conf := filepath.Join(dir, "nginx.conf")
	writeFile(t, inc, `# included
server {
    listen 127.0.0.1:18080; # first
    location / {
        return 200 "a;b # not a comment";
    }
}
`)
	writeFile(t, conf, `worker_processes 1;
error_log stderr warn;
events { worker_connections 64; }
http {
    access_log off;
    include `+inc+`;
    server {
        listen
            127.0.0.1:18081
            backlog=4096;
        location / { return 200 'x\'y'; }
    }
}
`)
	cmd := exec.Command(bin, "-T", "-c", conf, "-e", "stderr", "-g", "pid "+filepath.Join(dir, "x.pid")+";")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -T: %v\n%s", err, out)
	}
	ds, err := parseNginxDump(string(out))
	if err != nil {
		t.Fatalf("parse the dump of nginx -T: %v\n%s", err, out)
	}
	var listens []string
	for _, d := range ds {
		if d.Name == "listen" {
			listens = append(listens, d.where()+" "+strings.Join(d.Args, " "))
		}
	}
	want := []string{conf + ":8 127.0.0.1:18081 backlog=4096", inc + ":3 127.0.0.1:18080"}
	if !reflect.DeepEqual(listens, want) {
		t.Errorf("listen directives in nginx -T's dump:\n got %q\nwant %q\ndump:\n%s", listens, want, out)
	}
	t.Logf("nginx -T printed %d lines, %d directives", strings.Count(string(out), "\n"), len(ds))

	// The same dump through the check: 18081's backlog equals baton's.
	ls := []Listener{testListener(t, "tcp://127.0.0.1:18080", 4096), testListener(t, "tcp://127.0.0.1:18081", 4096)}
	if err := checkNginxDump(string(out), ls, "", ""); err != nil {
		t.Errorf("checkNginxDump on a good config: %v", err)
	}
	// Baton's socket on 18081 with another backlog: refused, naming file:line.
	ls[1].Backlog = 1024
	err = checkNginxDump(string(out), ls, "", "")
	if err == nil || !strings.Contains(err.Error(), conf+":8") || !strings.Contains(err.Error(), "backlog=4096") {
		t.Errorf("checkNginxDump with baton's backlog 1024: %v, want an error naming %s:8 and backlog=4096", err, conf)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func testListener(t *testing.T, spec string, backlog int) Listener {
	t.Helper()
	sp, err := fdpass.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	return Listener{Spec: sp, Fd: -1, Addr: sp.Addr, Backlog: backlog}
}

func TestParseNginxAddr(t *testing.T) {
	good := map[string]string{
		"8080":           "0.0.0.0:8080",
		"*:80":           "0.0.0.0:80",
		"*":              "0.0.0.0:80",
		"127.0.0.1":      "127.0.0.1:80",
		"127.0.0.1:8080": "127.0.0.1:8080",
		"[::]:80":        "[::]:80",
		"[::]":           "[::]:80",
		"[::1]:8080":     "[::1]:8080",
		"0.0.0.0:65535":  "0.0.0.0:65535",
	}
	for in, want := range good {
		ap, err := parseNginxAddr(in)
		if err != nil || ap.String() != want {
			t.Errorf("parseNginxAddr(%q) = %v, %v; want %s", in, ap, err, want)
		}
	}
	bad := map[string]string{
		"localhost":      "IP address",
		"localhost:8080": "IP address",
		"example.com:80": "IP address",
		"[::1":           "unclosed [",
		"127.0.0.1:http": "bad port",
		"127.0.0.1:0":    "bad port",
		"127.0.0.1:":     "bad port",
		"[::1]:99999":    "bad port",
	}
	for in, want := range bad {
		if ap, err := parseNginxAddr(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseNginxAddr(%q) = %v, %v; want an error with %q", in, ap, err, want)
		}
	}
}

func TestParseListen(t *testing.T) {
	d := func(args ...string) NginxDirective {
		return NginxDirective{File: "/c/n.conf", Line: 7, Name: "listen", Args: args}
	}
	cases := []struct {
		args      []string
		key       string
		reuseport bool
		backlog   int
	}{
		{[]string{"8080"}, "stream:0.0.0.0:8080", false, 0},
		{[]string{"*:80", "default_server"}, "stream:0.0.0.0:80", false, 0},
		{[]string{"127.0.0.1"}, "stream:127.0.0.1:80", false, 0},
		{[]string{"127.0.0.1:8080", "reuseport"}, "stream:127.0.0.1:8080", true, 0},
		{[]string{"[::]:80", "backlog=1024", "ipv6only=on"}, "stream:[::]:80", false, 1024},
		{[]string{"[::1]:8080", "http2", "reuseport", "backlog=511"}, "stream:[::1]:8080", true, 511},
		{[]string{"unix:/run/x.sock"}, "unix:/run/x.sock", false, 0},
		{[]string{"unix:/run/x.sock", "backlog=64"}, "unix:/run/x.sock", false, 64},
	}
	for _, c := range cases {
		l, err := parseListen(d(c.args...))
		if err != nil {
			t.Errorf("listen %q: %v", c.args, err)
			continue
		}
		if l.key != c.key || l.reuseport != c.reuseport || l.backlog != c.backlog {
			t.Errorf("listen %q: key %q reuseport %t backlog %d; want %q %t %d", c.args, l.key, l.reuseport, l.backlog, c.key, c.reuseport, c.backlog)
		}
	}
	// The keys are those of baton's listener specs.
	for spec, args := range map[string]string{
		"tcp://127.0.0.1:8080":  "127.0.0.1:8080",
		"tcp://:8080":           "8080",
		"tcp6://[::1]:8080":     "[::1]:8080",
		"unix:///run/x.sock":    "unix:/run/x.sock",
		"tcp4://0.0.0.0:80":     "*:80",
		"web=tcp://127.0.0.1:9": "127.0.0.1:9",
	} {
		l, err := parseListen(d(args))
		if err != nil {
			t.Fatal(err)
		}
		if sk := testListener(t, spec, 0).Spec.Key(); l.key != sk {
			t.Errorf("listen %s: key %q, baton's --listen %s has key %q", args, l.key, spec, sk)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "/c/n.conf:7: listen without an address"},
		{[]string{"localhost:8080"}, `/c/n.conf:7: listen localhost:8080: baton needs an IP address here, not "localhost"`},
		{[]string{"www.example.com"}, `/c/n.conf:7: listen www.example.com: baton needs an IP address`},
		{[]string{"127.0.0.1:8080", "backlog=many"}, "/c/n.conf:7: listen 127.0.0.1:8080: bad backlog=many"},
	} {
		_, err := parseListen(d(c.args...))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("listen %q: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

func TestCheckNginxDump(t *testing.T) {
	const somaxconn = 4096
	passed := []Listener{
		testListener(t, "tcp://127.0.0.1:8080", somaxconn),
		testListener(t, "tcp6://[::1]:8443", somaxconn),
		testListener(t, "unix:///run/app.sock", somaxconn),
	}
	conf := func(listens ...string) string {
		var b strings.Builder
		b.WriteString("worker_processes 2;\nevents {}\nhttp {\n    server {\n") // listens from line 5
		for _, l := range listens {
			b.WriteString("        " + l + "\n")
		}
		b.WriteString("    }\n}")
		return dumpOf([2]string{"/etc/nginx/nginx.conf", b.String()})
	}
	good := [][]string{
		{"listen 127.0.0.1:8080;"},
		{"listen 127.0.0.1:8080 backlog=511;"},
		{"listen 127.0.0.1:8080 backlog=4096 default_server;"},
		{"listen 127.0.0.1:8080;", "listen [::1]:8443;", "listen unix:/run/app.sock;"},
		{"listen 127.0.0.1:8080 so_keepalive=on deferred;"},
		{},
	}
	for _, g := range good {
		if err := checkNginxDump(conf(g...), passed, "", ""); err != nil {
			t.Errorf("%q: refused: %v", g, err)
		}
	}
	bad := []struct {
		name    string
		listens []string
		want    []string
	}{
		{"reuseport", []string{"listen 127.0.0.1:8080 reuseport;"},
			[]string{"/etc/nginx/nginx.conf:5", "reuseport", "second socket"}},
		{"backlog", []string{"listen 127.0.0.1:8080 backlog=1024;"},
			[]string{"/etc/nginx/nginx.conf:5", "backlog=1024", "backlog 4096", "?backlog=1024"}},
		{"backlog-v6", []string{"listen 127.0.0.1:8080;", "listen [::1]:8443 backlog=128;"},
			[]string{"/etc/nginx/nginx.conf:6", "backlog=128"}},
		{"not-passed", []string{"listen 127.0.0.1:9999;"},
			[]string{"/etc/nginx/nginx.conf:5", "listen 127.0.0.1:9999 is not handed over by baton", "--listen"}},
		{"not-passed-wildcard", []string{"listen 8080;"},
			[]string{"/etc/nginx/nginx.conf:5", "listen 8080 is not handed over"}},
		{"not-passed-unix", []string{"listen unix:/run/other.sock;"},
			[]string{"/etc/nginx/nginx.conf:5", "unix:/run/other.sock is not handed over"}},
		{"hostname", []string{"listen localhost:8080;"},
			[]string{"/etc/nginx/nginx.conf:5", "IP address"}},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			err := checkNginxDump(conf(c.listens...), passed, "", "")
			if err == nil {
				t.Fatalf("%q accepted", c.listens)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	t.Run("pid", func(t *testing.T) {
		dump := dumpOf([2]string{"/etc/nginx/nginx.conf", "worker_processes 2;\npid /run/nginx.pid;\nevents {}"})
		err := checkNginxDump(dump, passed, "", "")
		if err == nil || !strings.Contains(err.Error(), "/etc/nginx/nginx.conf:2: remove the pid directive") {
			t.Errorf("pid directive without a copy: %v, want an error naming /etc/nginx/nginx.conf:2", err)
		}
	})
	// The main file's pid directive, as baton rewrote it in the
	// generation's copy, is the generation's own.
	t.Run("own-pid-in-copy", func(t *testing.T) {
		dump := dumpOf([2]string{"/etc/nginx/nginx.conf", "worker_processes 2;\npid /run/baton/3/nginx.pid;\nevents {}"})
		if err := checkNginxDump(dump, passed, "/run/baton/3/nginx.pid", "/etc/nginx/nginx.conf"); err != nil {
			t.Errorf("the generation's own pid directive refused: %v", err)
		}
	})
	t.Run("pid-in-include", func(t *testing.T) {
		dump := dumpOf([2]string{"/etc/nginx/nginx.conf", "include /etc/nginx/main.d/*.conf;\nevents {}"},
			[2]string{"/etc/nginx/main.d/pid.conf", "# pid\n\npid /run/nginx.pid;"})
		err := checkNginxDump(dump, passed, "/run/baton/3/nginx.pid", "/etc/nginx/nginx.conf")
		if err == nil || !strings.Contains(err.Error(), "/etc/nginx/main.d/pid.conf:3: pid directive outside the main config file") || !strings.Contains(err.Error(), "of /etc/nginx/nginx.conf only") {
			t.Errorf("pid in an include: %v, want an error naming /etc/nginx/main.d/pid.conf:3", err)
		}
	})
	t.Run("every-problem-reported", func(t *testing.T) {
		dump := dumpOf([2]string{"/n.conf", "pid /x;\nhttp { server {\nlisten 127.0.0.1:8080 reuseport;\nlisten 127.0.0.1:1;\n} }"})
		err := checkNginxDump(dump, passed, "", "")
		for _, w := range []string{"/n.conf:1: remove the pid", "/n.conf:3: listen 127.0.0.1:8080 reuseport", "/n.conf:4: listen 127.0.0.1:1 is not handed over"} {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("error %v lacks %q", err, w)
			}
		}
	})
	t.Run("baton-backlog-not-somaxconn", func(t *testing.T) {
		ls := []Listener{testListener(t, "tcp://127.0.0.1:8080?backlog=1024", 1024)}
		if err := checkNginxDump(conf("listen 127.0.0.1:8080 backlog=1024;"), ls, "", ""); err != nil {
			t.Errorf("backlog equal to baton's 1024 refused: %v", err)
		}
		if err := checkNginxDump(conf("listen 127.0.0.1:8080 backlog=511;"), ls, "", ""); err != nil {
			t.Errorf("backlog=511 (what nginx assumes of an inherited socket) refused: %v", err)
		}
		if err := checkNginxDump(conf("listen 127.0.0.1:8080 backlog=4096;"), ls, "", ""); err == nil {
			t.Errorf("backlog=4096 with baton's 1024 accepted")
		}
	})
	t.Run("unreadable-dump", func(t *testing.T) {
		err := checkNginxDump(dumpOf([2]string{"/n.conf", "return 200 \"x;"}), passed, "", "")
		if err == nil || !strings.Contains(err.Error(), "read nginx -T output") || !strings.Contains(err.Error(), "/n.conf:1") {
			t.Errorf("unterminated quote: %v", err)
		}
	})
}

// TestCheckNginxDumpHashInsideWord guards the same nginx rule as
// TestSplitNginxLineHashInsideWord at the level that matters: a '#' inside
// a word must not hide the listen line after it from the check.
func TestCheckNginxDumpHashInsideWord(t *testing.T) {
	dump := dumpOf([2]string{"/n.conf", "http { server {\n    return 301 https://example.com/#top;\n    listen 127.0.0.1:8080 reuseport;\n} }"})
	err := checkNginxDump(dump, []Listener{testListener(t, "tcp://127.0.0.1:8080", 4096)}, "", "")
	if err == nil || !strings.Contains(err.Error(), "/n.conf:3") {
		t.Errorf("reuseport after a '#' inside a word: %v, want it refused at /n.conf:3", err)
	}
}

// TestParseNginxDumpMultiLineQuote: nginx accepts a quoted string that spans
// lines (a return body, a log_format); baton must not refuse the config.
func TestParseNginxDumpMultiLineQuote(t *testing.T) {
	dump := dumpOf([2]string{"/n.conf", "http { server {\n    return 200 \"line one\nline two\";\n    listen 127.0.0.1:8080;\n} }"})
	ds, err := parseNginxDump(dump)
	if err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.where()+" "+d.Name)
	}
	want := []string{"/n.conf:1 http", "/n.conf:1 server", "/n.conf:2 return", "/n.conf:4 listen"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestParseListenUDP: `listen ... udp` (stream module) asks for a datagram
// socket, which must match baton's udp:// listener, not a tcp:// one.
func TestParseListenUDP(t *testing.T) {
	l, err := parseListen(NginxDirective{File: "/n.conf", Line: 1, Name: "listen", Args: []string{"127.0.0.1:5353", "udp"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := testListener(t, "udp://127.0.0.1:5353", 0).Spec.Key(); l.key != want {
		t.Errorf("listen 127.0.0.1:5353 udp: key %q, want %q (baton's udp://127.0.0.1:5353)", l.key, want)
	}
}

// TestNginxListenQUIC: `listen ... quic` (HTTP/3) is a UDP listener beside
// the TCP one of the same port, matched by baton's udp:// listener; quic
// with reuseport is refused (nginx would put SO_REUSEPORT on baton's socket
// and bind sockets of its own beside it), and so is quic with more than one
// worker (they would share baton's socket and lose each other's packets).
func TestNginxListenQUIC(t *testing.T) {
	dump := dumpOf([2]string{"/n.conf", "http {\n server {\n  listen 127.0.0.1:8443 quic;\n  listen 127.0.0.1:8443 ssl;\n  listen [::1]:8443 quic;\n }\n}\n"})
	cls, err := (&Nginx{}).ConfigListeners(GenSpec{}, dump)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cls {
		got = append(got, c.Spec.String()+"@"+c.Where)
	}
	want := []string{
		"udp4_127.0.0.1_8443=udp4://127.0.0.1:8443@/n.conf:3",
		"tcp4_127.0.0.1_8443=tcp4://127.0.0.1:8443@/n.conf:4",
		"udp6___1_8443=udp6://[::1]:8443?v6only=1@/n.conf:5",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	passed := []Listener{testListener(t, "udp://127.0.0.1:8443", 0), testListener(t, "tcp://127.0.0.1:8443", 0), testListener(t, "udp6://[::1]:8443?v6only=1", 0)}
	if err := checkNginxDump(dump, passed, "", ""); err != nil {
		t.Errorf("check with udp:// and tcp:// given: %v", err)
	}
	err = checkNginxDump(dump, passed[1:2], "", "")
	if err == nil || !strings.Contains(err.Error(), "/n.conf:3: listen 127.0.0.1:8443 is not handed over by baton") {
		t.Errorf("check without udp://: %v; want /n.conf:3 refused", err)
	}

	// More than one worker: refused with a QUIC listener only.
	for _, w := range []string{"2", "auto"} {
		multi := dumpOf([2]string{"/n.conf", "worker_processes " + w + ";\nhttp {\n server {\n  listen 127.0.0.1:8443 quic;\n  listen 127.0.0.1:8443 ssl;\n }\n}\n"})
		err = checkNginxDump(multi, passed, "", "")
		if err == nil || !strings.Contains(err.Error(), "/n.conf:1: worker_processes "+w+" with listen 127.0.0.1:8443 quic (/n.conf:4)") {
			t.Errorf("worker_processes %s with quic: %v; want refused", w, err)
		}
		tcpOnly := dumpOf([2]string{"/n.conf", "worker_processes " + w + ";\nhttp {\n server {\n  listen 127.0.0.1:8443 ssl;\n }\n}\n"})
		if err := checkNginxDump(tcpOnly, passed, "", ""); err != nil {
			t.Errorf("worker_processes %s without quic: %v", w, err)
		}
	}
	for _, w := range []string{"1", "01"} {
		one := dumpOf([2]string{"/n.conf", "worker_processes " + w + ";\nhttp {\n server {\n  listen 127.0.0.1:8443 quic;\n }\n}\n"})
		if err := checkNginxDump(one, passed, "", ""); err != nil {
			t.Errorf("worker_processes %s with quic: %v", w, err)
		}
	}

	bl := dumpOf([2]string{"/n.conf", "http {\n server {\n  listen 127.0.0.1:8443 quic backlog=100;\n }\n}\n"})
	if err := checkNginxDump(bl, passed[:1], "", ""); err == nil || !strings.Contains(err.Error(), "/n.conf:3: listen 127.0.0.1:8443 quic backlog=100: a UDP socket has no listen backlog") {
		t.Errorf("quic backlog=: %v; want refused with the UDP reason", err)
	}

	// quic_bpf on would replace baton's steering program; off is fine.
	bpf := dumpOf([2]string{"/n.conf", "quic_bpf On;\nhttp {\n server {\n  listen 127.0.0.1:8443 quic;\n }\n}\n"})
	if err := checkNginxDump(bpf, passed, "", ""); err == nil || !strings.Contains(err.Error(), "/n.conf:1: quic_bpf On: nginx would attach its own eBPF program") {
		t.Errorf("quic_bpf on: %v; want refused", err)
	}
	bpfOff := dumpOf([2]string{"/n.conf", "quic_bpf off;\nhttp {\n server {\n  listen 127.0.0.1:8443 quic;\n }\n}\n"})
	if err := checkNginxDump(bpfOff, passed, "", ""); err != nil {
		t.Errorf("quic_bpf off: %v", err)
	}

	reuse := dumpOf([2]string{"/n.conf", "http {\n server {\n  listen 127.0.0.1:8443 quic reuseport;\n }\n}\n"})
	err = checkNginxDump(reuse, passed[:1], "", "")
	if err == nil || !strings.Contains(err.Error(), "/n.conf:3: listen 127.0.0.1:8443 quic reuseport: nginx would bind a socket of its own for every further worker into the reuseport group") {
		t.Errorf("quic reuseport: %v; want refused", err)
	}
}

// splitNginxLine lexes one line and reports its words and, for each, whether
// a ';', '{' or '}' ended a directive right after it.
func splitNginxLine(line string) (words []string, ends []bool, err error) {
	toks, err := lexNginx(line)
	if err != nil {
		return nil, nil, err
	}
	lastWord := false
	for _, t := range toks {
		if t.punct == 0 {
			words, ends = append(words, t.text), append(ends, false)
			lastWord = true
			continue
		}
		if lastWord {
			ends[len(ends)-1] = true
		}
		lastWord = false
	}
	return words, ends, nil
}

// Keys of table blocks (map, types) are not directives: a map key named
// listen or pid must not be checked.
func TestParseNginxDumpSkipsTableBlocks(t *testing.T) {
	dump := dumpOf([2]string{"/n.conf", "http {\n map $a $b {\n  listen 1;\n  pid 2;\n }\n types { text/html html; }\n server { listen 127.0.0.1:8080; }\n}"})
	ds, err := parseNginxDump(dump)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.where()+" "+d.Name)
	}
	want := []string{"/n.conf:1 http", "/n.conf:2 map", "/n.conf:6 types", "/n.conf:7 server", "/n.conf:7 listen"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
