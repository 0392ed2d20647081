package proxyctl

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/batonproxy/baton/batontest"
)

// writeTree writes files (path relative to dir → content).
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// nginxTree is a config that uses what nginx's include does: a relative
// plain path, a glob (sorted; a dot file not matched), a nested include, a
// file included twice, an absolute path, and an include inside a block.
func nginxTree(dir string) map[string]string {
	return map[string]string{
		"nginx.conf": "worker_processes 1;\nerror_log stderr;\nevents { worker_connections 64; }\n" +
			"http {\n    include mime.types;\n    include conf.d/*.conf;\n    include " + filepath.Join(dir, "abs/extra.conf") + ";\n" +
			"    server { listen 127.0.0.1:1; include snippets/common.conf; }\n}\n",
		"mime.types":           "types { text/html html; }\n",
		"conf.d/b.conf":        "server { listen 127.0.0.1:3; include snippets/common.conf; }\n",
		"conf.d/a.conf":        "server {\n    listen 127.0.0.1:2 backlog=511;\n}\n",
		"conf.d/.hidden.conf":  "server { listen 127.0.0.1:4; }\n",
		"conf.d/notme.txt":     "this is not included\n",
		"snippets/common.conf": "location / { return 200; }\n",
		"abs/extra.conf":       "server { listen 127.0.0.1:5 reuseport; }\n",
	}
}

// TestReadNginxConfigMatchesNginxT: what baton reads of a config by itself
// has the directives, files and lines of nginx -T's dump of it.
func TestReadNginxConfigMatchesNginxT(t *testing.T) {
	nginx := batontest.RequireBinary(t, "nginx")
	dir := t.TempDir()
	writeTree(t, dir, nginxTree(dir))
	main := filepath.Join(dir, "nginx.conf")
	out, err := exec.Command(nginx, "-T", "-c", main, "-g", "pid "+filepath.Join(dir, "nginx.pid")+";").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -T: %v\n%s", err, out)
	}
	want, err := parseNginxDump(string(out))
	if err != nil {
		t.Fatal(err)
	}
	dump, err := readNginxConfig(main)
	if err != nil {
		t.Fatal(err)
	}
	got, err := parseNginxDump(dump)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("baton's reading differs from nginx -T:\n got %v\nwant %v\nnginx -T:\n%s\nbaton:\n%s", got, want, out, dump)
	}
	for _, not := range []string{".hidden.conf", "notme.txt"} {
		if strings.Contains(dump, not) {
			t.Errorf("baton read %s, which nginx does not include", not)
		}
	}
}

// TestReadNginxConfigGivesUp: what baton cannot read by itself is an error
// (the caller then runs nginx -T, whose message the user sees).
func TestReadNginxConfigGivesUp(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{
		"missing": "include nothere.conf;\n",
		"twoargs": "include a b;\n",
		"device":  "include /dev/zero;\n",
	} {
		p := filepath.Join(dir, name+".conf")
		writeTree(t, dir, map[string]string{name + ".conf": text})
		if _, err := readNginxConfig(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// A glob that matches nothing is fine, as in nginx.
	writeTree(t, dir, map[string]string{"empty.conf": "include none/*.conf;\n"})
	if _, err := readNginxConfig(filepath.Join(dir, "empty.conf")); err != nil {
		t.Errorf("a glob matching nothing: %v", err)
	}
}
