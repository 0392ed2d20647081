package supervisor

import (
	"fmt"

	"go.uber.org/zap/zapcore"
)

// wantLogs checks that baton logged msg exactly n times at level with the
// given fields (and at no other level): the levels are for alerting rules.
func (h *harness) wantLogs(level zapcore.Level, msg string, n int, fields map[string]any) {
	h.t.Helper()
	got := 0
	for _, e := range h.logs.FilterMessage(msg).All() {
		ctx := e.ContextMap()
		match := true
		for k, v := range fields {
			if fmt.Sprint(ctx[k]) != fmt.Sprint(v) {
				match = false
			}
		}
		if !match {
			continue
		}
		if e.Level != level {
			h.t.Errorf("%q %v logged at %v, want %v", msg, ctx, e.Level, level)
		}
		got++
	}
	if got != n {
		h.t.Errorf("%q with %v logged %d times, want %d", msg, fields, got, n)
	}
}
