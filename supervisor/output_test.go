package supervisor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/proxyctl"
)

// nginxDumpDriver is the fake driver whose check output is read as an
// nginx -T dump by the nginx driver's own checks.
type nginxDumpDriver struct{ *fakeDriver }

func (d nginxDumpDriver) CheckOutput(g proxyctl.GenSpec, out string) error {
	return (&proxyctl.Nginx{}).CheckOutput(g, out)
}

// The check reads a dump with lines over 64 KiB whole: a `listen ...
// reuseport` at the end of an 85 KB line, and on the line after an 85 KB
// comment, are both refused with their lines. (With a 64 KiB line limit
// the dump ended at the first long line and the reload passed.)
func TestCheckReadsLongDumpLines(t *testing.T) {
	h := newHarness(t, harnessOpts{driver: func(d *fakeDriver) proxyctl.Driver { return nginxDumpDriver{d} }})
	h.start()
	p1 := h.drv.pid(1)
	names := strings.Repeat(" a-rather-long-server-name.example.com", 85<<10/38)
	h.setCheck("dump\n# configuration file /etc/nginx/nginx.conf:\n" +
		"# " + strings.Repeat("c", 85<<10) + "\n" +
		"http {\n" +
		"server { server_name" + names + "; listen " + h.addr() + " reuseport; }\n" +
		"server { listen " + h.addr() + " reuseport; }\n" +
		"}\n")
	start := time.Now()
	_, err := h.reload()
	t.Logf("reload with a %d KB dump refused in %v", (2*85<<10)>>10, time.Since(start))
	if err == nil {
		t.Fatal("reload passed: the listen ... reuseport lines after a long line were not seen")
	}
	for _, where := range []string{"/etc/nginx/nginx.conf:3: listen", "/etc/nginx/nginx.conf:4: listen"} {
		if !strings.Contains(err.Error(), where) {
			t.Errorf("refusal does not name %s: %.300s", where, err)
		}
	}
	h.checkUntouched(p1)
}

// A check that writes more output than baton reads whole (64 MiB; 2 MiB
// here) fails, saying so, instead of being read in part (the output used to
// be cut silently at 8 MiB). Its lines of 1 MiB are kept whole up to it.
func TestCheckOutputOverBoundRefused(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.sup.maxOutput = 2 << 20
	h.start()
	h.setCheck("spew=2")
	if _, err := h.reload(); err != nil {
		t.Fatalf("a check writing exactly the bound: %v", err)
	}
	p2 := h.drv.pid(2)
	h.setCheck("spew=3")
	_, err := h.reload()
	var ce *childError
	if !errors.As(err, &ce) || !errors.Is(err, errOutputTooLarge) {
		t.Fatalf("reload after a check writing 3 MiB: %v, want the output refused", err)
	}
	t.Logf("refused: %.200s", err)
	st := h.status()
	if g := h.active(st); g.Gen != 2 || g.Pid != p2 {
		t.Errorf("active generation %d pid %d, want 2 pid %d untouched", g.Gen, g.Pid, p2)
	}
}
