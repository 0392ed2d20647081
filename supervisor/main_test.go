package supervisor

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/batonproxy/baton/internal/proc"
)

// fakeEnv, when set in the environment, makes the test binary act as one of
// the fake programs of fake_proxy_test.go (chosen by argv[1]) instead of
// running the tests: the supervisor under test starts the test binary itself
// as its proxy, its config checker and their helpers.
const fakeEnv = "BATON_FAKE_PROXY"

func TestMain(m *testing.M) {
	// The ExecStarter re-executes /proc/self/exe, which here is the test
	// binary, as the exec shim: dispatch it first, like cmd/baton does.
	if proc.IsExecShim(os.Args) {
		err := proc.RunExecShim(os.Args)
		fmt.Fprintln(os.Stderr, err)
		os.Exit(127)
	}
	if os.Getenv(fakeEnv) != "" {
		os.Exit(runFake(os.Args))
	}
	// Every test stops what it started (supervisor loop, reaper, control
	// server, HTTP clients): no goroutine may outlive the tests. The only
	// long-lived ones, os/signal's loop started by signal.Notify, are ignored
	// by goleak itself.
	goleak.VerifyTestMain(m)
}
