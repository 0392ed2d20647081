package proxyctl

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
)

// bigNginxDump is an `nginx -T` dump of about size bytes: a main file and
// one included file of server blocks (the bulk), as nginx prints them. It
// returns the dump and the number of server blocks, each of which has one
// listen directive on addr.
func bigNginxDump(size int, addr string) (string, int) {
	var b strings.Builder
	b.Grow(size + 4096)
	b.WriteString("# configuration file /etc/nginx/nginx.conf:\n")
	b.WriteString("worker_processes 2;\nevents { worker_connections 1024; }\nhttp {\n    include /etc/nginx/sites.conf;\n}\n\n")
	b.WriteString("# configuration file /etc/nginx/sites.conf:\n")
	n := 0
	for b.Len() < size {
		fmt.Fprintf(&b, "server {\n    listen %s;\n    server_name h%d.example.com www.h%d.example.com;\n"+
			"    location / { return 200 \"site %d;{}#\\n\"; }\n"+
			"    location /api { proxy_pass http://127.0.0.1:9%03d; proxy_set_header Host $host; } # api\n}\n",
			addr, n, n, n, n%1000)
		n++
	}
	b.WriteString("\n")
	return b.String(), n
}

// The dump of a 5 MB config is read linearly: bytes allocated while
// parsing and checking it stay within a small multiple of its size
// (appending each line to its file's text copied the text again for every
// line: quadratic, 108 s for a 4.5 MB dump). The time is logged, not
// asserted (see BenchmarkNginxDump).
func TestNginxDumpParseLinear(t *testing.T) {
	const addr = "127.0.0.1:8080"
	dump, servers := bigNginxDump(5<<20, addr)
	passed := []Listener{{Spec: fdpass.Spec{Scheme: fdpass.TCP4, Addr: addr}, Backlog: 511}}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	// What a reload's check does: the listeners (ConfigListeners), then
	// the pid, listen, reuseport and backlog checks (CheckOutput).
	ds, err := parseNginxDump(dump, "listen")
	if err == nil {
		err = checkNginxDump(dump, passed, "", "")
	}
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	listens := 0
	for _, d := range ds {
		if d.Name == "listen" {
			listens++
		}
	}
	if listens != servers {
		t.Errorf("%d listen directives seen, want %d (one per server block)", listens, servers)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("dump of %d bytes, %d server blocks: parsed twice and checked in %v, %d MB allocated", len(dump), servers, took, alloc>>20)
	if limit := uint64(10 * len(dump)); alloc > limit {
		t.Errorf("parsing a %d-byte dump allocated %d bytes, over %d: not linear", len(dump), alloc, limit)
	}
}

// BenchmarkNginxDump parses and checks dumps of the sizes the incident
// named (650 KB, 4.5 MB) and of the acceptance figure (5 MB).
func BenchmarkNginxDump(b *testing.B) {
	const addr = "127.0.0.1:8080"
	passed := []Listener{{Spec: fdpass.Spec{Scheme: fdpass.TCP4, Addr: addr}, Backlog: 511}}
	for _, size := range []int{650_000, 4_500_000, 5_000_000} {
		dump, _ := bigNginxDump(size, addr)
		b.Run(fmt.Sprintf("%dKB", size/1000), func(b *testing.B) {
			b.SetBytes(int64(len(dump)))
			for b.Loop() {
				if err := checkNginxDump(dump, passed, "", ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// nginx -T prints a line over 64 KiB as it is, and the check reads past
// it: a `listen ... reuseport` at the end of an 85 KB line, and one on the
// line after another 85 KB line, are both refused with their file and line.
// (nginx refuses a single token over 4 KB, comments included: the long
// lines are many short tokens.)
func TestCheckNginxDumpLongLinesRealNginx(t *testing.T) {
	bin := batontest.RequireBinary(t, "nginx")
	dir := t.TempDir()
	conf := filepath.Join(dir, "nginx.conf")
	names := strings.Repeat(" a-rather-long-server-name.example.com", 85<<10/38)
	writeFile(t, conf, "worker_processes 1;\nerror_log stderr warn;\nevents { worker_connections 64; }\n"+
		"http {\n    access_log off;\n    server_names_hash_bucket_size 128;\n"+
		"    log_format long"+strings.Repeat(" '$remote_addr'", 85<<10/15)+";\n"+
		"    server { server_name"+names+"; listen 127.0.0.1:18090 reuseport; }\n"+
		"    server { listen 127.0.0.1:18091 reuseport; }\n"+
		"}\n")
	out, err := exec.Command(bin, "-T", "-c", conf, "-e", "stderr", "-g", "pid "+filepath.Join(dir, "x.pid")+";").CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -T: %v\n%.2000s", err, out)
	}
	longest := 0
	for _, l := range strings.Split(string(out), "\n") {
		longest = max(longest, len(l))
	}
	ls := []Listener{testListener(t, "tcp://127.0.0.1:18090", 511), testListener(t, "tcp://127.0.0.1:18091", 511)}
	err = checkNginxDump(string(out), ls, "", "")
	t.Logf("dump of %d bytes, longest line %d bytes", len(out), longest)
	if longest < 85<<10 {
		t.Errorf("nginx -T printed no line of 85 KB")
	}
	for _, where := range []string{conf + ":8: listen 127.0.0.1:18090 reuseport", conf + ":9: listen 127.0.0.1:18091 reuseport"} {
		if err == nil || !strings.Contains(err.Error(), where) {
			t.Errorf("check: %.300v; want it to refuse %s", err, where)
		}
	}
}

// A refusal repeated in every one of 4,000 server blocks is reported
// with its first lines and a count, not as megabytes of error.
func TestNginxDumpManyRefusals(t *testing.T) {
	dump, servers := bigNginxDump(1<<20, "127.0.0.1:9999")
	err := checkNginxDump(dump, nil, "", "")
	if err == nil {
		t.Fatal("uncovered listen directives accepted")
	}
	lines := strings.Count(err.Error(), "\n") + 1
	t.Logf("%d refusals reported in %d lines, %d bytes", servers, lines, len(err.Error()))
	if lines != maxRefusals+1 || !strings.HasSuffix(err.Error(), fmt.Sprintf("and %d more like these", servers-maxRefusals)) {
		t.Errorf("error of %d lines ending %q", lines, err.Error()[max(0, len(err.Error())-60):])
	}
	_, err = (&Nginx{}).ConfigListeners(GenSpec{}, strings.ReplaceAll(dump, "127.0.0.1:9999", "localhost:80"))
	if lines := strings.Count(err.Error(), "\n") + 1; lines != maxRefusals+1 || !errors.Is(err, ErrListenerRefused) {
		t.Errorf("ConfigListeners: error of %d lines (%v)", lines, errors.Is(err, ErrListenerRefused))
	}
}
