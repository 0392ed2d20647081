package integration

import (
	"fmt"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestNginxNofileIncident shows the incident the default prevents: with
// worker_connections 2000 and a NOFILE of 1024 (here forced with --rlimit,
// in the incident inherited from a wrapper) nginx says so at start, on
// stderr, which baton logs; with baton's default limit it does not.
func TestNginxNofileIncident(t *testing.T) {
	const warning = "worker_connections exceed open file resource limit"
	conf := func(port int) string {
		return nginxConf(t, port, 1, nil, nil, [2]string{"worker_connections 1024;", "worker_connections 2000;"})
	}
	t.Run("nofile-1024", func(t *testing.T) {
		so, _ := lowNofileShell(t)
		p := startNginxAcc(t, conf, []string{"--rlimit", "nofile=1024"}, so)
		waitNginxSettled(t, p)
		checkNofile(t, p, 1024, 1024)
		var lines []string
		batontest.Eventually(t, 5*time.Second, func() error {
			if lines = batontest.LogLines(p.b.Log(), "proxy output", warning); len(lines) == 0 {
				return fmt.Errorf("no %q in baton's log", warning)
			}
			return nil
		})
		for _, l := range lines {
			t.Logf("baton's log: %s", l)
		}
		if len(batontest.LogLines(p.b.Log(), "2000 "+warning+": 1024")) == 0 {
			t.Errorf("the warning does not name 2000 connections and the limit 1024")
		}
	})
	t.Run("default", func(t *testing.T) {
		so, rec := lowNofileShell(t)
		p := startNginxAcc(t, conf, nil, so)
		want := defaultNofile(t, shellNofile(t, rec, p.b))
		waitNginxSettled(t, p)
		checkNofile(t, p, want, want)
		// The log is complete up to the generation's start: nginx warns
		// before it forks its workers, which checkNofile has seen.
		if lines := batontest.LogLines(p.b.Log(), warning); len(lines) > 0 {
			t.Errorf("with NOFILE %d nginx still warns: %q", want, lines)
		}
		t.Logf("NOFILE %d: %d proxy output lines, none with %q", want, len(batontest.LogLines(p.b.Log(), "proxy output")), warning)
	})
}
