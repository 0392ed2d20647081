package supervisor

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/proxyctl"
)

// readLines passes every line whole up to its bound, cuts a longer one
// (saying how much it dropped) and goes on with the next lines.
func TestReadLines(t *testing.T) {
	long := strings.Repeat("x", 85<<10)
	type line struct {
		text string
		cut  int
	}
	tests := []struct {
		name  string
		in    string
		limit int
		want  []line
	}{
		{"an 85 KB line whole", long + "\nlisten 127.0.0.1:80 reuseport;\n", 1 << 20,
			[]line{{long, 0}, {"listen 127.0.0.1:80 reuseport;", 0}}},
		{"an 85 KB line cut at 64 KiB", long + "\nafter\n", 64 << 10,
			[]line{{long[:64<<10], 85<<10 - 64<<10}, {"after", 0}}},
		{"crlf, empty lines, no final newline", "a\r\n\nb", 10, []line{{"a", 0}, {"", 0}, {"b", 0}}},
		{"a line of exactly the bound", "abcd\nef\n", 4, []line{{"abcd", 0}, {"ef", 0}}},
		{"nothing", "", 10, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []line
			readLines(strings.NewReader(tc.in), tc.limit, func(b []byte, cut int) {
				got = append(got, line{string(b), cut})
			})
			if len(got) != len(tc.want) {
				t.Fatalf("%d lines, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("line %d: %d bytes cut %d, want %d bytes cut %d", i, len(got[i].text), got[i].cut, len(tc.want[i].text), tc.want[i].cut)
				}
			}
		})
	}
}

// A proxy's output line over 64 KiB is logged cut, with a marker, and the
// lines after it are logged too (a 64 KiB line limit used to drop
// everything after such a line).
func TestProxyOutputLongLineKeepsLaterLines(t *testing.T) {
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{outDone: make(chan struct{})}
	var got []string
	go p.readOutput(rd, 0, func(line string) { got = append(got, line) })
	long := strings.Repeat("y", 100<<10)
	_, err = io.WriteString(wr, "before\n"+long+"\nafter the long line\n")
	wr.Close()
	if err != nil {
		t.Fatal(err)
	}
	<-p.outDone
	if len(got) != 3 || got[0] != "before" || got[2] != "after the long line" {
		t.Fatalf("got %d lines %.40q, want before, the long line, after", len(got), got)
	}
	if want := long[:maxLogLine] + cutMarker(len(long)-maxLogLine); got[1] != want {
		t.Errorf("long line logged as %d bytes ending %q, want %d bytes ending %q", len(got[1]), got[1][len(got[1])-50:], len(want), want[len(want)-50:])
	}
	if !strings.HasSuffix(p.Output(), "after the long line") {
		t.Errorf("output tail ends %q", p.Output()[max(0, len(p.Output())-40):])
	}
}

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
	var ce *ChildError
	if !errors.As(err, &ce) || !errors.Is(err, errOutputTooLarge) {
		t.Fatalf("reload after a check writing 3 MiB: %v, want the output refused", err)
	}
	t.Logf("refused: %.200s", err)
	st := h.status()
	if g := h.active(st); g.Gen != 2 || g.Pid != p2 {
		t.Errorf("active generation %d pid %d, want 2 pid %d untouched", g.Gen, g.Pid, p2)
	}
}
