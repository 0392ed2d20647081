package lifecycle

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt with the actions the machine emits now")

// TestScripts runs the golden scripts in testdata/*.txt. A script is one
// command per line; the lines indented by two spaces that follow a command
// are its output, and are what the test compares (-update rewrites them).
//
//	# comment
//	config ready=30s drain=5m grace=10s max=8 backoff=500ms..30s stable=10s
//	+0s reload 1                      events: an optional time since t0,
//	+20ms checked g1 [err=TEXT]       then the event; without a time an
//	+25ms started g1 pid=100          event happens at the time of the
//	+25ms started g1 err=TEXT         previous one
//	+60ms ready g1
//	+1s released g1
//	+1s exited g1 status=0 [err=TEXT]
//	+5m tick
//	stop [fast] 9
//	gens                              prints the generation table
//	next                              prints NextDeadline and Backoff
//
// Output lines are the actions, one per line (see fmtAction); lines of
// "gens" and "next" start with "= ". The machine's invariants are checked
// after every event, and when the script ends with the machine exited,
// every request must have had exactly one reply.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scripts in testdata")
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got := runScript(t, string(data))
			if got == string(data) {
				return
			}
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("updated %s", path)
				return
			}
			t.Errorf("%s: output differs (-want +got); rerun with -update to accept:\n%s", path, lineDiff(string(data), got))
		})
	}
}

// runScript runs the commands of a script and returns it with fresh output.
func runScript(t *testing.T, script string) string {
	var out strings.Builder
	cfg := DefaultConfig()
	var h *harness
	now := t0
	lines := strings.Split(strings.TrimRight(script, "\n"), "\n")
	for i, line := range lines {
		if strings.HasPrefix(line, "  ") {
			continue // old output
		}
		out.WriteString(line + "\n")
		cmd := strings.TrimSpace(line)
		if cmd == "" || strings.HasPrefix(cmd, "#") {
			continue
		}
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("line %d: %q: %s", i+1, line, fmt.Sprintf(format, args...))
		}
		if strings.HasPrefix(cmd, "config ") {
			if h != nil {
				fail("config after the first event")
			}
			if err := parseConfig(&cfg, strings.Fields(cmd)[1:]); err != nil {
				fail("%v", err)
			}
			continue
		}
		if h == nil {
			h = newHarness(t, cfg)
		}
		switch cmd {
		case "gens":
			gens := h.m.Generations()
			if len(gens) == 0 {
				out.WriteString("  = no generations\n")
			}
			for _, g := range gens {
				out.WriteString("  = " + fmtGen(g) + "\n")
			}
			continue
		case "next":
			crashes, restartAt := h.m.Backoff()
			fmt.Fprintf(&out, "  = next %s, crashes %d, restart %s\n", fmtTime(h.m.NextDeadline()), crashes, fmtTime(restartAt))
			continue
		}
		ev, err := parseEvent(cmd, &now)
		if err != nil {
			fail("%v", err)
		}
		for _, a := range h.step(ev) {
			out.WriteString("  " + fmtAction(a) + "\n")
		}
	}
	if h != nil && h.m.Exited() {
		h.checkAllReplied()
	}
	return out.String()
}

func parseConfig(c *Config, fields []string) error {
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("config: want key=value, got %q", f)
		}
		var err error
		switch k {
		case "ready":
			c.ReadyTimeout, err = time.ParseDuration(v)
		case "drain":
			c.DrainTimeout, err = time.ParseDuration(v)
		case "grace":
			c.KillGrace, err = time.ParseDuration(v)
		case "stable":
			c.StableAfter, err = time.ParseDuration(v)
		case "max":
			c.MaxGenerations, err = strconv.Atoi(v)
		case "backoff":
			lo, hi, ok := strings.Cut(v, "..")
			if !ok {
				return fmt.Errorf("config: backoff=MIN..MAX, got %q", v)
			}
			if c.BackoffMin, err = time.ParseDuration(lo); err == nil {
				c.BackoffMax, err = time.ParseDuration(hi)
			}
		default:
			return fmt.Errorf("config: unknown key %q", k)
		}
		if err != nil {
			return fmt.Errorf("config %s: %w", k, err)
		}
	}
	return nil
}

// parseEvent parses one event line; *now is the time of the previous event
// and becomes the time of this one.
func parseEvent(line string, now *time.Time) (Event, error) {
	var errText string
	if before, after, ok := strings.Cut(line, " err="); ok {
		line, errText = before, after
	}
	var childErr error
	if errText != "" {
		childErr = errors.New(errText)
	}
	fields := strings.Fields(line)
	if len(fields) > 0 && strings.HasPrefix(fields[0], "+") {
		d, err := time.ParseDuration(fields[0][1:])
		if err != nil {
			return nil, err
		}
		if t := t0.Add(d); t.Before(*now) {
			return nil, fmt.Errorf("time %s goes back before %s", fields[0], rel(*now))
		} else {
			*now = t
		}
		fields = fields[1:]
	}
	if len(fields) == 0 {
		return nil, errors.New("no event")
	}
	at := *now
	args := map[string]string{}
	var gen Gen
	var plain []string
	for _, f := range fields[1:] {
		switch k, v, ok := strings.Cut(f, "="); {
		case ok:
			args[k] = v
		case strings.HasPrefix(f, "g"):
			n, err := strconv.Atoi(f[1:])
			if err != nil {
				return nil, fmt.Errorf("bad generation %q", f)
			}
			gen = Gen(n)
		default:
			plain = append(plain, f)
		}
	}
	num := func(s string) (int, error) {
		if s == "" {
			return 0, errors.New("missing number")
		}
		return strconv.Atoi(s)
	}
	last := func() string {
		if len(plain) == 0 {
			return ""
		}
		return plain[len(plain)-1]
	}
	switch fields[0] {
	case "reload":
		n, err := num(last())
		return ReloadRequested{At: at, Req: RequestID(n)}, err
	case "stop":
		n, err := num(last())
		return StopRequested{At: at, Req: RequestID(n), Fast: len(plain) == 2 && plain[0] == "fast"}, err
	case "checked":
		return CheckDone{At: at, Gen: gen, Err: childErr}, nil
	case "started":
		if childErr != nil {
			return Started{At: at, Gen: gen, Err: childErr}, nil
		}
		pid, err := num(args["pid"])
		return Started{At: at, Gen: gen, Pid: pid}, err
	case "ready":
		return Ready{At: at, Gen: gen}, nil
	case "released":
		return Released{At: at, Gen: gen}, nil
	case "exited":
		status, err := num(args["status"])
		return Exited{At: at, Gen: gen, Status: status, Err: childErr}, err
	case "tick":
		return Tick{At: at}, nil
	}
	return nil, fmt.Errorf("unknown event %q", fields[0])
}

// TestParseEventRoundTrip keeps the script syntax and fmtEvent in step.
func TestParseEventRoundTrip(t *testing.T) {
	for _, ev := range []Event{
		ReloadRequested{At: at(ms), Req: 3},
		CheckDone{At: at(2 * ms), Gen: 1},
		CheckDone{At: at(2 * ms), Gen: 1, Err: errBadConfig},
		Started{At: at(3 * ms), Gen: 2, Pid: 42},
		Started{At: at(3 * ms), Gen: 2, Err: errNoBinary},
		Ready{At: at(time.Second), Gen: 2},
		Released{At: at(time.Second), Gen: 1},
		Exited{At: at(time.Minute), Gen: 1, Status: 137},
		Exited{At: at(time.Minute), Gen: 1, Status: 1, Err: errBind},
		Tick{At: at(time.Hour)},
		StopRequested{At: at(time.Hour), Req: 9},
		StopRequested{At: at(time.Hour), Req: 10, Fast: true},
	} {
		now := t0
		got, err := parseEvent(fmtEvent(ev), &now)
		if err != nil {
			t.Errorf("parse %q: %v", fmtEvent(ev), err)
			continue
		}
		if fmtEvent(got) != fmtEvent(ev) {
			t.Errorf("round trip of %q gave %q", fmtEvent(ev), fmtEvent(got))
		}
	}
}
