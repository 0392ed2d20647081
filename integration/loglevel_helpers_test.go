package integration

import (
	"strings"
	"testing"

	"github.com/batonproxy/baton/batontest"
)

// levelLines are the lines of a console-format log (batontest starts
// baton with --log-format console) at level (INFO, WARN, ERROR) that
// contain every one of subs.
func levelLines(log, level string, subs ...string) []string {
	return batontest.LogLines(log, append([]string{"\t" + level + "\t"}, subs...)...)
}

// wantLevel checks that the lines containing every one of subs are n, all
// at level: an alerting rule reads the level.
func wantLevel(t *testing.T, log, level string, n int, subs ...string) {
	t.Helper()
	all := batontest.LogLines(log, subs...)
	at := levelLines(log, level, subs...)
	if len(all) != n || len(at) != n {
		t.Errorf("log lines with %q: %d, %d of them at %s; want %d, all at %s:\n%s", subs, len(all), len(at), level, n, level, strings.Join(all, "\n"))
	}
}

// noStackTraces checks that no log line carries a stack trace or a
// caller's source position.
func noStackTraces(t *testing.T, log string) {
	t.Helper()
	for _, bad := range []string{"stacktrace", "goroutine ", ".go:"} {
		if lines := batontest.LogLines(log, bad); len(lines) > 0 {
			t.Errorf("%d log lines with %q (a stack trace or caller), first: %s", len(lines), bad, lines[0])
		}
	}
}
