package main

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/api"
)

// A waiting reload says what it waits for: the new generation while it
// starts, then each older one that still drains, with its connections and
// deadline.
func TestProgressLine(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 10, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	starting := api.Status{Generations: []api.GenStatus{
		{Gen: 4, State: "active", Pid: 100},
		{Gen: 5, State: "starting", Pid: 200, StartedAt: at(-4 * time.Second), Deadline: at(26 * time.Second), DeadlineAction: "kill (not ready)"},
	}}
	draining := api.Status{Generations: []api.GenStatus{
		{Gen: 5, State: "active", Pid: 200},
		{Gen: 4, State: "draining", Pid: 100, DrainedAt: at(-6 * time.Second), Connections: 12, Deadline: at(294 * time.Second), DeadlineAction: "hard stop"},
	}}
	for _, tc := range []struct {
		st   api.Status
		want []string
	}{
		{starting, []string{"generation 5 (pid 200) starting for 4s", "not ready yet; killed if not ready at", "(in 26s)"}},
		{draining, []string{"generation 5 (pid 200) serves", "generation 4 (pid 100) draining for 6s, 12 connections, hard stop at", "(in 4m54s)"}},
	} {
		line := progressLine(tc.st, now)
		t.Log(line)
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("progress %q lacks %q", line, w)
			}
		}
	}
}

// --json failures carry a code a script can branch on.
func TestErrorCode(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("reload failed: %w", &apiError{code: "exited_before_ready", msg: "x"}): "exited_before_ready",
		fmt.Errorf("reload failed: %w", fmt.Errorf("%w on x", errNoBaton)):                "no_baton",
		usagef("reload: unexpected argument"):                                             "usage",
		errors.New("something else"):                                                      "failed",
	} {
		if got := errorCode(err); got != want {
			t.Errorf("errorCode(%v) = %q, want %q", err, got, want)
		}
	}
}
