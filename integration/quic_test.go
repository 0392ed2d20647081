package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/doctor"
)

// quicTarget is a proxy serving HTTP/1.1 on a TCP port and HTTP/3 on a
// UDP port, both listeners taken from its config.
type quicTarget struct {
	name    string
	config  func(tcp, udp, version, slow int) string
	command []string // without the config path
	// perConn: the proxy gives each QUIC connection a socket of its own,
	// bound to the listener's address beside baton's (HAProxy); without
	// it (nginx) a connection's packets reach the generation's member,
	// steered there by the cookie in its connection IDs.
	perConn bool
}

func haproxyQUICTarget(t *testing.T, dir string) quicTarget {
	bin := requireQUIC(t, "haproxy")
	_, _, both := quicCert(t, dir)
	return quicTarget{
		name: "haproxy",
		config: func(tcp, udp, v, slow int) string {
			var b strings.Builder
			b.WriteString("global\n    maxconn 1000\n    limited-quic\n\n")
			b.WriteString("resolvers default\n    nameserver ns1 127.0.0.1:53\n\n")
			b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n\nfrontend fe\n")
			fmt.Fprintf(&b, "    bind 127.0.0.1:%d\n", tcp)
			fmt.Fprintf(&b, "    bind quic4@127.0.0.1:%d ssl crt %s alpn h3\n", udp, both)
			fmt.Fprintf(&b, "    http-request return status 200 content-type text/plain hdr X-Gen %d string \"generation %d\\n\" unless { path_beg /slow }\n", v, v)
			fmt.Fprintf(&b, "    http-response set-header X-Gen %d\n    default_backend slow\n\nbackend slow\n    server s1 127.0.0.1:%d\n", v, slow)
			return b.String()
		},
		command: []string{bin, "-f"},
		perConn: true,
	}
}

func nginxQUICTarget(t *testing.T, dir string) quicTarget {
	bin := requireQUIC(t, "nginx")
	cert, key, _ := quicCert(t, dir)
	return quicTarget{
		name: "nginx",
		config: func(tcp, udp, v, slow int) string {
			var b strings.Builder
			// One worker: nginx's workers would share the generation's
			// one member, and a packet read by another worker than its
			// connection's is lost (docs/design.md).
			b.WriteString("worker_processes 1;\nerror_log stderr warn;\nevents { worker_connections 1024; }\n")
			// keepalive_timeout is also the QUIC idle timeout: an old
			// generation lingers until it when a client's last packets
			// (its CONNECTION_CLOSE) were read by the new generation.
			b.WriteString("http {\n    access_log off;\n    keepalive_timeout 5s;\n    server {\n")
			fmt.Fprintf(&b, "        listen 127.0.0.1:%d;\n        listen 127.0.0.1:%d quic;\n", tcp, udp)
			fmt.Fprintf(&b, "        ssl_certificate %s;\n        ssl_certificate_key %s;\n", cert, key)
			fmt.Fprintf(&b, "        location /slow { add_header X-Gen %d always; proxy_pass http://127.0.0.1:%d; }\n", v, slow)
			fmt.Fprintf(&b, "        location / { add_header X-Gen %d always; return 200 \"generation %d\\n\"; }\n    }\n}\n", v, v)
			return b.String()
		},
		command: []string{bin, "-e", "stderr", "-c"},
	}
}

func TestQUICListenerHAProxy(t *testing.T) {
	dir := batontest.ShortTempDir(t)
	quicListener(t, haproxyQUICTarget(t, dir), dir)
}

func TestQUICListenerNginx(t *testing.T) {
	dir := batontest.ShortTempDir(t)
	quicListener(t, nginxQUICTarget(t, dir), dir)
}

// quicListener: a QUIC (HTTP/3) listener in the proxy's config is a
// steered UDP address (docs/design.md, "UDP and QUIC listeners"): baton
// binds an anchor it keeps and one member per generation, every
// unconnected UDP socket on the address is baton's, and an HTTP/3 request
// is answered. After a reload the new generation answers over HTTP/3, the
// old generation's member goes when it exits, the anchor and the TCP
// listener are unchanged. A QUIC connection left idle and a request held
// across a reload do not delay its acknowledgement (a draining generation
// receives only its own connections' packets), and the held request is
// answered by the old generation. For HAProxy, a live QUIC connection has
// a socket of its own bound beside baton's (what SO_REUSEADDR on baton's
// sockets allows).
func quicListener(t *testing.T, tg quicTarget, dir string) {
	slow := batontest.StartSlowBackend(t, 30*time.Second)
	tcp, udp := batontest.FreePort(t), freeUDPPort(t)
	cfg := filepath.Join(dir, tg.name+".conf")
	writeConf(t, cfg, tg.config(tcp, udp, 1, slow.Port))
	b := batontest.StartBaton(t, append(append([]string{"--"}, tg.command...), cfg), batontest.StartOptions{})

	udpInode, tcpInode := ownedUDPListener(t, b, udp, 2), ownedListener(t, b, tcp)
	if st, _ := b.Status(); len(st.Listeners) != 2 {
		t.Errorf("status lists %d listeners, want 2 (TCP and UDP): %+v", len(st.Listeners), st.Listeners)
	}
	t.Logf("UDP 127.0.0.1:%d: baton's anchor inode %d and generation 1's member, both baton's; TCP 127.0.0.1:%d inode %d", udp, udpInode, tcp, tcpInode)

	h := newH3Client()
	start := time.Now()
	r, err := h.get(udp, "/")
	if err != nil || r.Status != 200 || r.Gen != "1" {
		h.close()
		t.Fatalf("HTTP/3 GET: %+v %v, want 200 from generation 1\n%s", r, err, b.LogTail(30))
	}
	t.Logf("HTTP/3 GET answered by generation 1 in %s", time.Since(start).Round(time.Millisecond))
	_, conns := udpSocketsOn(t, udp)
	switch {
	case tg.perConn && len(conns) == 0:
		t.Errorf("no connected UDP socket on 127.0.0.1:%d during a QUIC connection: HAProxy fell back to the listener socket (SO_REUSEADDR missing?)", udp)
	case !tg.perConn && len(conns) != 0:
		t.Errorf("connected UDP sockets on 127.0.0.1:%d: %+v, want none (nginx uses the listener socket)", udp, conns)
	}
	t.Logf("during the QUIC connection: %d connected UDP socket(s) bound to the listener's address", len(conns))
	h.close()

	if g := batontest.HTTPGet(fmt.Sprintf("127.0.0.1:%d", tcp), "/", 5*time.Second); g.Err != nil || g.Status != 200 || g.Gen != "1" {
		t.Fatalf("TCP GET: %+v", g)
	}

	writeConf(t, cfg, tg.config(tcp, udp, 2, slow.Port))
	start = time.Now()
	if res := b.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload: exit %d: %s\n%s", res.Code, res.Stderr, b.LogTail(30))
	}
	t.Logf("reload acknowledged in %s", time.Since(start).Round(time.Millisecond))
	r, err = h3Get(udp)
	if err != nil || r.Status != 200 || r.Gen != "2" {
		t.Fatalf("HTTP/3 GET after the reload: %+v %v, want 200 from generation 2\n%s", r, err, b.LogTail(30))
	}
	waitUDPGroup(t, b, udp, 2)
	if in := ownedUDPListener(t, b, udp, 2); in != udpInode {
		t.Errorf("UDP anchor inode %d after the reload, want %d", in, udpInode)
	}
	if in := ownedListener(t, b, tcp); in != tcpInode {
		t.Errorf("TCP socket inode %d after the reload, want %d", in, tcpInode)
	}
	if g := batontest.HTTPGet(fmt.Sprintf("127.0.0.1:%d", tcp), "/", 5*time.Second); g.Err != nil || g.Status != 200 || g.Gen != "2" {
		t.Errorf("TCP GET after the reload: %+v", g)
	}
	t.Logf("after the reload: HTTP/3 and TCP answered by generation 2, UDP anchor inode %d and TCP inode %d kept, generation 1's member gone", udpInode, tcpInode)
	quicDoctor(t, b, tcp, udp)

	// A QUIC connection left open (idle) across a reload: the reload is
	// acknowledged without waiting for it, and a new connection is
	// served by the new generation.
	idle := newH3Client()
	if r, err := idle.get(udp, "/"); err != nil || r.Gen != "2" {
		t.Fatalf("HTTP/3 GET before the second reload: %+v %v", r, err)
	}
	writeConf(t, cfg, tg.config(tcp, udp, 3, slow.Port))
	start = time.Now()
	if res := b.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload with a QUIC connection open: exit %d: %s\n%s", res.Code, res.Stderr, b.LogTail(30))
	}
	t.Logf("reload with an idle QUIC connection open acknowledged in %s", time.Since(start).Round(time.Millisecond))
	r, err = idle.get(udp, "/")
	idle.close()
	t.Logf("a request on the connection opened before that reload: %+v, error %v", r, err)
	if r, err := h3Get(udp); err != nil || r.Status != 200 || r.Gen != "3" {
		t.Fatalf("HTTP/3 GET on a new connection after the second reload: %+v %v", r, err)
	}
	waitUDPGroup(t, b, udp, 2)

	quicHeldRequest(t, tg, b, cfg, tcp, udp, slow)
	waitUDPGroup(t, b, udp, 2)
	nb := quicCrashRestart(t, tg, b, cfg, tcp, udp, slow.Port, 4, false)
	nb = quicCrashRestart(t, tg, nb, cfg, tcp, udp, slow.Port, 5, true)
	quicUpgrade(t, tg, nb, cfg, tcp, udp, slow.Port, 6)
}

// quicDoctor: `baton doctor` tells baton's steered group (one baton holds
// every socket of it) from the unsupervised reuseport pattern: an info
// finding for the UDP address, no socket warning about it or the TCP one
// (the test configs' own findings, such as nginx's keep-alive settings,
// are not about sockets).
func quicDoctor(t *testing.T, b *batontest.Baton, tcp, udp int) {
	r := doctorRun(t, "--control", b.Control, "--port", strconv.Itoa(udp), "--port", strconv.Itoa(tcp))
	for _, f := range r.Findings {
		socket := strings.Contains(f.Check, "reuseport") || strings.HasPrefix(f.Check, "udp-")
		if socket && (slices.Contains(f.Ports, udp) || slices.Contains(f.Ports, tcp)) && f.Severity != doctor.Info {
			t.Errorf("doctor finding about baton's QUIC setup: %s %s %s: %s", f.Severity, f.Check, f.Subject, f.Saw)
		}
	}
	info := doctorFind(r, "udp-reuseport-group", udp)
	if len(info) != 1 || info[0].Severity != doctor.Info {
		t.Errorf("udp-reuseport-group findings for baton's group: %+v, want one info", info)
		return
	}
	t.Logf("doctor: %s %s: %s", info[0].Severity, info[0].Subject, info[0].Saw)
}

// quicCrashRestart: baton killed (SIGKILL) and started again recovers from
// its state file (or, with loseState, without one: by the generations'
// markers and the address): it takes the serving generation's member back,
// binds a new anchor into the group the member still forms (whose program
// kept steering meanwhile), HTTP/3 is answered throughout by that
// generation, and after a reload by the next one, steered by the new
// baton's program; every unconnected UDP socket on the address is the new
// baton's.
func quicCrashRestart(t *testing.T, tg quicTarget, b *batontest.Baton, cfg string, tcp, udp, slowPort, gen int, loseState bool) *batontest.Baton {
	if err := syscall.Kill(b.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.ExitCode(10 * time.Second); code == 0 {
		t.Fatal("baton survived SIGKILL")
	}
	if loseState {
		// The generations are found by their markers, the member by
		// the address its generation's processes hold.
		if err := os.Remove(b.Control + ".state"); err != nil {
			t.Fatal(err)
		}
	}
	want, next := fmt.Sprint(gen), fmt.Sprint(gen+1)
	if r, err := h3Get(udp); err != nil || r.Gen != want {
		t.Errorf("HTTP/3 GET while baton is down: %+v %v, want generation %s", r, err, want)
	}
	args := append([]string{"run", "-c", b.Control, "--log-format", "console", "--"}, tg.command...)
	nb := batontest.StartBatonArgs(t, append(args, cfg), b.Control, batontest.StartOptions{})
	nst := nb.WaitActive(10 * time.Second)
	if bad := udpGroupProblem(nst.Pid, udp, 2); bad != "" {
		t.Fatalf("after the restart, UDP 127.0.0.1:%d: %s\n%s", udp, bad, nb.LogTail(30))
	}
	if r, err := h3Get(udp); err != nil || r.Gen != want {
		t.Fatalf("HTTP/3 GET after the restart: %+v %v, want generation %s\n%s", r, err, want, nb.LogTail(30))
	}
	writeConf(t, cfg, tg.config(tcp, udp, gen+1, slowPort))
	if res := nb.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload after the restart: exit %d: %s\n%s", res.Code, res.Stderr, nb.LogTail(30))
	}
	for i := range 5 {
		if r, err := h3Get(udp); err != nil || r.Gen != next {
			t.Fatalf("HTTP/3 GET %d after the restart and a reload: %+v %v, want generation %s", i, r, err, next)
		}
	}
	waitUDPGroup(t, nb, udp, 2)
	t.Logf("after a kill -9 of baton (state file removed: %t): the restarted baton %d took back generation %s's member; HTTP/3 answered by %[3]s, then by %s after a reload", loseState, nst.Pid, want, next)
	return nb
}

// quicUpgrade: baton's own upgrade hands the anchor and every member over
// (SCM_RIGHTS, then adopted into the new baton's steering): the new baton
// holds every unconnected UDP socket on the address, HTTP/3 is still
// answered, and a reload after it steers new connections to the next
// generation.
func quicUpgrade(t *testing.T, tg quicTarget, b *batontest.Baton, cfg string, tcp, udp, slowPort, gen int) {
	udpInode := ownedUDPListener(t, b, udp, 2)
	want, next := fmt.Sprint(gen), fmt.Sprint(gen+1)
	res := b.CLI("upgrade", "--json")
	if res.Code != 0 {
		t.Fatalf("baton upgrade: exit %d: %s%s\n%s", res.Code, res.Stdout, res.Stderr, b.LogTail(30))
	}
	var out struct {
		NewPid int `json:"new_pid"`
	}
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil || out.NewPid == 0 {
		t.Fatalf("baton upgrade --json: %v: %q", err, res.Stdout)
	}
	if bad := udpGroupProblem(out.NewPid, udp, 0); bad != "" {
		t.Fatalf("after the upgrade, UDP 127.0.0.1:%d: %s", udp, bad)
	}
	if r, err := h3Get(udp); err != nil || r.Gen != want {
		t.Fatalf("HTTP/3 GET after the upgrade: %+v %v, want generation %s", r, err, want)
	}
	writeConf(t, cfg, tg.config(tcp, udp, gen+1, slowPort))
	if res := b.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload after the upgrade: exit %d: %s", res.Code, res.Stderr)
	}
	if r, err := h3Get(udp); err != nil || r.Gen != next {
		t.Fatalf("HTTP/3 GET after the upgrade and a reload: %+v %v, want generation %s", r, err, next)
	}
	waitUDPGroup(t, b, udp, 2)
	if in := ownedUDPListener(t, b, udp, 2); in != udpInode {
		t.Errorf("UDP anchor inode %d after the upgrade and a reload, want %d", in, udpInode)
	}
	t.Logf("upgrade in %s: baton %d holds the UDP anchor (inode %d) and the member; HTTP/3 answered by generation %s, then %s after a reload", res.Took.Round(time.Millisecond), out.NewPid, udpInode, want, next)
}

// quicHeldRequest: a request in flight over QUIC across a reload is
// answered by the old generation, and the reload is acknowledged while it
// is held: the old generation keeps only its own member, which receives
// only its own connections' packets (docs/design.md, "UDP and QUIC
// listeners").
func quicHeldRequest(t *testing.T, tg quicTarget, b *batontest.Baton, cfg string, tcp, udp int, slow *batontest.SlowBackend) {
	type answer struct {
		r   batontest.HTTPResult
		err error
	}
	held := newH3Client()
	defer held.close()
	answered := make(chan answer, 1)
	go func() {
		r, err := held.get(udp, "/slow")
		answered <- answer{r, err}
	}()
	if err := slow.WaitSlow(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	writeConf(t, cfg, tg.config(tcp, udp, 4, slow.Port))
	start := time.Now()
	acked := make(chan batontest.CLIResult, 1)
	go func() { acked <- b.CLI("reload") }()
	var res batontest.CLIResult
	ackedWhileHeld := false
	select {
	case res = <-acked:
		ackedWhileHeld = true
	case <-time.After(5 * time.Second):
	}
	ackAfter := time.Since(start)
	slow.Release()
	a := <-answered
	if !ackedWhileHeld {
		held.close()
		res = <-acked
		ackAfter = time.Since(start)
	}
	if res.Code != 0 {
		t.Fatalf("reload with a request held: exit %d: %s", res.Code, res.Stderr)
	}
	// nginx closes a draining connection (H3_NO_ERROR) as soon as its
	// last stream is sent, and quic-go reports that close instead of the
	// body it had received before it: the answer (status and X-Gen) is
	// what this checks.
	closedAfter := a.err != nil && a.r.Status == 200 && strings.Contains(a.err.Error(), "H3_NO_ERROR")
	if a.err != nil && !closedAfter || a.r.Status != 200 || a.r.Gen != "3" {
		t.Errorf("held HTTP/3 request: %+v %v, want 200 from generation 3 (the old one)", a.r, a.err)
	}
	if closedAfter {
		t.Logf("held HTTP/3 request: 200 from generation %s, then the old generation's graceful close (%v) before quic-go returned the end of the body", a.r.Gen, a.err)
	}
	t.Logf("reload with an HTTP/3 request held: acknowledged after %s (while held: %t); the request answered by generation %s", ackAfter.Round(time.Millisecond), ackedWhileHeld, a.r.Gen)
	if !ackedWhileHeld {
		t.Errorf("the reload was acknowledged only after the held request ended, want while it was held")
	}
	if r, err := h3Get(udp); err != nil || r.Gen != "4" {
		t.Errorf("HTTP/3 GET after the third reload: %+v %v, want generation 4", r, err)
	}
}
