package doctor

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/batonproxy/baton/supervisor"
)

func repoFile(t *testing.T, rel string) ConfigFile {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(filepath.Dir(file)), rel)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return ConfigFile{Path: p, Text: string(data)}
}

func TestParseHAProxy(t *testing.T) {
	tests := []struct {
		name string
		text string
		// want: "kind name mode idleClose" per proxy
		want             []string
		hardStop, spread bool
	}{
		{"defaults give the option", `
global
    hard-stop-after 4m
defaults
    mode http
    option idle-close-on-response
frontend fe
    bind :80
`, []string{"frontend fe http true"}, true, false},
		{"a frontend turns it off", `
defaults
    mode http
    option idle-close-on-response
frontend a
frontend b
    no option idle-close-on-response
listen c
    mode tcp
`, []string{"frontend a http true", "frontend b http false", "listen c tcp true"}, false, false},
		{"the last defaults before the proxy, or the one named by from", `
defaults plain
    mode http
defaults safe
    mode http
    option idle-close-on-response
frontend a
frontend b from plain
defaults
    mode http
frontend c
`, []string{"frontend a http true", "frontend b http false", "frontend c http false"}, false, false},
		{"comments and tcp by default", `
global
    # hard-stop-after 4m
    close-spread-time 5s   # spread
defaults
    timeout client 5s # option idle-close-on-response
frontend a
    mode http   # http
frontend t
backend be
    option idle-close-on-response
`, []string{"frontend a http false", "frontend t tcp false"}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := parseHAProxy([]ConfigFile{{Path: "h.cfg", Text: tc.text}})
			got := []string{}
			for _, p := range c.proxies {
				got = append(got, strings.Join([]string{p.kind, p.name, p.mode, map[bool]string{true: "true", false: "false"}[p.idleClose]}, " "))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("proxies %q, want %q", got, tc.want)
			}
			if (c.hardStop != "") != tc.hardStop || (c.closeSpread != "") != tc.spread {
				t.Errorf("hard-stop-after %q, close-spread-time %q", c.hardStop, c.closeSpread)
			}
		})
	}
}

// Drains that cut clients off or never end: the settings the keep-alive
// work found, in the examples, are what doctor asks for.
func TestProxyConfigChecks(t *testing.T) {
	hap := repoFile(t, "examples/haproxy/haproxy.cfg")
	ngx := repoFile(t, "examples/nginx/nginx.conf")
	strip := func(c ConfigFile, drop string) ConfigFile {
		var keep []string
		for _, l := range strings.Split(c.Text, "\n") {
			if !strings.Contains(l, drop) || strings.HasPrefix(strings.TrimSpace(l), "#") {
				keep = append(keep, l)
			}
		}
		return ConfigFile{Path: c.Path, Text: strings.Join(keep, "\n")}
	}
	tests := []struct {
		name string
		cfg  ProxyConfig
		want []string
	}{
		{"the HAProxy example", ProxyConfig{Program: "haproxy", Files: []ConfigFile{hap}, Pids: []int{10}}, []string{}},
		{"HAProxy without idle-close-on-response", ProxyConfig{Program: "haproxy", Files: []ConfigFile{strip(hap, "idle-close-on-response")}, Pids: []int{10}},
			[]string{"warning haproxy-keepalive " + hap.Path}},
		{"HAProxy without hard-stop-after", ProxyConfig{Program: "haproxy", Files: []ConfigFile{strip(hap, "hard-stop-after")}, Pids: []int{10}},
			[]string{"warning haproxy-hard-stop " + hap.Path}},
		{"the nginx example", ProxyConfig{Program: "nginx", Files: []ConfigFile{ngx}, Pids: []int{10}}, []string{}},
		{"nginx without worker_shutdown_timeout", ProxyConfig{Program: "nginx", Files: []ConfigFile{strip(ngx, "worker_shutdown_timeout")}, Pids: []int{10}},
			[]string{"warning nginx-shutdown-timeout " + ngx.Path}},
		{"nginx with worker_shutdown_timeout in -g", ProxyConfig{Program: "nginx", Files: []ConfigFile{strip(ngx, "worker_shutdown_timeout")},
			Globals: "pid /x.pid; worker_shutdown_timeout 1m;", Pids: []int{10}}, []string{}},
		{"nginx 1.31.4 without keepalive_min_timeout", ProxyConfig{Program: "nginx", Version: "1.31.4", Files: []ConfigFile{ngx}, Pids: []int{10}},
			[]string{"warning nginx-keepalive " + ngx.Path}},
		{"nginx 1.31.4 with keepalive_min_timeout", ProxyConfig{Program: "nginx", Version: "1.31.4",
			Files: []ConfigFile{ngx, {Path: "/etc/nginx/conf.d/ka.conf", Text: "keepalive_min_timeout 10s;\n"}}, Pids: []int{10}}, []string{}},
		{"nginx 1.22.1 with keep-alive", ProxyConfig{Program: "nginx", Version: "1.22.1", Files: []ConfigFile{ngx}, Pids: []int{10}},
			[]string{"info nginx-keepalive " + ngx.Path}},
		{"nginx 1.31.4 with keep-alive off", ProxyConfig{Program: "nginx", Version: "1.31.4",
			Files: []ConfigFile{{Path: ngx.Path, Text: strings.Replace(ngx.Text, "keepalive_timeout 10s;", "keepalive_timeout 0;", 1)}}, Pids: []int{10}}, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := fakeFacts()
			f.Configs = []ProxyConfig{tc.cfg}
			got := Evaluate(f, Options{}).Findings
			requireComplete(t, got)
			if !sameStrings(summarize(got), tc.want) {
				t.Errorf("got %q, want %q", summarize(got), tc.want)
			}
		})
	}
}

func TestNginxDirectives(t *testing.T) {
	ds, err := nginxDirectives("worker_processes 2; # worker_shutdown_timeout 1m;\nevents { worker_connections 10; }\n" +
		"http {\n  include 'conf.d/*.conf';\n  log_format x \"a;b # c\";\n}\n")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range ds {
		got = append(got, d.Name+"("+strings.Join(d.Args, ",")+")@"+string(rune('0'+d.Line)))
	}
	want := []string{"worker_processes(2)@1", "events()@2", "worker_connections(10)@2", "http()@3", "include(conf.d/*.conf)@4", "log_format(x,a;b # c)@5"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if _, err := nginxDirectives("a 'b;"); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestReadNginxIncludes(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, text string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("nginx.conf", "include main.d/*.conf;\nevents {}\nhttp { include sites/a.conf; include nginx.conf; }\n")
	write("main.d/shutdown.conf", "worker_shutdown_timeout 30s;\n")
	write("sites/a.conf", "server { listen 127.0.0.1:80; }\n")
	files, err := readNginx(filepath.Join(dir, "nginx.conf"), configReader())
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("read %d files, want 3 (each once): %+v", len(files), files)
	}
	where, args, ok := nginxSetting(ProxyConfig{Files: files}, "worker_shutdown_timeout")
	if !ok || !strings.HasSuffix(where, "shutdown.conf:1") || args[0] != "30s" {
		t.Errorf("worker_shutdown_timeout: %q %q %v", where, args, ok)
	}
}

func TestCommandLines(t *testing.T) {
	t.Run("nginx", func(t *testing.T) {
		tests := []struct {
			cmdline       []string
			conf, globals string
			ok            bool
		}{
			{[]string{"nginx: master process /usr/sbin/nginx -c /etc/x/n.conf -g pid /run/b.d/gen3/nginx.pid; worker_shutdown_timeout 1m;"},
				"/etc/x/n.conf", "pid /run/b.d/gen3/nginx.pid; worker_shutdown_timeout 1m;", true},
			{[]string{"nginx: master process /usr/sbin/nginx"}, DefaultNginxConf, "", true},
			{[]string{"/usr/sbin/nginx", "-p", "/srv", "-c", "n.conf", "-gdaemon off;"}, "/srv/n.conf", "daemon off;", true},
			{[]string{"nginx", "-cn.conf"}, "n.conf", "", false},
		}
		for _, tc := range tests {
			conf, globals, ok := nginxArgs(tc.cmdline)
			if conf != tc.conf || globals != tc.globals || ok != tc.ok {
				t.Errorf("nginxArgs(%q) = %q, %q, %v; want %q, %q, %v", tc.cmdline, conf, globals, ok, tc.conf, tc.globals, tc.ok)
			}
		}
	})
	t.Run("haproxy", func(t *testing.T) {
		tests := []struct {
			args []string
			want []string
		}{
			{[]string{"-W", "-db", "-f", "/etc/h.cfg", "-f", "conf.d"}, []string{"/etc/h.cfg", "/cwd/conf.d"}},
			{[]string{"-C", "/etc/haproxy", "-f", "h.cfg"}, []string{"/etc/haproxy/h.cfg"}},
			{[]string{"-db", "--", "a.cfg", "/b.cfg"}, []string{"/cwd/a.cfg", "/b.cfg"}},
			{[]string{"-v"}, nil},
		}
		for _, tc := range tests {
			if got := haproxyPaths(tc.args, "/cwd"); !slices.Equal(got, tc.want) {
				t.Errorf("haproxyPaths(%q) = %q, want %q", tc.args, got, tc.want)
			}
		}
	})
	t.Run("baton", func(t *testing.T) {
		dir := t.TempDir()
		yml := filepath.Join(dir, "baton.yaml")
		if err := os.WriteFile(yml, []byte("control: /run/y.sock\nlisten: [tcp://127.0.0.1:80]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		noEnv := func() []string { return nil }
		env := func() []string { return []string{"PATH=/bin", "BATON_CONTROL=/run/env.sock"} }
		tests := []struct {
			cmdline []string
			env     func() []string
			want    string
			ok      bool
		}{
			{[]string{"/usr/bin/baton", "run", "-l", "tcp://127.0.0.1:80", "-c", "/run/a.sock", "--", "haproxy"}, env, "/run/a.sock", true},
			{[]string{"baton", "run", "--control=b.sock", "--", "haproxy", "-c", "x"}, noEnv, "/cwd/b.sock", true},
			{[]string{"baton", "run", "--", "haproxy", "-c", "x"}, env, "/run/env.sock", true},
			{[]string{"baton", "run", "--config", yml}, noEnv, "/run/y.sock", true},
			{[]string{"baton", "run", "-l", "tcp://127.0.0.1:80", "--", "nginx"}, noEnv, supervisor.DefaultControlPath, true},
			{[]string{"baton", "status", "-c", "/run/a.sock"}, noEnv, "", false},
		}
		for _, tc := range tests {
			got, ok := batonRun(tc.cmdline, tc.env, os.ReadFile, "/cwd")
			if got != tc.want || ok != tc.ok {
				t.Errorf("batonRun(%q) = %q, %v; want %q, %v", tc.cmdline, got, ok, tc.want, tc.ok)
			}
		}
	})
}
