package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Log lines are for alerting rules and people: no caller's source position
// and no stack trace on an operational error (an ERROR line); console on a
// terminal, JSON otherwise, unless --log-format says.
func TestLoggerLines(t *testing.T) {
	for _, tc := range []struct {
		format string
		tty    bool
		json   bool
	}{{"", false, true}, {"", true, false}, {"json", true, true}, {"console", false, false}} {
		t.Run(tc.format+map[bool]string{true: " tty", false: " pipe"}[tc.tty], func(t *testing.T) {
			out := captureStderr(t, func() {
				log, err := newLogger(tc.format, "info", tc.tty)
				if err != nil {
					t.Fatal(err)
				}
				log.Error("reload failed", zap.Int("gen", 3), zap.Error(errors.New("exited before it was ready (exit status 1)")))
			})
			t.Logf("%s", out)
			if strings.Count(out, "\n") != 1 {
				t.Errorf("%d lines, want one: %q", strings.Count(out, "\n"), out)
			}
			if strings.Contains(out, ".go:") || strings.Contains(out, "stacktrace") || strings.Contains(out, "goroutine") {
				t.Errorf("caller or stack trace in %q", out)
			}
			var m map[string]any
			isJSON := json.Unmarshal([]byte(out), &m) == nil
			if isJSON != tc.json {
				t.Errorf("JSON %v, want %v: %q", isJSON, tc.json, out)
			}
			if isJSON && (m["level"] != "error" || m["gen"] != float64(3)) {
				t.Errorf("line %v: want level error, gen 3", m)
			}
			if !isJSON && !strings.Contains(out, "\tERROR\treload failed\t") {
				t.Errorf("console line %q: want ERROR and the message", out)
			}
		})
	}
	if _, err := newLogger("xml", "info", false); err == nil {
		t.Errorf("--log-format xml accepted")
	}
}

// A programming error (DPanic) still carries its stack.
func TestLoggerStackOnlyForProgrammingErrors(t *testing.T) {
	log, err := newLogger("json", "info", false)
	if err != nil {
		t.Fatal(err)
	}
	if ce := log.Check(zapcore.ErrorLevel, "x"); ce == nil || ce.Stack != "" {
		t.Errorf("an ERROR entry would carry a stack: %+v", ce)
	}
	if ce := log.Check(zapcore.DPanicLevel, "x"); ce == nil {
		t.Errorf("DPanic not logged")
	}
}

// captureStderr runs f with os.Stderr sent to a pipe and returns what f
// wrote there.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	f()
	os.Stderr = old
	w.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(r)
	r.Close()
	return b.String()
}
