package proxyctl

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
)

// A generation's socket handover answers its master and the workers the
// master forks (HAProxy 3.1+ fetches the sockets in the worker), and
// refuses every other process, also one of the same uid, with a warning
// that names it.
func TestGetsocksPeerIsTheGeneration(t *testing.T) {
	h, err := NewHAProxy([]string{"/usr/sbin/haproxy", "-f", "/etc/h.cfg"})
	if err != nil {
		t.Fatal(err)
	}
	dir := batontest.ShortTempDir(t)
	var mu sync.Mutex
	var warnings []error
	g := GenSpec{Gen: 1, Dir: dir, Listeners: []Listener{boundListener(t, "tcp://127.0.0.1:0")},
		Warn: func(msg string, err error) {
			mu.Lock()
			defer mu.Unlock()
			warnings = append(warnings, err)
		}}
	_, sess, err := h.Prepare(g)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	path := filepath.Join(dir, "getsocks.sock")

	master := exec.Command(os.Args[0], "-test.run=^$")
	master.Env = append(os.Environ(), getsocksMasterEnv+"="+path)
	stdin, err := master.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	master.Stdout, master.Stderr = &out, os.Stderr
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = master.Process.Kill(); _ = master.Wait() })
	sess.Started(master.Process.Pid)

	// A sibling: same uid, not of the generation.
	sibling := exec.Command(os.Args[0], "-test.run=^$")
	sibling.Env = append(os.Environ(), getsocksFetchEnv+"="+path)
	got, err := sibling.Output()
	if err != nil {
		t.Fatalf("sibling: %v", err)
	}
	if !strings.HasPrefix(string(got), "error:") {
		t.Errorf("a process outside the generation fetched the sockets: %q", got)
	}
	mu.Lock()
	if len(warnings) != 1 || !errors.Is(warnings[0], fdpass.ErrPeerRefused) ||
		!strings.Contains(warnings[0].Error(), "pid "+strconv.Itoa(sibling.Process.Pid)) {
		t.Errorf("warnings after the sibling's attempt: %v, want one naming pid %d", warnings, sibling.Process.Pid)
	} else {
		t.Logf("refused: %v", warnings[0])
	}
	mu.Unlock()

	// The master's worker.
	stdin.Write([]byte{1})
	if err := master.Wait(); err != nil {
		t.Fatalf("master: %v (%s)", err, out.String())
	}
	if strings.TrimSpace(out.String()) != "got 1" {
		t.Errorf("the master's worker: %q, want got 1", out.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(warnings) != 1 {
		t.Errorf("warnings: %v", warnings)
	}
}

// A flood of connections from a process outside the generation is refused
// without flooding the log: the first few refusals are logged one by one,
// the rest counted in one line when the server closes; and the generation
// still gets its sockets.
func TestGetsocksRefusalsRateLimited(t *testing.T) {
	h, err := NewHAProxy([]string{"/usr/sbin/haproxy", "-f", "/etc/h.cfg"})
	if err != nil {
		t.Fatal(err)
	}
	dir := batontest.ShortTempDir(t)
	var mu sync.Mutex
	var msgs []string
	var errs []error
	g := GenSpec{Gen: 1, Dir: dir, Listeners: []Listener{boundListener(t, "tcp://127.0.0.1:0")},
		Warn: func(msg string, err error) {
			mu.Lock()
			defer mu.Unlock()
			msgs, errs = append(msgs, msg), append(errs, err)
		}}
	_, sess, err := h.Prepare(g)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	path := filepath.Join(dir, "getsocks.sock")
	master := exec.Command(os.Args[0], "-test.run=^$")
	master.Env = append(os.Environ(), getsocksMasterEnv+"="+path)
	stdin, err := master.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	master.Stdout, master.Stderr = &out, os.Stderr
	if err := master.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = master.Process.Kill(); _ = master.Wait() })
	sess.Started(master.Process.Pid)

	// The test process is not of the generation: each of its connections
	// is refused (the server closes it without a word).
	const flood = 200
	for i := range flood {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("connection %d: read %v, want EOF (refused)", i, err)
		}
		c.Close()
	}
	stdin.Write([]byte{1})
	if err := master.Wait(); err != nil || strings.TrimSpace(out.String()) != "got 1" {
		t.Fatalf("the generation's worker after the flood: %v, %q", err, out.String())
	}
	sess.Close()
	mu.Lock()
	defer mu.Unlock()
	want := refusalsLogged + 1
	if len(msgs) != want || msgs[want-1] != "getsocks peers refused" ||
		!strings.Contains(errs[want-1].Error(), fmt.Sprintf("%d more peers (%d in all)", flood-refusalsLogged, flood)) {
		t.Fatalf("warnings after %d refused connections: %q %v; want %d one by one and a count", flood, msgs, errs, refusalsLogged)
	}
	t.Logf("first refusal: %v; summary: %v", errs[0], errs[want-1])
}
