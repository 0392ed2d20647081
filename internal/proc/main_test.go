package proc

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shortWait bounds waiting for something that takes milliseconds.
const shortWait = 5 * time.Second

// TestMain runs the exec shim when a start re-executes the test binary
// (ExecStarter's default shim is /proc/self/exe).
func TestMain(m *testing.M) {
	if IsExecShim(os.Args) {
		fmt.Fprintln(os.Stderr, RunExecShim(os.Args))
		os.Exit(127)
	}
	os.Exit(m.Run())
}

// startReaper runs a Reaper for the test; it stops when the test ends.
func startReaper(t *testing.T) *Reaper {
	t.Helper()
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	r, err := NewReaper(sigchld, nil)
	if err != nil {
		signal.Stop(sigchld)
		t.Fatalf("NewReaper: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		signal.Stop(sigchld)
	})
	return r
}

// pollUntil calls cond until it is true or d passed; it returns cond's
// last result.
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return cond()
		}
		<-time.After(5 * time.Millisecond)
	}
}
