package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/api"
)

// progressEvery is how often `baton reload` on a terminal says what it
// waits for.
const progressEvery = 3 * time.Second

// showProgress prints to w, every progressEvery until the returned function
// is called, what a reload waits for, read from the status API: the new
// generation while it starts, the older ones that still hold the listeners
// (their connections and drain deadline) once it serves. It prints nothing
// for a reload that ends sooner, and nothing when the status cannot be read.
func showProgress(w io.Writer, control string) func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		cl := newClient(control)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var st api.Status
			if err := cl.do(ctx, http.MethodGet, "/v1/status", &st); err != nil {
				continue
			}
			if line := progressLine(st, time.Now()); line != "" && ctx.Err() == nil {
				fmt.Fprintln(w, line)
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// progressLine says what a reload waits for in st: the newest generation
// while it is checked or starts, else the older generations still
// draining.
func progressLine(st api.Status, now time.Time) string {
	gens := append([]api.GenStatus(nil), st.Generations...)
	if len(gens) == 0 {
		return "waiting: no generation yet"
	}
	sort.Slice(gens, func(i, j int) bool { return gens[i].Gen < gens[j].Gen })
	newest := gens[len(gens)-1]
	switch newest.State {
	case "checking":
		return fmt.Sprintf("waiting: generation %d: config check running", newest.Gen)
	case "starting":
		line := fmt.Sprintf("waiting: generation %d (pid %d) starting for %s, not ready yet", newest.Gen, newest.Pid, since(newest.StartedAt, now))
		if d := newest.Deadline; d != nil {
			line += fmt.Sprintf("; killed if not ready at %s (in %s)", d.Local().Format(time.TimeOnly), d.Sub(now).Round(time.Second))
		}
		return line
	}
	var old []string
	for _, g := range gens[:len(gens)-1] {
		switch g.State {
		case "draining", "stopping", "killed":
			old = append(old, fmt.Sprintf("generation %d (pid %d) %s for %s, %d connections%s",
				g.Gen, g.Pid, g.State, since(g.DrainedAt, now), g.Connections, deadlineNote(g, now)))
		}
	}
	if len(old) == 0 {
		return fmt.Sprintf("waiting: generation %d (pid %d) %s", newest.Gen, newest.Pid, newest.State)
	}
	return fmt.Sprintf("waiting: generation %d (pid %d) serves; older generations still hold the listeners: %s",
		newest.Gen, newest.Pid, strings.Join(old, "; "))
}

func since(t *time.Time, now time.Time) string {
	if t == nil {
		return "?"
	}
	return now.Sub(*t).Round(time.Second).String()
}

// deadlineNote is ", hard stop at 12:35:05 (in 4m54s)" for g's deadline.
func deadlineNote(g api.GenStatus, now time.Time) string {
	if g.Deadline == nil {
		return ""
	}
	return fmt.Sprintf(", %s at %s (in %s)", g.DeadlineAction, g.Deadline.Local().Format(time.TimeOnly), g.Deadline.Sub(now).Round(time.Second))
}

// terminal reports whether w is a terminal.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	tty := false
	_ = rc.Control(func(fd uintptr) { tty = isTerminal(int(fd)) })
	return tty
}
