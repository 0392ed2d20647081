package proxyctl

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/batonproxy/baton/batontest"
)

// The main file's top-level pid directive gets the generation's path;
// nothing else of the file moves, so nginx's line numbers stay the user's.
func TestRewriteNginxPid(t *testing.T) {
	cases := []struct {
		name, in, want, userPid string
	}{
		{"debian", "user www-data;\nworker_processes auto;\npid /run/nginx.pid;\nerror_log /var/log/nginx/error.log;\n",
			"user www-data;\nworker_processes auto;\npid /g/nginx.pid;\nerror_log /var/log/nginx/error.log;\n", "/run/nginx.pid"},
		{"quoted", "pid \"/run/my nginx.pid\" ; events {}", "pid /g/nginx.pid ; events {}", "/run/my nginx.pid"},
		{"no-pid", "events {}\nhttp { server { listen 80; } }\n", "events {}\nhttp { server { listen 80; } }\n", ""},
		{"comment-and-nested", "# pid /x;\nhttp {\n  map $a $b { pid 1; }\n}\npid x.pid;", "# pid /x;\nhttp {\n  map $a $b { pid 1; }\n}\npid /g/nginx.pid;", "x.pid"},
		{"argument-named-pid", "env pid;\npid /p;", "env pid;\npid /g/nginx.pid;", "/p"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, p, err := rewriteNginxPid(c.in, "/g/nginx.pid")
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want || p.path != c.userPid {
				t.Errorf("got %q (user pid %q), want %q (%q)", got, p.path, c.want, c.userPid)
			}
		})
	}
	if _, _, err := rewriteNginxPid("events {}\npid a b;\n", "/g"); err == nil || !strings.HasPrefix(err.Error(), "2:") {
		t.Errorf("pid with two arguments: %v, want an error naming line 2", err)
	}
}

// A generation directory whose path needs quoting in nginx's syntax is
// written as one quoted token.
func TestNginxWord(t *testing.T) {
	for in, want := range map[string]string{
		"/run/baton/3/nginx.pid": "/run/baton/3/nginx.pid",
		"/tmp/a b/nginx.pid":     `"/tmp/a b/nginx.pid"`,
		`/tmp/x";y`:              `"/tmp/x\";y"`,
		`/tmp/back\slash`:        `"/tmp/back\\slash"`,
	} {
		if got := nginxWord(in); got != want {
			t.Errorf("nginxWord(%q) = %q, want %q", in, got, want)
		}
		toks, err := lexNginx("pid " + nginxWord(in) + ";")
		if err != nil || len(toks) != 3 || toks[1].text != in {
			t.Errorf("%q does not lex back: %+v %v", in, toks, err)
		}
	}
}

// The generation runs a copy of the main file beside a symlink to every
// other entry of the original's directory: relative includes still read
// the user's files; the copy's pid names the generation's own file; -c
// names the copy in the check and in the generation; no -g pid when the
// copy has one.
func TestNginxStageConfig(t *testing.T) {
	etc := batontest.ShortTempDir(t)
	conf := filepath.Join(etc, "nginx.conf")
	write := func(name, text string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(etc, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(etc, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("nginx.conf", "worker_processes 1;\npid /run/nginx.pid;\nhttp { include mime.types; include conf.d/*.conf; }\n")
	write("mime.types", "types {}\n")
	write("conf.d/a.conf", "\n")
	n, err := NewNginx([]string{"/usr/sbin/nginx", "-c", conf, "-p", "/usr/share/nginx", "-g", "worker_processes 2;"})
	if err != nil {
		t.Fatal(err)
	}
	files, err := n.ConfigFiles()
	if err != nil || !reflect.DeepEqual(files, []string{conf}) {
		t.Fatalf("ConfigFiles = %q, %v", files, err)
	}
	gdir := batontest.ShortTempDir(t)
	snap := filepath.Join(gdir, "config-0") // baton's verbatim copy
	data, _ := os.ReadFile(conf)
	if err := os.WriteFile(snap, data, 0o600); err != nil {
		t.Fatal(err)
	}
	g := GenSpec{Gen: 3, Dir: gdir, Config: map[string]string{conf: snap}, Listeners: []Listener{boundListener(t, "tcp://127.0.0.1:0")}}
	paths, err := n.StageConfig(g)
	if err != nil {
		t.Fatal(err)
	}
	staged := filepath.Join(gdir, nginxCopyDir)
	if want := map[string]string{staged + "/": etc + "/"}; !reflect.DeepEqual(paths, want) {
		t.Errorf("StageConfig = %q, want %q", paths, want)
	}
	copyText, err := os.ReadFile(filepath.Join(staged, "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "worker_processes 1;\npid " + filepath.Join(gdir, "nginx.pid") + ";\nhttp { include mime.types; include conf.d/*.conf; }\n"; string(copyText) != want {
		t.Errorf("copy:\n%s\nwant:\n%s", copyText, want)
	}
	for _, name := range []string{"mime.types", "conf.d/a.conf"} {
		if _, err := os.Stat(filepath.Join(staged, name)); err != nil {
			t.Errorf("%s not reachable from the copy's directory: %v", name, err)
		}
	}
	if target, err := os.Readlink(filepath.Join(staged, "mime.types")); err != nil || target != filepath.Join(etc, "mime.types") {
		t.Errorf("mime.types links to %q (%v)", target, err)
	}
	wantCheck := []string{"/usr/sbin/nginx", "-c", filepath.Join(staged, "nginx.conf"), "-p", "/usr/share/nginx", "-T", "-g", "worker_processes 2;"}
	if got := n.CheckArgv(g); !reflect.DeepEqual(got, wantCheck) {
		t.Errorf("CheckArgv = %q, want %q", got, wantCheck)
	}
	launch, sess, err := n.Prepare(g)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	wantRun := []string{"/usr/sbin/nginx", "-c", filepath.Join(staged, "nginx.conf"), "-p", "/usr/share/nginx", "-g", "worker_processes 2;"}
	if !reflect.DeepEqual(launch.Argv, wantRun) {
		t.Errorf("Argv = %q, want %q", launch.Argv, wantRun)
	}
	pf, ok := sess.(PidFiler)
	if !ok {
		t.Fatal("the nginx session names no pid file")
	}
	if p, err := pf.PidFile(); p != "/run/nginx.pid" || err != nil {
		t.Errorf("PidFile = %q, %v; want /run/nginx.pid", p, err)
	}

	// Without a pid directive in the main file: the copy has none, the
	// check runs without one, the generation gets it through -g, and no
	// user pid file is written.
	if err := os.WriteFile(snap, []byte("worker_processes 1;\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := n.StageConfig(g); err != nil {
		t.Fatal(err)
	}
	if got := n.CheckArgv(g); !reflect.DeepEqual(got, wantCheck) {
		t.Errorf("no pid: CheckArgv = %q, want %q", got, wantCheck)
	}
	launch2, sess2, err := n.Prepare(g)
	if err != nil {
		t.Fatal(err)
	}
	defer sess2.Close()
	wantRun2 := append(wantRun[:len(wantRun)-1:len(wantRun)-1], "pid "+filepath.Join(gdir, "nginx.pid")+"; worker_processes 2;")
	if !reflect.DeepEqual(launch2.Argv, wantRun2) {
		t.Errorf("no pid: Argv = %q, want %q", launch2.Argv, wantRun2)
	}
	if p, _ := sess2.(PidFiler).PidFile(); p != "" {
		t.Errorf("no pid: PidFile = %q, want none", p)
	}
}

// nginx resolves a relative -c against its prefix, and with no -c reads
// its compiled-in config path.
func TestNginxPaths(t *testing.T) {
	conf, prefix, err := nginxPaths("/nonexistent/nginx", []string{"-p", "/srv/ngx/", "-c", "conf/n.conf"})
	if err != nil || conf != "/srv/ngx/conf/n.conf" || prefix != "/srv/ngx/" {
		t.Errorf("relative -c with -p: %q %q %v", conf, prefix, err)
	}
	if _, _, err := nginxPaths("/nonexistent/nginx", []string{"-c", "n.conf"}); err == nil {
		t.Errorf("relative -c without -p or nginx -V: no error")
	}
	bin := batontest.RequireBinary(t, "nginx")
	conf, _, err = nginxPaths(bin, nil)
	if err != nil || !filepath.IsAbs(conf) || filepath.Base(conf) != "nginx.conf" {
		t.Errorf("%s without -c: config %q, %v", bin, conf, err)
	}
}
