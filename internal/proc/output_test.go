package proc

import (
	"io"
	"os"
	"strings"
	"testing"
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
	p := &Process{outDone: make(chan struct{})}
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
