package integration

import (
	"encoding/gob"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// loadRun is the load generator running in a process of its own (built
// without -race, so the load is not slowed down by the tests' race runtime).
type loadRun struct {
	cmd  *exec.Cmd
	out  string
	done chan error
}

// startLoad runs bench/cmd/loadgen against addr.
func startLoad(t *testing.T, addr string, mode load.Mode, workers int, d time.Duration, rate float64) *loadRun {
	t.Helper()
	bin := batontest.BuildBinary(t, "./bench/cmd/loadgen")
	out := filepath.Join(t.TempDir(), "load.gob")
	m := "newconn"
	if mode == load.KeepAlive {
		m = "keepalive"
	}
	cmd := exec.Command(bin, "-addr", addr, "-mode", m, "-workers", strconv.Itoa(workers),
		"-duration", d.String(), "-rate", fmt.Sprint(rate), "-out", out)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lr := &loadRun{cmd: cmd, out: out, done: make(chan error, 1)}
	go func() { lr.done <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-lr.done:
		default:
			_ = cmd.Process.Kill()
			<-lr.done
		}
	})
	return lr
}

// stop ends the load (SIGINT) and reads its samples.
func (lr *loadRun) stop(t *testing.T) *load.Result {
	t.Helper()
	_ = lr.cmd.Process.Signal(os.Interrupt)
	return lr.wait(t)
}

// wait waits for the load to finish and reads its samples.
func (lr *loadRun) wait(t *testing.T) *load.Result {
	t.Helper()
	if err := <-lr.done; err != nil {
		t.Fatalf("loadgen: %v", err)
	}
	lr.done <- nil // for Cleanup
	f, err := os.Open(lr.out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var res load.Result
	if err := gob.NewDecoder(f).Decode(&res); err != nil {
		t.Fatalf("read load result: %v", err)
	}
	return &res
}
