package integration

import (
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// A closed stderr must not kill baton: `baton run … 2>&1 | head` once head
// has exited. Every log line then fails with EPIPE (the Go runtime would
// raise SIGPIPE for fd 2 unless baton catches it) and is dropped; baton
// keeps serving and reloading.
func TestClosedStderrKeepsBatonUp(t *testing.T) {
	g := startGeneric(t, 0, nil, plainActivated, batontest.StartOptions{BrokenPipeOutput: true})
	writeConf(t, g.cfg, activatedConf(2))
	gen, _ := reloadJSON(t, g.b)
	if gen != 2 {
		t.Fatalf("reload: generation %d, want 2", gen)
	}
	if r := batontest.HTTPGet(g.addr, "/", 5*time.Second); r.Err != nil || r.Status != 200 || r.Gen != "2" {
		t.Errorf("GET http://%s/ after the reload: %d %q %v", g.addr, r.Status, r.Gen, r.Err)
	}
	select {
	case <-g.b.Exited():
		code, err := g.b.ExitCode(0)
		t.Fatalf("baton exited (status %d, %v) with its stderr a closed pipe", code, err)
	default:
	}
	if st, err := g.b.Status(); err != nil || st.Pid != g.b.Pid() {
		t.Errorf("status after the reload: %+v, %v", st, err)
	}
	t.Log("baton served two generations with every log line failing on EPIPE")
}
