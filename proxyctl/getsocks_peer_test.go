package proxyctl

import (
	"errors"
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
