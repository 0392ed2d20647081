package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// listenTarget is a proxy whose config declares its listeners: a config
// with one listener per port (a /slow path forwarded to slowPort) and the
// command line that runs it.
type listenTarget struct {
	name    string
	config  func(ports []int, version, slowPort int) string
	command func(cfg string) []string
}

func haproxyListenTarget(t *testing.T) listenTarget {
	bin := batontest.RequireBinary(t, "haproxy")
	return listenTarget{
		name: "haproxy",
		config: func(ports []int, v, slow int) string {
			var b strings.Builder
			b.WriteString("global\n    maxconn 1000\n    httpclient.ssl.verify none\n\n")
			b.WriteString("resolvers default\n    nameserver local 127.0.0.1:53\n\n")
			b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\nfrontend fe\n")
			for _, p := range ports {
				fmt.Fprintf(&b, "    bind 127.0.0.1:%d\n", p)
			}
			fmt.Fprintf(&b, "    http-request return status 200 content-type text/plain hdr X-Gen %d string \"generation %d\\n\" unless { path_beg /slow }\n", v, v)
			fmt.Fprintf(&b, "    http-response set-header X-Gen %d\n    default_backend slow\n\nbackend slow\n    server s1 127.0.0.1:%d\n", v, slow)
			return b.String()
		},
		command: func(cfg string) []string { return []string{bin, "-f", cfg} },
	}
}

func nginxListenTarget(t *testing.T) listenTarget {
	bin := batontest.RequireBinary(t, "nginx")
	return listenTarget{
		name: "nginx",
		config: func(ports []int, v, slow int) string {
			var b strings.Builder
			b.WriteString("worker_processes 2;\nerror_log stderr warn;\nevents { worker_connections 1024; }\n")
			b.WriteString("http {\n    access_log off;\n    keepalive_timeout 30s;\n    server {\n")
			for _, p := range ports {
				fmt.Fprintf(&b, "        listen 127.0.0.1:%d;\n", p)
			}
			fmt.Fprintf(&b, "        location /slow { add_header X-Gen %d always; proxy_pass http://127.0.0.1:%d; }\n", v, slow)
			fmt.Fprintf(&b, "        location / { add_header X-Gen %d always; return 200 \"generation %d\\n\"; }\n    }\n}\n", v, v)
			return b.String()
		},
		command: func(cfg string) []string { return []string{bin, "-e", "stderr", "-c", cfg} },
	}
}

func TestConfigListenersHAProxy(t *testing.T) { configListeners(t, haproxyListenTarget(t)) }
func TestConfigListenersNginx(t *testing.T)   { configListeners(t, nginxListenTarget(t)) }

// configListeners guards docs/design.md's invariant 7 with the listeners taken from the
// proxy's config (baton run without --listen): one LISTEN socket per
// address, baton's, kept over 100 reloads under load with nothing lost; a
// reload that adds an address serves it on a new socket; one that removes
// it closes baton's socket once the old generation, which still serves a
// request, has exited.
func configListeners(t *testing.T, tg listenTarget) {
	slow := batontest.StartSlowBackend(t, 30*time.Second)
	ports := []int{batontest.FreePort(t), batontest.FreePort(t)}
	cfg := filepath.Join(batontest.ShortTempDir(t), tg.name+".conf")
	text := tg.config(ports, 1, slow.Port)
	writeConf(t, cfg, text)
	b := batontest.StartBaton(t, append([]string{"--"}, tg.command(cfg)...), batontest.StartOptions{})

	inodes := map[int]uint64{}
	for _, port := range ports {
		inodes[port] = ownedListener(t, b, port)
		where := fmt.Sprintf("%s:%d", cfg, lineOf(t, text, fmt.Sprintf("127.0.0.1:%d", port)))
		if lines := batontest.LogLines(b.Log(), "listener bound", fmt.Sprintf("127.0.0.1:%d", port), where); len(lines) != 1 {
			t.Errorf("baton's log has %d \"listener bound\" lines for port %d declared at %s, want 1", len(lines), port, where)
		}
		t.Logf("port %d: one LISTEN socket, baton's, inode %d, declared at %s", port, inodes[port], where)
	}
	if st, _ := b.Status(); len(st.Listeners) != 2 {
		t.Errorf("status lists %d listeners, want 2", len(st.Listeners))
	}

	const reloads = 100
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	lr := startLoad(t, addr, load.NewConn, 8, 3*time.Minute, 400)
	start := time.Now()
	for i := range reloads {
		writeConf(t, cfg, tg.config(ports, i+2, slow.Port))
		if res := b.CLI("reload"); res.Code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i+1, res.Code, res.Stderr)
		}
	}
	r := lr.stop(t)
	t.Logf("%d reloads in %s under load: %s", reloads, time.Since(start).Round(time.Millisecond), r.Summary())
	if r.Failed > 0 || r.Counts[load.OK] == 0 {
		t.Errorf("%d failed requests (want 0), %d ok: %v", r.Failed, r.Counts[load.OK], r.Failures(5))
	}
	for _, port := range ports {
		if in := ownedListener(t, b, port); in != inodes[port] {
			t.Errorf("port %d: inode %d after %d reloads, want %d", port, in, reloads, inodes[port])
		}
	}

	// A reload that adds an address: a new socket, baton's, answered.
	added := batontest.FreePort(t)
	writeConf(t, cfg, tg.config(append(slices.Clone(ports), added), 500, slow.Port))
	if res := b.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload adding port %d: exit %d: %s", added, res.Code, res.Stderr)
	}
	inAdded := ownedListener(t, b, added)
	if inAdded == inodes[ports[0]] || inAdded == inodes[ports[1]] {
		t.Errorf("added port %d shares inode %d", added, inAdded)
	}
	addedAddr := fmt.Sprintf("127.0.0.1:%d", added)
	if g := batontest.HTTPGet(addedAddr, "/", 5*time.Second); g.Err != nil || g.Status != 200 || g.Gen != "500" {
		t.Fatalf("GET on the added port %d: status %d gen %q err %v", added, g.Status, g.Gen, g.Err)
	}
	t.Logf("added port %d: inode %d, answered by version 500", added, inAdded)

	// A request held on the added port keeps its generation alive past the
	// reload that removes the port.
	held := make(chan batontest.HTTPResult, 1)
	go func() { held <- batontest.HTTPGet(addedAddr, "/slow", 30*time.Second) }()
	if err := slow.WaitSlow(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	writeConf(t, cfg, tg.config(ports, 501, slow.Port))
	if res := b.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload removing port %d: exit %d: %s", added, res.Code, res.Stderr)
	}
	st, err := b.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Generations) < 2 {
		t.Errorf("the old generation is gone while it serves a request: %+v", st.Generations)
	}
	if socks, _ := batontest.ListenSockets(added); len(socks) != 1 || socks[0] != inAdded || !batonHolds(t, b, inAdded) {
		t.Errorf("port %d while the old generation drains: LISTEN sockets %v, want baton's %d still open", added, socks, inAdded)
	}
	for _, l := range st.Listeners {
		if strings.HasSuffix(l.Addr, fmt.Sprint(":", added)) {
			t.Errorf("status still lists the removed listener %s", l.Addr)
		}
	}
	slow.Release()
	if res := <-held; res.Err != nil || res.Status != 200 {
		t.Errorf("held request on the removed port: status %d err %v", res.Status, res.Err)
	}
	batontest.Eventually(t, 20*time.Second, func() error {
		socks, err := batontest.ListenSockets(added)
		if err != nil || len(socks) > 0 || batonHolds(t, b, inAdded) {
			return fmt.Errorf("port %d: LISTEN sockets %v (%v), baton holds %d: %t", added, socks, err, inAdded, batonHolds(t, b, inAdded))
		}
		return nil
	})
	t.Logf("removed port %d: closed after the old generation exited", added)
	for _, port := range ports {
		if in := ownedListener(t, b, port); in != inodes[port] {
			t.Errorf("port %d: inode %d at the end, want %d", port, in, inodes[port])
		}
	}
	if g := batontest.HTTPGet(addr, "/", 5*time.Second); g.Err != nil || g.Gen != "501" {
		t.Errorf("GET %s at the end: gen %q err %v, want 501", addr, g.Gen, g.Err)
	}
}

// ownedListener asserts that port has exactly one LISTEN socket and that
// baton holds it, and returns its inode.
func ownedListener(t *testing.T, b *batontest.Baton, port int) uint64 {
	t.Helper()
	socks, err := batontest.ListenSockets(port)
	if err != nil || len(socks) != 1 {
		t.Fatalf("port %d: LISTEN sockets %v (%v), want one", port, socks, err)
	}
	if !batonHolds(t, b, socks[0]) {
		t.Fatalf("port %d: socket inode %d is not in /proc/%d/fd (baton)", port, socks[0], b.Pid())
	}
	return socks[0]
}

func batonHolds(t *testing.T, b *batontest.Baton, inode uint64) bool {
	t.Helper()
	fds, err := socketFds(b.Pid(), inode)
	if err != nil {
		t.Fatal(err)
	}
	return len(fds) > 0
}

func TestListenUncoveredRefusedHAProxy(t *testing.T) {
	listenUncoveredRefused(t, haproxyListenTarget(t))
}
func TestListenUncoveredRefusedNginx(t *testing.T) { listenUncoveredRefused(t, nginxListenTarget(t)) }

// listenUncoveredRefused: with --listen, a config address it does not cover
// is refused at the config check, in under a second, naming file and line:
// `baton run` exits leaving no proxy and no control socket, run directory or
// state file; `baton reload` fails and the serving generation carries on.
func listenUncoveredRefused(t *testing.T, tg listenTarget) {
	bin := batontest.BatonBinary(t) // built before anything is timed
	slow := batontest.StartSlowBackend(t, time.Second)
	covered, other := batontest.FreePort(t), batontest.FreePort(t)
	cfg := filepath.Join(batontest.ShortTempDir(t), tg.name+".conf")
	text := tg.config([]int{covered, other}, 1, slow.Port)
	writeConf(t, cfg, text)
	where := fmt.Sprintf("%s:%d", cfg, lineOf(t, text, fmt.Sprintf("127.0.0.1:%d", other)))
	listen := fmt.Sprintf("tcp://127.0.0.1:%d", covered)

	t.Run("run", func(t *testing.T) {
		start := time.Now()
		b := batontest.StartBaton(t, append([]string{"-l", listen, "--"}, tg.command(cfg)...), batontest.StartOptions{NoWait: true, Exec: bin})
		code, err := b.ExitCode(10 * time.Second)
		took := time.Since(start)
		t.Logf("baton run: exit %d after %s: %s", code, took.Round(time.Millisecond), strings.TrimSpace(b.LogTail(1)))
		if err != nil || code != 1 {
			t.Fatalf("exit %d (%v), want 1", code, err)
		}
		if took > checkTookBound { // the figure is logged; the bound catches a wait for a timeout
			t.Errorf("refused after %s, want under %s", took, checkTookBound)
		}
		if lines := batontest.LogLines(b.Log(), "first generation failed", where, "--listen"); len(lines) != 1 {
			t.Errorf("the error does not name %s and --listen:\n%s", where, b.LogTail(5))
		}
		if left := procsWithArg(t, cfg); len(left) > 0 {
			t.Errorf("processes left running %s: %v", cfg, left)
		}
		for _, p := range []string{b.Control, b.Control + ".d", b.Control + ".state"} {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s left behind (%v)", p, err)
			}
		}
	})

	t.Run("reload", func(t *testing.T) {
		writeConf(t, cfg, tg.config([]int{covered}, 1, slow.Port))
		b := batontest.StartBaton(t, append([]string{"-l", listen, "--"}, tg.command(cfg)...), batontest.StartOptions{Exec: bin})
		before, _ := b.Status()
		gen, pid := before.Active()
		writeConf(t, cfg, tg.config([]int{covered, other}, 2, slow.Port))
		res := b.CLI("reload")
		t.Logf("baton reload: exit %d after %s: %s", res.Code, res.Took.Round(time.Millisecond), strings.TrimSpace(res.Stderr))
		if res.Code != 1 || !strings.Contains(res.Stderr, where) {
			t.Errorf("exit %d, stderr lacks %s", res.Code, where)
		}
		if res.Took > checkTookBound { // the figure is logged; the bound catches a wait for a timeout
			t.Errorf("refused after %s, want under %s", res.Took, checkTookBound)
		}
		after, _ := b.Status()
		if g, p := after.Active(); g != gen || p != pid || len(after.Generations) != 1 {
			t.Errorf("after the refused reload: active %d pid %d (%d generations), want the untouched %d pid %d", g, p, len(after.Generations), gen, pid)
		}
		if g := batontest.HTTPGet(fmt.Sprintf("127.0.0.1:%d", covered), "/", 5*time.Second); g.Err != nil || g.Gen != "1" {
			t.Errorf("GET after the refused reload: gen %q err %v, want 1", g.Gen, g.Err)
		}
	})
}

// procsWithArg lists the processes whose command line mentions arg.
func procsWithArg(t *testing.T, arg string) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); err == nil && strings.Contains(string(b), arg) {
			out = append(out, pid)
		}
	}
	return out
}
