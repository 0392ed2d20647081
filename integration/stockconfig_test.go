package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// stockReloads is how many `baton reload`s each stock-config test makes:
// 100 in the version matrix (BATON_MATRIX=1, which runs Debian's proxies
// too), 25 in a plain `make test`, which keeps within its time budget.
func stockReloadCount() int {
	if os.Getenv("BATON_MATRIX") == "1" {
		return 100
	}
	return 25
}

// requireStockFile returns the distribution's stock config file at path:
// missing, it skips the test, or fails it under CI.
func requireStockFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v (CI is set: `make test` installs the package)", path, err)
		}
		t.Skipf("%s: %v", path, err)
	}
	return string(data)
}

// replaceAll replaces every old by new in text; old must occur.
func replaceAll(t *testing.T, text, old, new string) string {
	t.Helper()
	if !strings.Contains(text, old) {
		t.Fatalf("stock config has no %q", old)
	}
	return strings.ReplaceAll(text, old, new)
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := batontest.WriteFileAtomic(path, []byte(text)); err != nil {
		t.Fatal(err)
	}
}

// readPid reads a pid file; 0 and the error when it is missing or bad.
func readPid(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	if !strings.HasSuffix(string(data), "\n") {
		return 0, fmt.Errorf("%s: %q does not end in a newline", path, data)
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// stockLoad runs 16 new-connection clients, at most 1000 requests/s in all.
func stockLoad(t *testing.T, addr string) *loadRun {
	return startLoad(t, addr, load.NewConn, 16, 5*time.Minute, 1000)
}

func reportLoad(t *testing.T, name string, r *load.Result, stockReloads int) {
	t.Logf("%s: %d requests, %d failed, %d reloads; classes %v", name, r.Total, r.Failed, stockReloads, r.Counts)
	compatFigure(t, "%d reloads under load: %d requests, %d failed", stockReloads, r.Total, r.Failed)
	if r.Failed != 0 {
		n := 0
		for _, s := range r.Samples {
			if s.Class != load.OK && n < 10 {
				t.Logf("failed: %+v", s)
				n++
			}
		}
		t.Errorf("%s: %d of %d requests failed, want 0", name, r.Failed, r.Total)
	}
	if r.Total == 0 {
		t.Errorf("%s: no requests completed", name)
	}
}

// TestNginxStockConfig runs Debian's stock /etc/nginx/nginx.conf, which
// has `pid /run/nginx.pid;`, under baton: only its paths are changed (the
// /etc/nginx/ prefix of its includes removed, so that they are relative to
// the config file's directory and go through the links beside baton's
// copy; the pid and log paths moved to a temporary directory). Under load,
// after each of 100 reloads (25 outside the version matrix), the user's pid file holds the serving
// generation's master pid, each generation has a pid file of its own, and
// no request fails; at baton's exit the user's pid file is gone.
func TestNginxStockConfig(t *testing.T) {
	stockReloads := stockReloadCount()
	nginx := batontest.RequireBinary(t, "nginx")
	stock := requireStockFile(t, "/etc/nginx/nginx.conf")
	port := batontest.FreePort(t)
	dir := batontest.ShortTempDir(t)
	etc := filepath.Join(dir, "etc")
	userPid := filepath.Join(dir, "run", "nginx.pid")
	if err := os.MkdirAll(filepath.Dir(userPid), 0o755); err != nil {
		t.Fatal(err)
	}
	text := replaceAll(t, stock, "pid /run/nginx.pid;", "pid "+userPid+";")
	text = replaceAll(t, text, "/var/log/nginx/", filepath.Join(dir, "log")+"/")
	text = replaceAll(t, text, "include /etc/nginx/", "include ")
	if strings.Contains(text, "/etc/nginx") {
		t.Fatalf("the copy still names /etc/nginx:\n%s", text)
	}
	conf := filepath.Join(etc, "nginx.conf")
	writeFile(t, conf, text)
	mime, err := os.ReadFile("/etc/nginx/mime.types")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(etc, "mime.types"), string(mime))
	for _, d := range []string{"modules-enabled", "conf.d", "log"} { // no Debian dynamic modules: BATON_NGINX may be another build
		if err := os.MkdirAll(filepath.Join(etc, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "log"), 0o755); err != nil {
		t.Fatal(err)
	}
	site := func(v int) {
		writeFile(t, filepath.Join(etc, "sites-enabled", "default"), fmt.Sprintf(
			"server {\n\tlisten 127.0.0.1:%d;\n\tlocation / { add_header X-Gen %d always; return 200 \"generation %d\\n\"; }\n}\n", port, v, v))
	}
	site(1)

	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b := batontest.StartBaton(t, []string{"-l", "tcp://" + addr, "--drain-timeout", "30s", "--", nginx, "-c", conf}, batontest.StartOptions{})
	genPids := map[string]int{} // each generation's own pid file → its master
	check := func(when string, gen, pid int) {
		t.Helper()
		st, err := b.Status()
		if err != nil {
			t.Fatalf("%s: status: %v", when, err)
		}
		if g, p := st.Active(); g != gen || p != pid {
			t.Fatalf("%s: status shows generation %d (pid %d) active, want %d (pid %d)", when, g, p, gen, pid)
		}
		got, err := readPid(userPid)
		if err != nil || got != pid {
			t.Fatalf("%s: user's pid file %s: %d, %v; want the serving master %d", when, userPid, got, err, pid)
		}
		own := filepath.Join(b.Control+".d", strconv.Itoa(gen), "nginx.pid")
		if got, err := readPid(own); err != nil || got != pid {
			t.Fatalf("%s: generation %d's pid file %s: %d, %v; want %d", when, gen, own, got, err, pid)
		}
		if prev, seen := genPids[own]; seen && prev != pid {
			t.Fatalf("%s: pid file %s shared by masters %d and %d", when, own, prev, pid)
		}
		genPids[own] = pid
	}
	gen, pid := b.WaitActive(10 * time.Second).Active()
	check("first generation", gen, pid)

	lr := stockLoad(t, addr)
	warm := time.NewTimer(500 * time.Millisecond)
	<-warm.C
	for i := range stockReloads {
		site(i + 2)
		gen, pid := reloadJSON(t, b)
		check(fmt.Sprintf("reload %d", i+1), gen, pid)
	}
	res := lr.stop(t)
	reportLoad(t, "nginx stock config", res, stockReloads)
	compatFigure(t, "pid file named the serving master after the first start and each of %d reloads; %d distinct generation pid files", stockReloads, len(genPids))
	if len(genPids) != stockReloads+1 {
		t.Errorf("%d distinct generation pid files, want %d", len(genPids), stockReloads+1)
	}
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Err != nil || r.Gen != strconv.Itoa(stockReloads+1) {
		t.Errorf("after the reloads: X-Gen %q, err %v; want %d", r.Gen, r.Err, stockReloads+1)
	}

	if err := b.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code, err := b.ExitCode(40 * time.Second); err != nil || code != 0 {
		t.Fatalf("baton exit: %d, %v", code, err)
	}
	if _, err := os.Stat(userPid); !os.IsNotExist(err) {
		t.Errorf("user's pid file %s after baton exited: %v, want it removed", userPid, err)
	}
}

// TestHAProxyStockConfig runs Debian's stock /etc/haproxy/haproxy.cfg
// (daemon, chroot, user and group haproxy, a stats socket, log lines) under
// baton, with its stats socket moved to a temporary directory and a
// loopback resolvers section and a frontend added: 100 reloads under load (25 outside the version matrix),
// no request fails.
func TestHAProxyStockConfig(t *testing.T) {
	stockReloads := stockReloadCount()
	haproxy := batontest.RequireBinary(t, "haproxy")
	stock := requireStockFile(t, "/etc/haproxy/haproxy.cfg")
	port := batontest.FreePort(t)
	dir := batontest.ShortTempDir(t)
	text := replaceAll(t, stock, "/run/haproxy/admin.sock", filepath.Join(dir, "admin.sock"))
	cfg := filepath.Join(dir, "haproxy.cfg")
	write := func(v int) {
		writeFile(t, cfg, text+fmt.Sprintf(
			"\nresolvers default\n    nameserver local 127.0.0.1:53\n"+
				"\nfrontend fe\n    bind 127.0.0.1:%d\n"+
				"    http-request return status 200 content-type text/plain hdr X-Gen \"%d\" string \"generation %d\\n\"\n", port, v, v))
	}
	write(1)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	b := batontest.StartBaton(t, []string{"-l", "tcp://" + addr, "--drain-timeout", "30s", "--", haproxy, "-f", cfg}, batontest.StartOptions{})
	b.WaitActive(10 * time.Second)

	lr := stockLoad(t, addr)
	warm := time.NewTimer(500 * time.Millisecond)
	<-warm.C
	for i := range stockReloads {
		write(i + 2)
		reloadJSON(t, b)
	}
	res := lr.stop(t)
	reportLoad(t, "haproxy stock config", res, stockReloads)
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Err != nil || r.Gen != strconv.Itoa(stockReloads+1) {
		t.Errorf("after the reloads: X-Gen %q, err %v; want %d", r.Gen, r.Err, stockReloads+1)
	}
}
