package integration

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonproxy/baton/batontest"
)

// genericRun is a baton supervising examples/activated under the generic
// driver: acc's b, port, addr and cfg are set (its HAProxy write must not be
// used); act is the server's binary.
type genericRun struct {
	*accProxy
	act string
	dir string // a scratch directory for the test
}

// activatedConf is examples/activated's config for version v.
func activatedConf(v int) string {
	return fmt.Sprintf("version=%d\ntext=generic test\n", v)
}

// startGeneric writes config version 1 and starts `baton run --proxy generic
// -l tcp://127.0.0.1:PORT ARGS... -- CMD...`, CMD being command(g), and
// {act}, {cfg} in ARGS replaced by the server's binary and config (quoted
// for /bin/sh); port 0 picks a free one. Unless so.NoWait, it waits until a
// generation serves.
func startGeneric(t *testing.T, port int, args []string, command func(g *genericRun) []string, so batontest.StartOptions) *genericRun {
	t.Helper()
	g := &genericRun{act: batontest.BuildBinary(t, "./examples/activated"), dir: batontest.ShortTempDir(t)}
	if port == 0 {
		port = batontest.FreePort(t)
	}
	g.accProxy = &accProxy{port: port, addr: fmt.Sprintf("127.0.0.1:%d", port), cfg: filepath.Join(g.dir, "activated.conf")}
	writeConf(t, g.cfg, activatedConf(1))
	full := []string{"--proxy", "generic", "-l", "tcp://" + g.addr}
	r := strings.NewReplacer("{act}", shq(g.act), "{cfg}", shq(g.cfg))
	for _, a := range args {
		full = append(full, r.Replace(a))
	}
	full = append(append(full, "--"), command(g)...)
	g.b = batontest.StartBaton(t, full, so)
	return g
}

// plainActivated runs the server as is.
func plainActivated(g *genericRun) []string { return []string{g.act, "-config", g.cfg} }

// sh runs script with /bin/sh -c; the shell must exec the server so that
// its pid stays the LISTEN_PID the exec shim set.
func sh(script string) []string { return []string{"/bin/sh", "-c", script} }

// shq quotes s for /bin/sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
