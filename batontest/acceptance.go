package batontest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/internal/testbed"
)

// HAProxyOpts describes a config for the HAProxy acceptance tests.
type HAProxyOpts struct {
	// Port is the frontend's bind 127.0.0.1:Port.
	Port int
	// Version is sent as the X-Gen header on every answer.
	Version int
	// GenPid makes the X-Gen header "VERSION-PID", PID being the HAProxy
	// process that answered.
	GenPid bool
	// BackendPort, when set, makes the frontend forward every request to
	// 127.0.0.1:BackendPort; otherwise the frontend answers 200 itself.
	BackendPort int
	// MaxConn is the global maxconn; default 1000 (HAProxy needs about two
	// descriptors per connection and refuses to start when its NOFILE limit
	// is too small for that).
	MaxConn int
	// Frontend holds extra lines for the frontend section, inserted right
	// after the bind line.
	Frontend []string
}

// HAProxyAcceptanceConfig renders o. Like HAProxyConfig it declares
// `resolvers default` with a loopback nameserver and
// `httpclient.ssl.verify none`, so that HAProxy 2.6 never talks to the
// host's resolver.
func HAProxyAcceptanceConfig(o HAProxyOpts) string {
	if o.MaxConn == 0 {
		o.MaxConn = 1000
	}
	var b strings.Builder
	fmt.Fprintf(&b, "global\n    maxconn %d\n    httpclient.ssl.verify none\n", o.MaxConn)
	b.WriteString("\nresolvers default\n    nameserver local 127.0.0.1:53\n\n")
	b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n")
	fmt.Fprintf(&b, "\nfrontend fe\n    bind 127.0.0.1:%d\n", o.Port)
	for _, l := range o.Frontend {
		b.WriteString("    " + l + "\n")
	}
	gen := fmt.Sprint(o.Version)
	if o.GenPid {
		gen += "-%pid" // log-format: the answering process's pid
	}
	if o.BackendPort == 0 {
		fmt.Fprintf(&b, "    http-request return status 200 content-type text/plain hdr X-Gen \"%s\" string \"generation %d\\n\"\n", gen, o.Version)
		return b.String()
	}
	fmt.Fprintf(&b, "    http-response set-header X-Gen \"%s\"\n", gen)
	b.WriteString("    default_backend be\n")
	fmt.Fprintf(&b, "\nbackend be\n    server s1 127.0.0.1:%d\n", o.BackendPort)
	return b.String()
}

// SlowBackend is an HTTP server on 127.0.0.1 for HAProxy to forward to:
// /slow blocks until Release (or its bounded hold time, or the client
// leaves); every other path answers 200 at once.
type SlowBackend struct {
	Port    int
	hold    time.Duration
	arrived chan struct{}
	release chan struct{}
	once    sync.Once
	srv     *http.Server
	done    chan struct{}
}

// StartSlowBackend starts a SlowBackend whose /slow requests are held at
// most maxHold. Cleanup releases them and closes the server.
func StartSlowBackend(t testing.TB, maxHold time.Duration) *SlowBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &SlowBackend{
		Port: ln.Addr().(*net.TCPAddr).Port, hold: maxHold,
		arrived: make(chan struct{}, 64), release: make(chan struct{}), done: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", s.slow)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "fast\n")
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Release()
		_ = s.srv.Close()
		<-s.done
	})
	return s
}

func (s *SlowBackend) slow(w http.ResponseWriter, r *http.Request) {
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	t := time.NewTimer(s.hold)
	defer t.Stop()
	select {
	case <-s.release:
	case <-t.C:
	case <-r.Context().Done():
		return
	}
	_, _ = io.WriteString(w, "slow done\n")
}

// WaitSlow waits until a /slow request has reached the backend.
func (s *SlowBackend) WaitSlow(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.arrived:
		return nil
	case <-t.C:
		return fmt.Errorf("no /slow request reached the backend within %s", timeout)
	}
}

// Release lets every held and future /slow request finish.
func (s *SlowBackend) Release() {
	s.once.Do(func() { close(s.release) })
}

// HTTPResult is one answer read by HTTPGet or ReadHTTP.
type HTTPResult struct {
	Status int
	Gen    string // X-Gen header
	Body   string
	Err    error
}

// HTTPGet sends one GET (Connection: close) to addr and reads the answer,
// all within timeout.
func HTTPGet(addr, path string, timeout time.Duration) HTTPResult {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return HTTPResult{Err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := WriteHTTPRequest(c, path); err != nil {
		return HTTPResult{Err: err}
	}
	return ReadHTTP(c)
}

// WriteHTTPRequest writes a GET for path with Connection: close.
func WriteHTTPRequest(c net.Conn, path string) error {
	_, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: baton-test\r\nConnection: close\r\n\r\n", path)
	return err
}

// ReadHTTP reads one response from c (honouring c's deadline).
func ReadHTTP(c net.Conn) HTTPResult {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return HTTPResult{Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return HTTPResult{Status: resp.StatusCode, Gen: resp.Header.Get("X-Gen"), Body: string(body), Err: err}
}

// GenView is testbed's flattened generation of a Status.
type GenView = testbed.GenView

// SignalPids sends sig to each pid (pids the test got from baton's status,
// never looked up by name).
func SignalPids(pids []int, sig syscall.Signal) error {
	var errs []error
	for _, p := range pids {
		if p <= 1 {
			errs = append(errs, fmt.Errorf("refusing to signal pid %d", p))
			continue
		}
		if err := syscall.Kill(p, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d %s: %w", p, sig, err))
		}
	}
	return errors.Join(errs...)
}

// SumCPUTicks is the total of CPUTicks over pids; pids already gone count 0.
func SumCPUTicks(pids []int) uint64 {
	var n uint64
	for _, p := range pids {
		if v, err := CPUTicks(p); err == nil {
			n += v
		}
	}
	return n
}

// AcceptQueue returns the accept-queue length of the TCP LISTEN socket on
// port (sock_diag), and how many LISTEN sockets the port has.
func AcceptQueue(port int) (queue uint32, sockets int, err error) {
	all, err := fdpass.ListeningTCP()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range all {
		if int(l.Addr.Port()) == port {
			queue += l.Queue
			sockets++
		}
	}
	return queue, sockets, nil
}

// PollUntil calls cond every interval until it is true or timeout passes,
// and returns how long that took and whether cond became true.
func PollUntil(timeout, interval time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > timeout {
			return time.Since(start), false
		}
		t := time.NewTimer(interval)
		<-t.C
	}
}

// RunOpts tune RunCLIWith.
type RunOpts struct {
	// Credential runs the command as another user (the binary must be
	// reachable and executable by that user).
	Credential *syscall.Credential
	// Timeout bounds the run (default 30 s); then the command gets SIGQUIT
	// (baton's fast stop) and, 10 s later, SIGKILL, by pid.
	Timeout time.Duration
}

// RunCLIWith is RunCLI with a time bound and, optionally, another user.
func RunCLIWith(o RunOpts, bin string, args ...string) CLIResult {
	if o.Timeout == 0 {
		o.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	defer cancel()
	var out, errb strings.Builder
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = &out, &errb
	if o.Credential != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.Credential}
	}
	start := time.Now()
	err := cmd.Run()
	res := CLIResult{Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		res.Code, res.Stderr = -1, fmt.Sprintf("timed out after %s: %v\n%s", o.Timeout, err, res.Stderr)
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	case err != nil:
		res.Code, res.Stderr = -1, err.Error()
	}
	return res
}

// PublicCopy copies the file bin into a new 0755 directory as a 0755 file,
// so that an unprivileged user can run it (BuildBinary's directory is
// private to root).
func PublicCopy(t testing.TB, bin string) string {
	t.Helper()
	dir := ShortTempDir(t)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := dir + "/" + "baton"
	if err := os.WriteFile(out, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// LogLines returns the lines of log that contain every one of subs.
func LogLines(log string, subs ...string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// LogTime parses the timestamp that starts a console-format log line.
func LogTime(line string) (time.Time, error) {
	ts, _, _ := strings.Cut(line, "\t")
	return time.Parse("2006-01-02T15:04:05.000Z0700", ts)
}

// ParentPid returns pid's parent pid from /proc/PID/stat; 0 when unknown.
func ParentPid(pid int) int { return proc.ParentPid(pid) }

// Stopped reports whether every thread of every pid is in job-control stop
// (state T): SIGSTOP stops a multi-threaded process's threads one by one,
// and a running thread may still accept a connection meanwhile.
func Stopped(pids []int) bool {
	for _, pid := range pids {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil || len(tasks) == 0 {
			return false
		}
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			if err != nil {
				return false
			}
			i := strings.LastIndexByte(string(b), ')')
			if f := strings.Fields(string(b[i+1:])); len(f) == 0 || f[0] != "T" {
				return false
			}
		}
	}
	return true
}
