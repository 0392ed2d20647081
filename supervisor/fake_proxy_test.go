package supervisor

// The fake programs the test binary becomes when fakeEnv is set (see
// TestMain). They are a mock proxy: they exercise the supervisor (its state
// machine and the executor around it) against real processes, signals, fds
// and /proc, and prove nothing about how a real HAProxy or nginx behaves.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Roles of the test binary, argv[1] when fakeEnv is set.
const (
	roleCheck       = "check"        // check FILE: the config checker
	roleServe       = "serve"        // the proxy (behaviour from FAKE_MODE)
	roleGrandchild  = "grandchild"   // a worker that holds fd 3 and outlives its parent
	roleSpawnOrphan = "spawn-orphan" // starts a grandchild with fd 3, prints its pid, exits
	roleClient      = "client"       // client SOCK METHOD PATH: one control API request
	roleDaemonize   = "daemonize"    // starts a daemon with fd 3 in a session of its own, exits
	roleDaemon      = "daemon"       // a setsid child serving HTTP on fd 3, tagged with FAKE_GEN
)

// Environment of the serve role.
const (
	envGen  = "FAKE_GEN"  // generation number, echoed in X-Baton-Gen
	envDir  = "FAKE_DIR"  // the generation's private directory
	envMode = "FAKE_MODE" // comma-separated fakeOpts
)

func runFake(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "fake: no role")
		return 2
	}
	switch args[1] {
	case roleCheck:
		return fakeCheck(args[2:])
	case roleServe:
		return fakeServe()
	case roleGrandchild:
		return fakeGrandchild()
	case roleSpawnOrphan:
		return fakeSpawnOrphan()
	case roleClient:
		return fakeClient(args[2:])
	case roleDaemonize:
		return fakeDaemonize()
	case roleDaemon:
		return fakeDaemon()
	}
	fmt.Fprintf(os.Stderr, "fake: unknown role %q\n", args[1])
	return 2
}

// fakeCheck is the config check. The file holds "ok" (or is missing),
// "slow=MS" (succeed after MS milliseconds), "dump" and a newline (print
// the rest to stdout and succeed, as `nginx -T` prints its dump),
// "spew=MIB" (print MIB lines of 1 MiB each and succeed), or anything else:
// the check prints it to stderr and exits 1, as `haproxy -c` does with its
// alerts.
func fakeCheck(args []string) int {
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "fake check: want FILE")
		return 2
	}
	b, err := os.ReadFile(args[0])
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake check:", err)
		return 2
	}
	if dump, ok := strings.CutPrefix(string(b), "dump\n"); ok {
		if _, err := os.Stdout.WriteString(dump); err != nil {
			return 1
		}
		return 0
	}
	content := strings.TrimSpace(string(b))
	if mib, ok := strings.CutPrefix(content, "spew="); ok {
		n, _ := strconv.Atoi(mib)
		line := append(bytes.Repeat([]byte{'x'}, 1<<20-1), '\n')
		for range n {
			if _, err := os.Stdout.Write(line); err != nil {
				return 1
			}
		}
		return 0
	}
	if ms, ok := strings.CutPrefix(content, "slow="); ok {
		n, _ := strconv.Atoi(ms)
		<-time.After(time.Duration(n) * time.Millisecond)
		return 0
	}
	if content == "ok" {
		return 0
	}
	fmt.Fprintln(os.Stderr, "fake check:", content)
	return 1
}

// fakeOpts is FAKE_MODE, a comma-separated list of:
//
//	fail          exit 3 at start with a message on stderr
//	hang          never create the readiness socket
//	nodrain       ignore SIGUSR1 (the drain deadline then hard stops)
//	ignoreterm    ignore SIGTERM (the kill grace then SIGKILLs)
//	grandchild    start a grandchild that keeps fd 3 and outlives us
//	gcdrain       the grandchild exits on SIGUSR1 too (it ignores it otherwise)
//	crash=MS      exit 2 MS ms after the first readiness probe was answered
//	linger=MS     after draining (listeners closed, requests done) wait MS ms
//	readydelay=MS create the readiness socket only after MS ms
//	readygate     create the readiness socket only once FAKE_DIR/go exists
//	blocking      make the sockets blocking and accept in blocking mode
//	              (fake_blocking_test.go): an EAGAIN from accept exits 6
//	bindown       also bind a socket of its own (FAKE_DIR/own-addr)
//	daemonize     double-fork a daemon (setsid, so outside our process group
//	              and session, its parent gone) that serves on fd 3 until
//	              SIGTERM (or never stops, with ignoreterm)
//	nomarker      the daemon's environment lacks BATON_GENERATION
type fakeOpts struct {
	fail, hang, noDrain, ignoreTerm, grandchild, daemonize bool
	blocking, bindOwn, readyGate                           bool
	crash, linger, readyDelay                              time.Duration
}

func parseFakeOpts(s string) (fakeOpts, error) {
	var o fakeOpts
	for _, f := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		var ms int
		if v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return o, fmt.Errorf("mode %q: %w", f, err)
			}
			ms = n
		}
		d := time.Duration(ms) * time.Millisecond
		switch k {
		case "":
		case "fail":
			o.fail = true
		case "hang":
			o.hang = true
		case "nodrain":
			o.noDrain = true
		case "ignoreterm":
			o.ignoreTerm = true
		case "grandchild":
			o.grandchild = true
		case "gcdrain":
		case "daemonize":
			o.daemonize = true
		case "nomarker":
		case "crash":
			o.crash = d
		case "linger":
			o.linger = d
		case "readydelay":
			o.readyDelay = d
		case "readygate":
			o.readyGate = true
		case "blocking":
			o.blocking = true
		case "bindown":
			o.bindOwn = true
		default:
			return o, fmt.Errorf("unknown mode %q", f)
		}
	}
	return o, nil
}

// fakeServe is the proxy: it serves HTTP on the LISTEN_FDS sockets from fd 3
// on, answers readiness probes on FAKE_DIR/ready, drains on SIGUSR1 and
// stops at once on SIGTERM.
func fakeServe() int {
	gen, dir := os.Getenv(envGen), os.Getenv(envDir)
	logf := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "fake gen %s: %s\n", gen, fmt.Sprintf(format, a...))
	}
	o, err := parseFakeOpts(os.Getenv(envMode))
	if err != nil {
		logf("%v", err)
		return 2
	}
	if o.fail {
		fmt.Fprintf(os.Stderr, "fake: [ALERT] generation %s: frontend 'web' has no usable bind\n", gen)
		return 3
	}
	if lp := os.Getenv("LISTEN_PID"); lp != strconv.Itoa(os.Getpid()) {
		logf("LISTEN_PID=%q is not my pid %d", lp, os.Getpid())
		return 4
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		logf("bad LISTEN_FDS %q", os.Getenv("LISTEN_FDS"))
		return 4
	}
	// Before anything can arrive: SIGUSR1's default action is to die.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGUSR1, unix.SIGTERM)
	if o.grandchild {
		pid, err := startHolder()
		if err != nil {
			logf("start grandchild: %v", err)
			return 5
		}
		logf("grandchild %d holds fd 3", pid)
	}
	if o.daemonize {
		if err := startDaemon(); err != nil {
			logf("daemonize: %v", err)
			return 5
		}
	}
	srv, err := serveFake(gen, dir, n, o, logf)
	if err != nil {
		logf("%v", err)
		return 5
	}
	logf("serving %d listeners", n)
	answered := make(chan struct{})
	if !o.hang {
		gate := ""
		if o.readyGate {
			gate = filepath.Join(dir, "go")
		}
		go answerReady(filepath.Join(dir, "ready"), gen, o.readyDelay, gate, answered)
	}
	return fakeLoop(o, srv, sigs, answered, logf)
}

// fakeLoop handles signals until the fake exits; it returns the exit status.
func fakeLoop(o fakeOpts, srv *http.Server, sigs <-chan os.Signal, answered <-chan struct{}, logf func(string, ...any)) int {
	var crash, linger <-chan time.Time
	var drained chan struct{} // set while draining, nil again once seen
	draining := false
	for {
		select {
		case <-answered:
			answered = nil
			if o.crash > 0 {
				crash = time.After(o.crash)
			}
		case <-crash:
			logf("crashing")
			return 2
		case <-drained:
			drained = nil
			logf("drained")
			if o.linger <= 0 {
				return 0
			}
			linger = time.After(o.linger)
		case <-linger:
			return 0
		case sig := <-sigs:
			switch {
			case sig == unix.SIGUSR1 && o.noDrain:
				logf("ignoring SIGUSR1")
			case sig == unix.SIGUSR1 && !draining:
				draining = true
				logf("draining (SIGUSR1)")
				done := make(chan struct{})
				drained = done
				go func() {
					// Shutdown closes the listeners first, then waits for
					// in-flight requests.
					_ = srv.Shutdown(context.Background())
					close(done)
				}()
			case sig == unix.SIGTERM && o.ignoreTerm:
				logf("ignoring SIGTERM")
			case sig == unix.SIGTERM:
				logf("hard stop (SIGTERM)")
				return 0
			}
		}
	}
}

// serveFake serves the n LISTEN_FDS sockets, and with bindown one of its
// own, as o says (blocking or through Go's runtime).
func serveFake(gen, dir string, n int, o fakeOpts, logf func(string, ...any)) (*http.Server, error) {
	srv := &http.Server{}
	var err error
	if o.blocking {
		fds := make([]int, n)
		for i := range fds {
			fds[i] = 3 + i
		}
		err = serveBlocking(gen, fds, logf)
	} else {
		srv, err = serveListeners(gen, n)
	}
	if err == nil && o.bindOwn {
		err = bindOwn(gen, dir, o.blocking, srv, logf)
	}
	return srv, err
}

// serveListeners serves HTTP on fds 3 .. 3+n-1. Each fd is wrapped and its
// original closed, so that Shutdown leaves no copy of the socket behind.
func serveListeners(gen string, n int) (*http.Server, error) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return nil, err
	}
	pid := strconv.Itoa(os.Getpid())
	nofile := fmt.Sprintf("%d:%d", lim.Cur, lim.Max)
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Baton-Gen", gen)
			w.Header().Set("X-Pid", pid)
			w.Header().Set("X-Nofile", nofile)
			fmt.Fprintf(w, "generation %s\n", gen)
		}),
	}
	for i := range n {
		f := os.NewFile(uintptr(3+i), "listener")
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("fd %d: %w", 3+i, err)
		}
		go func() { _ = srv.Serve(ln) }()
	}
	return srv, nil
}

// answerReady creates the readiness socket and answers every connection
// with one line naming this process; answered is closed after the first.
func answerReady(path, gen string, delay time.Duration, gate string, answered chan<- struct{}) {
	if delay > 0 {
		<-time.After(delay)
	}
	for gate != "" {
		if _, err := os.Stat(gate); err == nil {
			break
		}
		<-time.After(2 * time.Millisecond)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fake gen %s: ready socket: %v\n", gen, err)
		return
	}
	var once sync.Once
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintf(c, "ready pid=%d gen=%s\n", os.Getpid(), gen)
		c.Close()
		once.Do(func() { close(answered) })
	}
}

// startHolder starts the test binary as a grandchild holding fd 3, in our
// process group; nobody here waits for it.
func startHolder() (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	pid, _, err := syscall.StartProcess(exe, []string{exe, roleGrandchild}, &syscall.ProcAttr{
		Env: os.Environ(), Files: []uintptr{0, 1, 2, 3},
	})
	return pid, err
}

// fakeGrandchild holds fd 3 (it never accepts on it) until SIGUSR2 or
// SIGTERM. It ignores SIGUSR1, which a supervisor may send to the group,
// unless FAKE_MODE has gcdrain: then SIGUSR1 ends it too.
func fakeGrandchild() int {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGUSR2, unix.SIGTERM)
	if slices.Contains(strings.Split(os.Getenv(envMode), ","), "gcdrain") {
		signal.Notify(sigs, unix.SIGUSR1)
	} else {
		signal.Ignore(unix.SIGUSR1)
	}
	if _, err := unix.FcntlInt(3, unix.F_GETFD, 0); err != nil {
		fmt.Fprintln(os.Stderr, "fake grandchild: no fd 3:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "fake grandchild %d: holding fd 3\n", os.Getpid())
	sig := <-sigs
	fmt.Fprintf(os.Stderr, "fake grandchild %d: exiting on %v\n", os.Getpid(), sig)
	return 0
}

// startDaemon runs the daemonize role with fd 3 and waits for it: the
// daemon it starts is then an orphan in a session of its own, handed to the
// nearest subreaper.
func startDaemon() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	pid, _, err := syscall.StartProcess(exe, []string{exe, roleDaemonize}, &syscall.ProcAttr{
		Env: os.Environ(), Files: []uintptr{0, 1, 2, 3},
	})
	if err != nil {
		return err
	}
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
		return err
	}
	if ws.ExitStatus() != 0 {
		return fmt.Errorf("daemonize exited with %v", ws)
	}
	return nil
}

// fakeDaemonize starts the daemon role with fd 3 in a new session and
// exits without waiting for it. With FAKE_MODE nomarker the daemon's
// environment lacks baton's generation marker.
func fakeDaemonize() int {
	env := os.Environ()
	if slices.Contains(strings.Split(os.Getenv(envMode), ","), "nomarker") {
		env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, markerVar+"=") })
	}
	exe, err := os.Executable()
	if err == nil {
		_, _, err = syscall.StartProcess(exe, []string{exe, roleDaemon}, &syscall.ProcAttr{
			Env: env, Files: []uintptr{0, 1, 2, 3}, Sys: &syscall.SysProcAttr{Setsid: true},
		})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake daemonize:", err)
		return 1
	}
	return 0
}

// fakeDaemon serves HTTP on fd 3 as generation FAKE_GEN until SIGTERM
// (ignored with FAKE_MODE ignoreterm); it ignores SIGUSR1.
func fakeDaemon() int {
	gen := os.Getenv(envGen)
	o, _ := parseFakeOpts(os.Getenv(envMode))
	signal.Ignore(unix.SIGUSR1)
	sigs := make(chan os.Signal, 1)
	if o.ignoreTerm {
		signal.Ignore(unix.SIGTERM)
	} else {
		signal.Notify(sigs, unix.SIGTERM)
	}
	if _, err := serveListeners(gen, 1); err != nil {
		fmt.Fprintln(os.Stderr, "fake daemon:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "fake daemon %d gen %s: serving\n", os.Getpid(), gen)
	sig := <-sigs
	fmt.Fprintf(os.Stderr, "fake daemon %d: exiting on %v\n", os.Getpid(), sig)
	return 0
}

// fakeSpawnOrphan starts a holder grandchild, prints its pid and exits: its
// grandchild becomes an orphan of the process group.
func fakeSpawnOrphan() int {
	pid, err := startHolder()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake spawn-orphan:", err)
		return 1
	}
	fmt.Println(pid)
	return 0
}

// fakeClient makes one control API request over the unix socket SOCK and
// prints the HTTP status code on the first line, then the body.
func fakeClient(args []string) int {
	if len(args) != 3 {
		fmt.Fprintln(os.Stderr, "fake client: want SOCK METHOD PATH")
		return 2
	}
	resp, err := controlRequest(context.Background(), args[0], args[1], args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake client:", err)
		return 1
	}
	fmt.Printf("%d\n%s", resp.code, resp.body)
	return 0
}

type controlResponse struct {
	code int
	body []byte
}

// controlRequest makes one HTTP request on the control socket at sock, on a
// connection of its own that it closes.
func controlRequest(ctx context.Context, sock, method, path string) (controlResponse, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return controlResponse{}, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://baton"+path, nil)
	if err != nil {
		return controlResponse{}, err
	}
	req.Close = true
	if err := req.Write(c); err != nil {
		return controlResponse{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return controlResponse{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return controlResponse{code: resp.StatusCode, body: body}, err
}
