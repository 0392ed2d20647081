package doctor

import (
	"io"
	"os"
	"testing"
)

// fakeProxyEnv makes the test binary a process that only stands there,
// named (argv[0], hence its comm) and with a command line like a proxy's
// (see startFakeProxy), until its stdin closes.
const fakeProxyEnv = "BATON_DOCTOR_FAKE_PROXY"

func TestMain(m *testing.M) {
	if os.Getenv(fakeProxyEnv) != "" {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
