package batontest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/testbed"
)

// Baton is a `baton run` started by a test. Cleanup stops it and every
// process it started, by pid.
type Baton struct {
	t       testing.TB
	Bin     string
	Dir     string
	Control string
	LogPath string
	Cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	mu      sync.Mutex
	seen    map[int]bool // every descendant pid seen, for cleanup
}

// Status, Reload and ConfigView are testbed's view of `baton status
// --json`.
type (
	Status     = testbed.Status
	Reload     = testbed.Reload
	ConfigView = testbed.ConfigView
)

// StartOptions tune StartBaton.
type StartOptions struct {
	// Shell, when set, runs baton through `sh -c 'SHELL; exec baton ...'`
	// (e.g. "ulimit -Sn 1024").
	Shell string
	// NoWait returns without waiting for the first generation to serve.
	NoWait bool
	// Exec is the baton binary `baton run` executes (default: the one
	// BatonBinary builds, which CLI always uses). A test that replaces the
	// binary on disk under a running baton (an upgrade) runs a copy.
	Exec string
	// BrokenPipeOutput gives baton, as stdout and stderr, a pipe whose
	// reader is already closed (`baton run … 2>&1 | head` after head
	// exited). The log file stays empty.
	BrokenPipeOutput bool
}

// StartBaton runs `baton run -c DIR/b.sock --log-format console ARGS...`
// and waits until a generation is active.
func StartBaton(t testing.TB, args []string, opt StartOptions) *Baton {
	t.Helper()
	b := &Baton{t: t, Bin: BatonBinary(t), Dir: ShortTempDir(t), exited: make(chan struct{}), seen: map[int]bool{}}
	b.Control = filepath.Join(b.Dir, "b.sock")
	b.LogPath = filepath.Join(b.Dir, "baton.log")
	logf, err := os.Create(b.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{"run", "-c", b.Control, "--log-format", "console", "--log-level", "debug"}, args...)
	exe := b.Bin
	if opt.Exec != "" {
		exe = opt.Exec
	}
	if opt.Shell != "" {
		quoted := make([]string, len(full))
		for i, a := range full {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		b.Cmd = exec.Command("/bin/sh", "-c", opt.Shell+"; exec "+exe+" "+strings.Join(quoted, " "))
	} else {
		b.Cmd = exec.Command(exe, full...)
	}
	b.Cmd.Stdout, b.Cmd.Stderr = logf, logf
	if opt.BrokenPipeOutput {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		defer w.Close()
		b.Cmd.Stdout, b.Cmd.Stderr = w, w
	}
	b.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.waitErr = b.Cmd.Wait()
		logf.Close()
		close(b.exited)
	}()
	t.Cleanup(b.cleanup)
	if !opt.NoWait {
		b.WaitActive(30 * time.Second)
	}
	return b
}

// Pid is baton's pid.
func (b *Baton) Pid() int { return b.Cmd.Process.Pid }

// Exited is closed when baton has exited.
func (b *Baton) Exited() <-chan struct{} { return b.exited }

// ExitCode waits up to timeout for baton to exit and returns its status.
func (b *Baton) ExitCode(timeout time.Duration) (int, error) {
	select {
	case <-b.exited:
	case <-time.After(timeout):
		return -1, fmt.Errorf("baton still running after %s", timeout)
	}
	var ee *exec.ExitError
	if errors.As(b.waitErr, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, b.waitErr
}

// WaitActive waits until status shows an active generation.
func (b *Baton) WaitActive(timeout time.Duration) Status {
	b.t.Helper()
	var st Status
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-b.exited:
			b.t.Fatalf("baton exited before serving: %v\n%s", b.waitErr, b.LogTail(40))
		default:
		}
		var err error
		st, err = b.Status()
		if gen, _ := st.Active(); err == nil && gen > 0 {
			return st
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("no active generation after %s: %v\n%s", timeout, err, b.LogTail(40))
		}
		timer := time.NewTimer(20 * time.Millisecond)
		<-timer.C
	}
}

func (b *Baton) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", b.Control)
		},
		DisableKeepAlives: true,
	}, Timeout: 30 * time.Second}
}

// Status asks the control API for the status (no exec, cheap to poll).
func (b *Baton) Status() (Status, error) {
	var st Status
	_, err := b.getStatus(&st, &st)
	return st, err
}

// getStatus decodes the control API's status into v and notes the pids
// of st's processes (st is v, or the Status v embeds); it returns the body
// as read.
func (b *Baton) getStatus(v any, st *Status) ([]byte, error) {
	resp, err := b.httpClient().Get("http://baton/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("status: %s: %s", resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return body, err
	}
	b.mu.Lock()
	for _, g := range st.Generations {
		for _, p := range g.Processes {
			b.seen[p.Pid] = true
		}
	}
	b.mu.Unlock()
	return body, nil
}

// CLIResult is one run of the baton command-line client.
type CLIResult struct {
	Code           int
	Stdout, Stderr string
	Took           time.Duration
}

// CLI runs `baton ARGS... -c CONTROL`.
func (b *Baton) CLI(args ...string) CLIResult {
	return RunCLI(b.Bin, append(args, "-c", b.Control)...)
}

// RunCLI runs the baton binary and collects its exit status and output.
func RunCLI(bin string, args ...string) CLIResult {
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	res := CLIResult{Stdout: out.String(), Stderr: errb.String(), Took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	case err != nil:
		res.Code, res.Stderr = -1, err.Error()
	}
	return res
}

// LogTail returns the last n lines of baton's log.
func (b *Baton) LogTail(n int) string {
	data, _ := os.ReadFile(b.LogPath)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Log returns baton's whole log.
func (b *Baton) Log() string {
	data, _ := os.ReadFile(b.LogPath)
	return string(data)
}

// Signal sends sig to baton.
func (b *Baton) Signal(sig syscall.Signal) error {
	return b.Cmd.Process.Signal(sig)
}

// cleanup stops baton (fast) and kills, by pid, anything it left. A baton
// that took over through `baton upgrade` (another pid on the same control
// socket, not a child of the test) is stopped the same way.
func (b *Baton) cleanup() {
	if st, err := b.Status(); err == nil && st.Pid != b.Pid() && Alive(st.Pid) {
		stopPid(st.Pid)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range Descendants(b.Pid()) {
		b.seen[p] = true
	}
	select {
	case <-b.exited:
	default:
		_ = b.Signal(syscall.SIGQUIT)
		select {
		case <-b.exited:
		case <-time.After(15 * time.Second):
			_ = b.Signal(syscall.SIGKILL)
			<-b.exited
		}
	}
	for pid := range b.seen {
		if Alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if b.t.Failed() || os.Getenv("BATON_KEEP_LOG") != "" {
		_ = os.WriteFile(os.Getenv("BATON_KEEP_LOG"), []byte(b.Log()), 0o644)
	}
	if b.t.Failed() {
		b.t.Logf("baton log tail:\n%s", b.LogTail(60))
	}
}

// stopPid sends SIGQUIT (baton's fast stop) to pid, and SIGKILL if it is
// still alive 15 s later.
func stopPid(pid int) {
	_ = syscall.Kill(pid, syscall.SIGQUIT)
	if _, gone := PollUntil(15*time.Second, 10*time.Millisecond, func() bool { return !Alive(pid) }); !gone {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
