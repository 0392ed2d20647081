package lifecycle

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// step is one event of a scenario and the actions it must produce, in order.
type step struct {
	ev    Event
	want  []string
	check func(t *testing.T, m *Machine, acts []Action)
}

func on(ev Event, want ...string) step { return step{ev: ev, want: want} }

// then adds a check of the machine's state after the step.
func (s step) then(f func(t *testing.T, m *Machine, acts []Action)) step {
	s.check = f
	return s
}

type scenario struct {
	name  string
	cfg   func(*Config) // changes to DefaultConfig
	steps []step
}

func seq(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// transcript renders events and actions the way testdata scripts do.
func transcript(evs []Event, acts [][]string) string {
	var b strings.Builder
	for i, ev := range evs {
		b.WriteString(fmtEvent(ev) + "\n")
		for _, a := range acts[i] {
			b.WriteString("  " + a + "\n")
		}
	}
	return b.String()
}

// runScenario steps the machine through sc, comparing the actions of every
// step, then drives it to its exit and checks every request got one reply.
func runScenario(t *testing.T, sc scenario) *harness {
	cfg := DefaultConfig()
	if sc.cfg != nil {
		sc.cfg(&cfg)
	}
	h := newHarness(t, cfg)
	var evs []Event
	var got, want [][]string
	for _, s := range sc.steps {
		acts := h.step(s.ev)
		evs = append(evs, s.ev)
		g := []string{}
		if len(acts) > 0 {
			g = strings.Split(fmtActions(acts), "\n")
		}
		got, want = append(got, g), append(want, s.want)
		if strings.Join(g, "\n") != strings.Join(s.want, "\n") {
			t.Fatalf("actions differ at %s (-want +got):\n%s", fmtEvent(s.ev), lineDiff(transcript(evs, want), transcript(evs, got)))
		}
		if s.check != nil {
			s.check(t, h.m, acts)
		}
	}
	h.quiesce()
	return h
}

// Reusable openings.
var (
	// up1: the first reload brings g1 (pid 100) up.
	up1 = []step{
		on(ReloadRequested{At: t0, Req: 1}, "check g1"),
		on(CheckDone{At: at(20 * ms), Gen: 1}, "start g1"),
		on(Started{At: at(25 * ms), Gen: 1, Pid: 100}),
		on(Ready{At: at(60 * ms), Gen: 1}, "reply [1] g1 ok"),
	}
	// up2: request 2 at 1s makes g2 (pid 200) active at 1.1s; g1 drains
	// and the reply waits for g1 to release the listeners.
	up2 = []step{
		on(ReloadRequested{At: at(time.Second), Req: 2}, "check g2"),
		on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
		on(Started{At: at(1025 * ms), Gen: 2, Pid: 200}),
		on(Ready{At: at(1100 * ms), Gen: 2}, "signal g1 drain", "watch-release g1"),
	}
)

// Small assertions used by the scenarios.

func wantTable(t *testing.T, m *Machine, want ...string) {
	t.Helper()
	var got []string
	for _, g := range m.Generations() {
		got = append(got, fmtGen(g))
	}
	if g, w := strings.Join(got, "\n"), strings.Join(want, "\n"); g != w {
		t.Fatalf("generations differ (-want +got):\n%s", lineDiff(w, g))
	}
}

func wantNext(t *testing.T, m *Machine, want time.Time) {
	t.Helper()
	if got := m.NextDeadline(); !got.Equal(want) {
		t.Fatalf("NextDeadline = %s, want %s", fmtTime(got), fmtTime(want))
	}
}

func wantBackoff(t *testing.T, m *Machine, crashes int, restartAt time.Time) {
	t.Helper()
	c, r := m.Backoff()
	if c != crashes || !r.Equal(restartAt) {
		t.Fatalf("Backoff() = %d, %s; want %d, %s", c, fmtTime(r), crashes, fmtTime(restartAt))
	}
}

// replyErr is the error of the Reply action answering req.
func replyErr(t *testing.T, acts []Action, req RequestID) error {
	t.Helper()
	for _, a := range acts {
		if r, ok := a.(Reply); ok {
			for _, id := range r.Reqs {
				if id == req {
					return r.Err
				}
			}
		}
	}
	t.Fatalf("no reply to request %d in:\n%s", req, fmtActions(acts))
	return nil
}

func exitErr(t *testing.T, acts []Action) error {
	t.Helper()
	for _, a := range acts {
		if e, ok := a.(Exit); ok {
			return e.Err
		}
	}
	t.Fatalf("no exit in:\n%s", fmtActions(acts))
	return nil
}

// wantChildErr checks err is sentinel, wraps the child's error and says
// what the child said. The text check is only for the child's own words.
func wantChildErr(t *testing.T, err, sentinel, child error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Errorf("error %q is not %v", err, sentinel)
	}
	if !errors.Is(err, child) {
		t.Errorf("error %q does not wrap the child's error", err)
	}
	if err != nil && !strings.Contains(err.Error(), child.Error()) {
		t.Errorf("error %q does not include the child's text %q", err, child.Error())
	}
}

func wantCounters(t *testing.T, m *Machine, want Counters) {
	t.Helper()
	if got := m.Counters(); got != want {
		t.Errorf("Counters() = %+v, want %+v", got, want)
	}
}

var (
	errBadConfig = errors.New("haproxy.cfg:12: unknown keyword 'bnd'")
	errNoBinary  = errors.New(`exec: "haproxy": executable file not found in $PATH`)
	errBind      = errors.New("[ALERT] cannot bind socket [0.0.0.0:80]")
)

func TestMachine(t *testing.T) {
	const s = time.Second
	scenarios := []scenario{
		{
			name: "first reload succeeds without a drain",
			steps: []step{
				on(ReloadRequested{At: t0, Req: 1}, "check g1").then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 checking")
					wantNext(t, m, time.Time{})
				}),
				on(CheckDone{At: at(20 * ms), Gen: 1}, "start g1").then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 starting deadline=+30.02s")
				}),
				on(Started{At: at(25 * ms), Gen: 1, Pid: 100}).then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 starting pid=100 deadline=+30.025s")
					wantNext(t, m, at(30*s+25*ms))
				}),
				on(Ready{At: at(60 * ms), Gen: 1}, "reply [1] g1 ok").then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 active pid=100")
					wantNext(t, m, time.Time{})
					if got, want := m.LastReload(), (ReloadResult{Gen: 1, At: at(60 * ms), Duration: 60 * ms, Coalesced: 1, Kind: KindStart, Reqs: []RequestID{1}, Seq: 1}); fmt.Sprint(got) != fmt.Sprint(want) {
						t.Errorf("LastReload() = %+v, want %+v", got, want)
					}
					wantCounters(t, m, Counters{}) // the first start is not a reload
				}),
			},
		},
		{
			name: "second reload drains the previous generation and replies after it released",
			steps: seq(up1, up2, []step{
				on(Tick{At: at(1110 * ms)}).then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 draining pid=100 deadline=+5m1.1s", "g2 active pid=200")
					wantNext(t, m, at(5*time.Minute+1100*ms))
					if got := m.LastReload().Gen; got != 1 {
						t.Errorf("LastReload().Gen = %d before the reply, want 1", got)
					}
				}),
				on(Released{At: at(1150 * ms), Gen: 1}, "reply [2] g2 ok").then(func(t *testing.T, m *Machine, _ []Action) {
					if got := m.LastReload(); got.Gen != 2 || got.Err != nil || got.Duration != 150*ms {
						t.Errorf("LastReload() = %+v, want g2 ok in 150ms", got)
					}
				}),
				on(Exited{At: at(3 * s), Gen: 1}, "forget g1").then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g2 active pid=200")
					wantNext(t, m, time.Time{})
				}),
			}),
		},
		{
			name: "reply when the old generation exits instead of releasing",
			steps: seq(up1, up2, []step{
				on(Exited{At: at(2 * s), Gen: 1}, "forget g1", "reply [2] g2 ok"),
			}),
		},
		{
			name: "requests during a reload coalesce into exactly one next reload",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(1000 * ms), Req: 2}, "check g2"),
				on(ReloadRequested{At: at(1010 * ms), Req: 3}),
				on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
				on(ReloadRequested{At: at(1030 * ms), Req: 4}),
				on(Started{At: at(1040 * ms), Gen: 2, Pid: 200}),
				on(ReloadRequested{At: at(1050 * ms), Req: 5}),
				on(Ready{At: at(1100 * ms), Gen: 2}, "signal g1 drain", "watch-release g1"),
				on(Released{At: at(1150 * ms), Gen: 1}, "reply [2] g2 ok", "check g3"),
				on(CheckDone{At: at(1170 * ms), Gen: 3}, "start g3"),
				on(Started{At: at(1175 * ms), Gen: 3, Pid: 300}),
				// g1 already released: only g2 is waited for.
				on(Ready{At: at(1250 * ms), Gen: 3}, "signal g2 drain", "watch-release g2"),
				on(Released{At: at(1300 * ms), Gen: 2}, "reply [3 4 5] g3 ok").then(func(t *testing.T, m *Machine, _ []Action) {
					if got := m.LastReload(); got.Gen != 3 || got.Coalesced != 3 {
						t.Errorf("LastReload() = %+v, want g3 answering 3 requests", got)
					}
					wantCounters(t, m, Counters{ReloadsOK: 2})
				}),
				on(Exited{At: at(2 * s), Gen: 1}, "forget g1"),
				on(Exited{At: at(3 * s), Gen: 2}, "forget g2"),
			}),
		},
		{
			name: "check failure replies the error and leaves the active generation untouched",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(CheckDone{At: at(1020 * ms), Gen: 2, Err: errBadConfig}, "forget g2", "reply [2] g2 err=config check failed: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						err := replyErr(t, acts, 2)
						wantChildErr(t, err, ErrCheckFailed, errBadConfig)
						wantTable(t, m, "g1 active pid=100")
						wantCounters(t, m, Counters{ReloadsFailed: 1})
						if got := m.LastReload(); got.Gen != 2 || !errors.Is(got.Err, ErrCheckFailed) {
							t.Errorf("LastReload() = %+v, want g2 failed", got)
						}
					}),
				// The machine goes on: the next reload works.
				on(ReloadRequested{At: at(2 * s), Req: 3}, "check g3"),
				on(CheckDone{At: at(2020 * ms), Gen: 3}, "start g3"),
				on(Started{At: at(2025 * ms), Gen: 3, Pid: 300}),
				on(Ready{At: at(2100 * ms), Gen: 3}, "signal g1 drain", "watch-release g1"),
				on(Released{At: at(2150 * ms), Gen: 1}, "reply [3] g3 ok"),
			}),
		},
		{
			name: "start error replies the error and leaves the active generation untouched",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
				on(Started{At: at(1025 * ms), Gen: 2, Err: errNoBinary}, "forget g2", "reply [2] g2 err=start failed: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						wantChildErr(t, replyErr(t, acts, 2), ErrStartFailed, errNoBinary)
						wantTable(t, m, "g1 active pid=100")
						wantNext(t, m, time.Time{})
					}),
			}),
		},
		{
			name: "exit before ready reports the exit status and the child's text",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
				on(Started{At: at(1025 * ms), Gen: 2, Pid: 200}),
				on(Exited{At: at(1040 * ms), Gen: 2, Status: 3, Err: errBind}, "forget g2", "reply [2] g2 err=exited before it was ready: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						err := replyErr(t, acts, 2)
						wantChildErr(t, err, ErrExitedBeforeReady, errBind)
						// The exit status is the child's too.
						if !strings.Contains(err.Error(), "status 3") {
							t.Errorf("error %q does not include the exit status 3", err)
						}
						wantTable(t, m, "g1 active pid=100")
					}),
			}),
		},
		{
			name: "exit before ready without output still reports the status",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
				on(Started{At: at(1025 * ms), Gen: 2, Pid: 200}),
				on(Exited{At: at(1040 * ms), Gen: 2, Status: 139}, "forget g2", "reply [2] g2 err=exited before it was ready: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						err := replyErr(t, acts, 2)
						if !errors.Is(err, ErrExitedBeforeReady) || !strings.Contains(err.Error(), "status 139") {
							t.Errorf("error %q: want ErrExitedBeforeReady with status 139", err)
						}
					}),
			}),
		},
		{
			name: "ready timeout kills the new generation and keeps the old one",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
				on(Started{At: at(1025 * ms), Gen: 2, Pid: 200}).then(func(t *testing.T, m *Machine, _ []Action) {
					wantNext(t, m, at(31*s+25*ms))
				}),
				on(Tick{At: at(31*s + 24*ms)}),
				on(Tick{At: at(31*s + 25*ms)}, "signal g2 kill", "reply [2] g2 err=not ready in time: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						if err := replyErr(t, acts, 2); !errors.Is(err, ErrNotReady) {
							t.Errorf("reply error %q is not ErrNotReady", err)
						}
						wantTable(t, m, "g1 active pid=100", "g2 killed pid=200")
						wantNext(t, m, time.Time{})
						wantCounters(t, m, Counters{ReloadsFailed: 1, Kills: 1})
					}),
				on(Ready{At: at(31*s + 30*ms), Gen: 2}), // too late
				on(Exited{At: at(31*s + 40*ms), Gen: 2, Status: 137}, "forget g2").then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 active pid=100")
				}),
			}),
		},
		{
			name: "drain deadline hard-stops, then kills after KillGrace",
			steps: seq(up1, up2, []step{
				on(Tick{At: at(5*time.Minute + 1099*ms)}),
				on(Tick{At: at(5*time.Minute + 1100*ms)}, "signal g1 stop").then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 stopping pid=100 deadline=+5m11.1s", "g2 active pid=200")
					wantCounters(t, m, Counters{HardStops: 1})
				}),
				on(Tick{At: at(5*time.Minute + 11100*ms)}, "signal g1 kill").then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 killed pid=100", "g2 active pid=200")
					wantNext(t, m, time.Time{})
				}),
				// The reply waited the whole time for g1 to let go.
				on(Exited{At: at(5*time.Minute + 11200*ms), Gen: 1, Status: 137}, "forget g1", "reply [2] g2 ok"),
			}),
		},
		{
			name: "released generation is still hard-stopped at its drain deadline",
			steps: seq(up1, up2, []step{
				on(Released{At: at(1150 * ms), Gen: 1}, "reply [2] g2 ok"),
				on(Tick{At: at(5*time.Minute + 1100*ms)}, "signal g1 stop"),
				on(Exited{At: at(5*time.Minute + 1200*ms), Gen: 1, Status: 143}, "forget g1"),
			}),
		},
		{
			name: "generation cap hard-stops the oldest draining generation first",
			cfg:  func(c *Config) { c.MaxGenerations = 2 },
			steps: seq(up1, up2, []step{
				on(Released{At: at(1150 * ms), Gen: 1}, "reply [2] g2 ok"),
				on(ReloadRequested{At: at(2 * s), Req: 3}, "check g3"),
				on(CheckDone{At: at(2020 * ms), Gen: 3}, "start g3"),
				on(Started{At: at(2025 * ms), Gen: 3, Pid: 300}),
				on(Ready{At: at(2100 * ms), Gen: 3}, "signal g2 drain", "watch-release g2", "signal g1 stop").
					then(func(t *testing.T, m *Machine, _ []Action) {
						wantTable(t, m,
							"g1 stopping pid=100 deadline=+12.1s released",
							"g2 draining pid=200 deadline=+5m2.1s",
							"g3 active pid=300")
					}),
				on(Released{At: at(2150 * ms), Gen: 2}, "reply [3] g3 ok"),
				on(ReloadRequested{At: at(3 * s), Req: 4}, "check g4"),
				on(CheckDone{At: at(3020 * ms), Gen: 4}, "start g4"),
				on(Started{At: at(3025 * ms), Gen: 4, Pid: 400}),
				// g1 is already stopping: it does not count and is not signalled again.
				on(Ready{At: at(3100 * ms), Gen: 4}, "signal g3 drain", "watch-release g3", "signal g2 stop"),
				on(Released{At: at(3150 * ms), Gen: 3}, "reply [4] g4 ok").then(func(t *testing.T, m *Machine, _ []Action) {
					wantCounters(t, m, Counters{ReloadsOK: 3, HardStops: 2})
				}),
			}),
		},
		{
			name: "generation cap of one hard-stops the previous generation at the switch",
			cfg:  func(c *Config) { c.MaxGenerations = 1 },
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
				on(Started{At: at(1025 * ms), Gen: 2, Pid: 200}),
				on(Ready{At: at(1100 * ms), Gen: 2}, "signal g1 drain", "watch-release g1", "signal g1 stop"),
				on(Exited{At: at(1200 * ms), Gen: 1, Status: 143}, "forget g1", "reply [2] g2 ok"),
			}),
		},
		{
			name: "crash of the active generation starts a replacement at once",
			steps: seq(up1, []step{
				on(Exited{At: at(time.Minute), Gen: 1, Status: 139}, "forget g1", "start g2 replacement").
					then(func(t *testing.T, m *Machine, _ []Action) {
						wantTable(t, m, "g2 starting replacement deadline=+1m30s")
						wantCounters(t, m, Counters{Crashes: 1})
						wantBackoff(t, m, 1, time.Time{})
					}),
				on(Started{At: at(time.Minute + 5*ms), Gen: 2, Pid: 200}),
				on(Ready{At: at(time.Minute + 50*ms), Gen: 2}).then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g2 active pid=200 replacement")
					if got := m.LastReload(); got.Gen != 1 {
						t.Errorf("LastReload() = %+v, want still g1's: a replacement is not a reload", got)
					}
					// Replacements are not reloads.
					wantCounters(t, m, Counters{Crashes: 1})
				}),
			}),
		},
		{
			name: "repeated crashes back off from BackoffMin, doubling up to BackoffMax",
			cfg: func(c *Config) {
				c.BackoffMin, c.BackoffMax, c.StableAfter = 500*ms, 2*s, 10*s
			},
			steps: seq(up1, []step{
				on(Exited{At: at(s), Gen: 1, Status: 139}, "forget g1", "start g2 replacement"),
				on(Started{At: at(1005 * ms), Gen: 2, Pid: 200}),
				on(Ready{At: at(1050 * ms), Gen: 2}),
				on(Exited{At: at(2 * s), Gen: 2, Status: 139}, "forget g2").then(func(t *testing.T, m *Machine, _ []Action) {
					wantBackoff(t, m, 2, at(2500*ms))
					wantNext(t, m, at(2500*ms))
				}),
				on(Tick{At: at(2499 * ms)}),
				on(Exited{At: at(2499 * ms), Gen: 2}), // stale; still no start
				on(Tick{At: at(2500 * ms)}, "start g3 replacement"),
				on(Started{At: at(2505 * ms), Gen: 3, Pid: 300}),
				on(Ready{At: at(2550 * ms), Gen: 3}),
				on(Exited{At: at(3 * s), Gen: 3, Status: 139}, "forget g3").then(func(t *testing.T, m *Machine, _ []Action) {
					wantBackoff(t, m, 3, at(4*s)) // 1s
				}),
				on(Tick{At: at(3999 * ms)}),
				on(Tick{At: at(4 * s)}, "start g4 replacement"),
				on(Started{At: at(4005 * ms), Gen: 4, Pid: 400}),
				on(Ready{At: at(4050 * ms), Gen: 4}),
				on(Exited{At: at(5 * s), Gen: 4, Status: 139}, "forget g4").then(func(t *testing.T, m *Machine, _ []Action) {
					wantBackoff(t, m, 4, at(7*s)) // 2s
				}),
				on(Tick{At: at(7 * s)}, "start g5 replacement"),
				on(Started{At: at(7005 * ms), Gen: 5, Pid: 500}),
				on(Ready{At: at(7050 * ms), Gen: 5}),
				on(Exited{At: at(8 * s), Gen: 5, Status: 139}, "forget g5").then(func(t *testing.T, m *Machine, _ []Action) {
					wantBackoff(t, m, 5, at(10*s)) // capped at 2s
					wantNext(t, m, at(10*s))
				}),
				on(Tick{At: at(10 * s)}, "start g6 replacement"),
				on(Started{At: at(10005 * ms), Gen: 6, Pid: 600}),
				on(Ready{At: at(10050 * ms), Gen: 6}),
				// Stable for longer than StableAfter: the next crash restarts at once.
				on(Exited{At: at(30 * s), Gen: 6, Status: 139}, "forget g6", "start g7 replacement").
					then(func(t *testing.T, m *Machine, _ []Action) {
						wantBackoff(t, m, 1, time.Time{})
						wantCounters(t, m, Counters{Crashes: 6})
					}),
			}),
		},
		{
			name: "replacement that fails to start backs off",
			steps: seq(up1, []step{
				on(Exited{At: at(s), Gen: 1, Status: 139}, "forget g1", "start g2 replacement"),
				on(Started{At: at(1005 * ms), Gen: 2, Err: errNoBinary}, "forget g2").then(func(t *testing.T, m *Machine, _ []Action) {
					wantBackoff(t, m, 2, at(1505*ms))
					wantCounters(t, m, Counters{Crashes: 1})
				}),
				on(Tick{At: at(1505 * ms)}, "start g3 replacement"),
				on(Started{At: at(1510 * ms), Gen: 3, Pid: 300}),
				on(Ready{At: at(1550 * ms), Gen: 3}),
			}),
		},
		{
			name: "replacement not ready in time is killed and retried after the backoff",
			steps: seq(up1, []step{
				on(Exited{At: at(s), Gen: 1, Status: 139}, "forget g1", "start g2 replacement"),
				on(Started{At: at(1005 * ms), Gen: 2, Pid: 200}),
				on(Tick{At: at(31005 * ms)}, "signal g2 kill").then(func(t *testing.T, m *Machine, _ []Action) {
					wantBackoff(t, m, 2, at(31505*ms))
				}),
				on(Exited{At: at(31010 * ms), Gen: 2, Status: 137}, "forget g2"),
				on(Tick{At: at(31505 * ms)}, "start g3 replacement"),
			}),
		},
		{
			name: "reload during a crash backoff runs the checked reload instead",
			steps: seq(up1, []step{
				on(Exited{At: at(s), Gen: 1, Status: 139}, "forget g1", "start g2 replacement"),
				on(Started{At: at(1005 * ms), Gen: 2, Pid: 200}),
				on(Ready{At: at(1050 * ms), Gen: 2}),
				on(Exited{At: at(2 * s), Gen: 2, Status: 139}, "forget g2"),
				on(ReloadRequested{At: at(2100 * ms), Req: 2}, "check g3"),
				on(CheckDone{At: at(2120 * ms), Gen: 3}, "start g3"),
				on(Started{At: at(2125 * ms), Gen: 3, Pid: 300}),
				on(Ready{At: at(2200 * ms), Gen: 3}, "reply [2] g3 ok").then(func(t *testing.T, m *Machine, _ []Action) {
					wantBackoff(t, m, 2, time.Time{})
					wantNext(t, m, at(12200*ms)) // the streak ends when g3 has been up for StableAfter
				}),
				on(Tick{At: at(2500 * ms)}),
				on(Tick{At: at(12200 * ms)}).then(func(t *testing.T, m *Machine, _ []Action) {
					wantBackoff(t, m, 0, time.Time{})
					wantNext(t, m, time.Time{})
				}),
			}),
		},
		{
			name: "crash during a reload waits for that reload",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(Exited{At: at(1010 * ms), Gen: 1, Status: 139}, "forget g1"),
				on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
				on(Started{At: at(1025 * ms), Gen: 2, Pid: 200}),
				on(Ready{At: at(1100 * ms), Gen: 2}, "reply [2] g2 ok").then(func(t *testing.T, m *Machine, _ []Action) {
					wantCounters(t, m, Counters{ReloadsOK: 1, Crashes: 1})
				}),
			}),
		},
		{
			name: "crash during a reload that then fails starts a replacement",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(Exited{At: at(1010 * ms), Gen: 1, Status: 139}, "forget g1"),
				on(CheckDone{At: at(1020 * ms), Gen: 2, Err: errBadConfig}, "forget g2", "reply [2] g2 err=config check failed: ...", "start g3 replacement"),
				on(Started{At: at(1025 * ms), Gen: 3, Pid: 300}),
				on(Ready{At: at(1100 * ms), Gen: 3}).then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g3 active pid=300 replacement")
				}),
			}),
		},
		{
			// NOTE: docs/design.md says a crash of the active generation starts a
			// replacement at once. While the reload that made it active still
			// waits for the older generation to release the listeners, the
			// replacement waits too (up to DrainTimeout+KillGrace when the old
			// one never releases). This test pins down today's behaviour.
			name: "crash of the new active before the old one released answers at once and replaces it",
			steps: seq(up1, up2, []step{
				on(Exited{At: at(1200 * ms), Gen: 2, Status: 139}, "forget g2",
					"reply [2] g2 err=exited right after it became active, before the reload was acknowledged: ...",
					"start g3 replacement").
					then(func(t *testing.T, m *Machine, acts []Action) {
						if err := replyErr(t, acts, 2); !errors.Is(err, ErrExitedAfterReady) || !strings.Contains(err.Error(), "status 139") {
							t.Errorf("error %q: want ErrExitedAfterReady with status 139", err)
						}
					}),
				on(Started{At: at(1205 * ms), Gen: 3, Pid: 300}),
				on(Released{At: at(1300 * ms), Gen: 1}),
				on(Ready{At: at(1400 * ms), Gen: 3}),
			}),
		},
		{
			name: "failed first reload (check) exits with its error",
			steps: []step{
				on(ReloadRequested{At: t0, Req: 1}, "check g1"),
				on(ReloadRequested{At: at(10 * ms), Req: 2}),
				on(CheckDone{At: at(20 * ms), Gen: 1, Err: errBadConfig},
					"forget g1",
					"reply [1] g1 err=config check failed: ...",
					"reply [2] err=config check failed: ...",
					"exit err=config check failed: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						wantChildErr(t, exitErr(t, acts), ErrCheckFailed, errBadConfig)
						wantChildErr(t, replyErr(t, acts, 2), ErrCheckFailed, errBadConfig)
						if !m.Stopping() || !m.Exited() {
							t.Errorf("Stopping() = %v, Exited() = %v; want both", m.Stopping(), m.Exited())
						}
					}),
				on(ReloadRequested{At: at(s), Req: 3}, "reply [3] err=baton is stopping"),
			},
		},
		{
			name: "failed first reload (start) exits with its error",
			steps: []step{
				on(ReloadRequested{At: t0, Req: 1}, "check g1"),
				on(CheckDone{At: at(20 * ms), Gen: 1}, "start g1"),
				on(Started{At: at(25 * ms), Gen: 1, Err: errNoBinary}, "forget g1", "reply [1] g1 err=start failed: ...", "exit err=start failed: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						wantChildErr(t, exitErr(t, acts), ErrStartFailed, errNoBinary)
					}),
			},
		},
		{
			name: "failed first reload (exit before ready) exits with the child's error",
			steps: []step{
				on(ReloadRequested{At: t0, Req: 1}, "check g1"),
				on(CheckDone{At: at(20 * ms), Gen: 1}, "start g1"),
				on(Started{At: at(25 * ms), Gen: 1, Pid: 100}),
				on(Exited{At: at(40 * ms), Gen: 1, Status: 1, Err: errBind},
					"forget g1", "reply [1] g1 err=exited before it was ready: ...", "exit err=exited before it was ready: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						wantChildErr(t, exitErr(t, acts), ErrExitedBeforeReady, errBind)
					}),
			},
		},
		{
			name: "failed first reload (not ready) exits only after its process is gone",
			steps: []step{
				on(ReloadRequested{At: t0, Req: 1}, "check g1"),
				on(CheckDone{At: at(20 * ms), Gen: 1}, "start g1"),
				on(Started{At: at(25 * ms), Gen: 1, Pid: 100}),
				on(Tick{At: at(30*s + 25*ms)}, "signal g1 kill", "reply [1] g1 err=not ready in time: ...").
					then(func(t *testing.T, m *Machine, _ []Action) {
						if !m.Stopping() || m.Exited() {
							t.Errorf("Stopping() = %v, Exited() = %v; want stopping, not exited", m.Stopping(), m.Exited())
						}
					}),
				on(ReloadRequested{At: at(30*s + 30*ms), Req: 2}, "reply [2] err=baton is stopping"),
				on(StopRequested{At: at(30*s + 35*ms), Req: 9}),
				on(Exited{At: at(30*s + 40*ms), Gen: 1, Status: 137}, "forget g1", "reply [9] ok", "exit err=not ready in time: ...").
					then(func(t *testing.T, m *Machine, acts []Action) {
						if err := exitErr(t, acts); !errors.Is(err, ErrNotReady) {
							t.Errorf("exit error %q is not ErrNotReady", err)
						}
					}),
			},
		},
		{
			name: "graceful stop drains, answers pending requests, closes listeners, exits last",
			steps: seq(up1, up2, []step{
				on(Released{At: at(1150 * ms), Gen: 1}, "reply [2] g2 ok"),
				on(ReloadRequested{At: at(2 * s), Req: 3}, "check g3"),
				on(ReloadRequested{At: at(2010 * ms), Req: 4}),
				on(StopRequested{At: at(2020 * ms), Req: 9},
					"reply [4] err=baton is stopping",
					"reply [3] g3 err=baton is stopping",
					"forget g3",
					"signal g2 drain", "watch-release g2",
					"close-listeners").
					then(func(t *testing.T, m *Machine, acts []Action) {
						for _, req := range []RequestID{3, 4} {
							if err := replyErr(t, acts, req); !errors.Is(err, ErrStopping) {
								t.Errorf("reply to %d: %q is not ErrStopping", req, err)
							}
						}
						wantTable(t, m, "g1 draining pid=100 deadline=+5m1.1s released", "g2 draining pid=200 deadline=+5m2.02s")
					}),
				on(ReloadRequested{At: at(2030 * ms), Req: 5}, "reply [5] err=baton is stopping"),
				on(CheckDone{At: at(2040 * ms), Gen: 3}), // stale: g3 was dropped
				on(Exited{At: at(3 * s), Gen: 1}, "forget g1"),
				on(Released{At: at(3100 * ms), Gen: 2}),
				on(StopRequested{At: at(3200 * ms), Req: 10}),
				on(Exited{At: at(4 * s), Gen: 2}, "forget g2", "reply [9 10] ok", "exit ok"),
			}),
		},
		{
			name: "graceful stop lets drain deadlines escalate",
			steps: seq(up1, []step{
				on(StopRequested{At: at(s), Req: 9}, "signal g1 drain", "watch-release g1", "close-listeners"),
				on(Tick{At: at(5*time.Minute + s)}, "signal g1 stop"),
				on(Tick{At: at(5*time.Minute + 11*s)}, "signal g1 kill"),
				on(Exited{At: at(5*time.Minute + 12*s), Gen: 1, Status: 137}, "forget g1", "reply [9] ok", "exit ok"),
			}),
		},
		{
			name: "fast stop hard-stops every generation and kills after KillGrace",
			steps: seq(up1, up2, []step{
				on(Released{At: at(1150 * ms), Gen: 1}, "reply [2] g2 ok"),
				on(StopRequested{At: at(2 * s), Req: 9, Fast: true}, "signal g1 stop", "signal g2 stop", "close-listeners").
					then(func(t *testing.T, m *Machine, _ []Action) {
						wantTable(t, m, "g1 stopping pid=100 deadline=+12s released", "g2 stopping pid=200 deadline=+12s")
						wantCounters(t, m, Counters{ReloadsOK: 1, HardStops: 2})
					}),
				on(Exited{At: at(2100 * ms), Gen: 2, Status: 143}, "forget g2"),
				on(Tick{At: at(12 * s)}, "signal g1 kill"),
				on(Exited{At: at(12100 * ms), Gen: 1, Status: 137}, "forget g1", "reply [9] ok", "exit ok"),
			}),
		},
		{
			name: "fast stop escalates a graceful stop",
			steps: seq(up1, []step{
				on(StopRequested{At: at(s), Req: 9}, "signal g1 drain", "watch-release g1", "close-listeners"),
				on(StopRequested{At: at(2 * s), Req: 10}),
				on(StopRequested{At: at(3 * s), Req: 11, Fast: true}, "signal g1 stop"),
				on(StopRequested{At: at(4 * s), Req: 12, Fast: true}),
				on(Tick{At: at(13 * s)}, "signal g1 kill"),
				on(Exited{At: at(13100 * ms), Gen: 1, Status: 137}, "forget g1", "reply [9 10 11 12] ok", "exit ok"),
			}),
		},
		{
			name: "stop during a check drops the generation",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(StopRequested{At: at(1010 * ms), Req: 9},
					"reply [2] g2 err=baton is stopping", "forget g2",
					"signal g1 drain", "watch-release g1", "close-listeners"),
				on(CheckDone{At: at(1020 * ms), Gen: 2}),
				on(Exited{At: at(2 * s), Gen: 1}, "forget g1", "reply [9] ok", "exit ok"),
			}),
		},
		{
			name: "stop during a start kills the new generation",
			steps: seq(up1, []step{
				on(ReloadRequested{At: at(s), Req: 2}, "check g2"),
				on(CheckDone{At: at(1020 * ms), Gen: 2}, "start g2"),
				on(Started{At: at(1025 * ms), Gen: 2, Pid: 200}),
				on(StopRequested{At: at(1030 * ms), Req: 9},
					"reply [2] g2 err=baton is stopping", "signal g2 kill",
					"signal g1 drain", "watch-release g1", "close-listeners"),
				on(Ready{At: at(1040 * ms), Gen: 2}),
				on(Exited{At: at(1050 * ms), Gen: 2, Status: 137}, "forget g2"),
				on(Exited{At: at(2 * s), Gen: 1}, "forget g1", "reply [9] ok", "exit ok"),
			}),
		},
		{
			name: "fast stop during the first start",
			steps: []step{
				on(ReloadRequested{At: t0, Req: 1}, "check g1"),
				on(CheckDone{At: at(20 * ms), Gen: 1}, "start g1"),
				on(Started{At: at(25 * ms), Gen: 1, Pid: 100}),
				on(StopRequested{At: at(30 * ms), Req: 9, Fast: true}, "reply [1] g1 err=baton is stopping", "signal g1 kill", "close-listeners"),
				on(Exited{At: at(40 * ms), Gen: 1, Status: 137}, "forget g1", "reply [9] ok", "exit ok").
					then(func(t *testing.T, m *Machine, acts []Action) {
						if err := exitErr(t, acts); err != nil {
							t.Errorf("exit error %q after a requested stop, want nil", err)
						}
					}),
			},
		},
		{
			name: "stop during a crash backoff exits without starting the replacement",
			cfg:  func(c *Config) { c.BackoffMin = 500 * ms },
			steps: seq(up1, []step{
				on(Exited{At: at(s), Gen: 1, Status: 139}, "forget g1", "start g2 replacement"),
				on(Started{At: at(1005 * ms), Gen: 2, Pid: 200}),
				on(Ready{At: at(1050 * ms), Gen: 2}),
				on(Exited{At: at(2 * s), Gen: 2, Status: 139}, "forget g2"),
				on(StopRequested{At: at(2100 * ms), Req: 9}, "close-listeners", "reply [9] ok", "exit ok"),
				on(Tick{At: at(2500 * ms)}),
			}),
		},
		{
			name: "stale events are ignored",
			steps: seq(up1, []step{
				on(CheckDone{At: at(s), Gen: 7}),
				on(Started{At: at(s), Gen: 7, Pid: 700}),
				on(Ready{At: at(s), Gen: 7}),
				on(Released{At: at(s), Gen: 7}),
				on(Exited{At: at(s), Gen: 7}),
				on(Ready{At: at(s), Gen: 1}),
				on(CheckDone{At: at(s), Gen: 1}),
				on(CheckDone{At: at(s), Gen: 1, Err: errBadConfig}),
				on(Started{At: at(s), Gen: 1, Pid: 999}),
				on(Started{At: at(s), Gen: 1, Err: errNoBinary}).then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g1 active pid=100")
				}),
				on(ReloadRequested{At: at(2 * s), Req: 2}, "check g2"),
				on(CheckDone{At: at(2020 * ms), Gen: 2, Err: errBadConfig}, "forget g2", "reply [2] g2 err=config check failed: ..."),
				on(CheckDone{At: at(2030 * ms), Gen: 2}),
				on(Started{At: at(2030 * ms), Gen: 2, Pid: 200}),
				on(Ready{At: at(2030 * ms), Gen: 2}),
				on(Exited{At: at(2030 * ms), Gen: 2, Status: 1}),
				on(Exited{At: at(3 * s), Gen: 1, Status: 139}, "forget g1", "start g3 replacement"),
				on(Exited{At: at(3 * s), Gen: 1, Status: 139}),
				on(Ready{At: at(3 * s), Gen: 1}),
				// An event from the past does not move the clock back.
				on(Tick{At: t0}).then(func(t *testing.T, m *Machine, _ []Action) {
					wantTable(t, m, "g3 starting replacement deadline=+33s")
				}),
			}),
		},
		{
			name: "requests after the exit are answered",
			steps: seq(up1, []step{
				on(StopRequested{At: at(s), Req: 9, Fast: true}, "signal g1 stop", "close-listeners"),
				on(Exited{At: at(2 * s), Gen: 1, Status: 143}, "forget g1", "reply [9] ok", "exit ok"),
				on(ReloadRequested{At: at(3 * s), Req: 10}, "reply [10] err=baton is stopping"),
				on(StopRequested{At: at(4 * s), Req: 11}, "reply [11] ok"),
				on(StopRequested{At: at(5 * s), Req: 12, Fast: true}, "reply [12] ok"),
				on(Tick{At: at(time.Hour)}),
				on(Exited{At: at(time.Hour), Gen: 1}),
			}),
		},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) { runScenario(t, sc) })
	}
}

func TestNames(t *testing.T) {
	for s, want := range map[State]string{
		Checking: "checking", Starting: "starting", Active: "active",
		Draining: "draining", Stopping: "stopping", Killed: "killed", 0: "unknown",
	} {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q, want %q", int(s), got, want)
		}
	}
	for k, want := range map[SignalKind]string{Drain: "drain", Stop: "stop", Kill: "kill", 0: "unknown"} {
		if got := k.String(); got != want {
			t.Errorf("SignalKind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

// TestLineDiff keeps the failure output of the tests readable.
func TestLineDiff(t *testing.T) {
	got := lineDiff("a\nb\nc", "a\nx\nc")
	want := "  a\n- b\n+ x\n  c\n"
	if got != want {
		t.Errorf("lineDiff:\n%s\nwant:\n%s", got, want)
	}
	if s := fmtErr(fmt.Errorf("wrapped: %w", errBind)); !strings.HasPrefix(s, "err=UNEXPECTED") {
		t.Errorf("fmtErr of a non-sentinel error = %q", s)
	}
}

// A crash streak ends once the replacement has been active for StableAfter:
// consecutive crashes (and the status and metrics built on them) go back to
// 0 instead of showing an old streak forever.
func TestCrashStreakEndsWhenStable(t *testing.T) {
	cfg := DefaultConfig()
	m := New(cfg)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.Step(ReloadRequested{At: t0, Req: 1})
	m.Step(CheckDone{At: t0, Gen: 1})
	m.Step(Started{At: t0, Gen: 1, Pid: 100})
	m.Step(Ready{At: t0, Gen: 1})
	m.Step(Exited{At: t0.Add(time.Second), Gen: 1, Status: 139}) // replacement g2 starts at once
	m.Step(Started{At: t0.Add(time.Second), Gen: 2, Pid: 200})
	m.Step(Ready{At: t0.Add(2 * time.Second), Gen: 2})
	if c, _ := m.Backoff(); c != 1 {
		t.Fatalf("crashes %d after one crash, want 1", c)
	}
	stable := t0.Add(2*time.Second + cfg.StableAfter)
	if got := m.NextDeadline(); !got.Equal(stable) {
		t.Errorf("NextDeadline %s, want the end of the streak at %s", got, stable)
	}
	m.Step(Tick{At: stable})
	if c, _ := m.Backoff(); c != 0 {
		t.Errorf("crashes %d after the replacement stayed up for StableAfter, want 0", c)
	}
	if got := m.NextDeadline(); !got.IsZero() {
		t.Errorf("NextDeadline %s after the streak ended, want none", got)
	}
	if m.LastReload().Gen != 1 {
		t.Errorf("last reload is generation %d: a crash replacement is not a reload", m.LastReload().Gen)
	}
}

// TestLastFinished: every finished reload, the first start and crash
// replacements included, is numbered and says what it was and whom it
// answered; LastReload leaves the replacements out.
func TestLastFinished(t *testing.T) {
	wantFinished := func(seq int, kind ReloadKind, gen Gen, reqs []RequestID, failed bool) func(*testing.T, *Machine, []Action) {
		return func(t *testing.T, m *Machine, _ []Action) {
			t.Helper()
			f := m.LastFinished()
			if f.Seq != seq || f.Kind != kind || f.Gen != gen || fmt.Sprint(f.Reqs) != fmt.Sprint(reqs) || (f.Err != nil) != failed {
				t.Fatalf("LastFinished = seq %d %s g%d reqs %v err %v; want seq %d %s g%d reqs %v failed %v",
					f.Seq, f.Kind, f.Gen, f.Reqs, f.Err, seq, kind, gen, reqs, failed)
			}
		}
	}
	runScenario(t, scenario{steps: seq(
		up1[:3],
		[]step{
			on(Ready{At: at(60 * ms), Gen: 1}, "reply [1] g1 ok").then(wantFinished(1, KindStart, 1, []RequestID{1}, false)),
			on(ReloadRequested{At: at(time.Second), Req: 2}, "check g2"),
			on(ReloadRequested{At: at(time.Second), Req: 3}),
			on(CheckDone{At: at(1020 * ms), Gen: 2, Err: errors.New("bad")}, "forget g2", "reply [2] g2 err=config check failed: ...", "check g3").
				then(wantFinished(2, KindReload, 2, []RequestID{2}, true)),
			on(CheckDone{At: at(1040 * ms), Gen: 3}, "start g3"),
			on(Started{At: at(1045 * ms), Gen: 3, Pid: 300}),
			on(Ready{At: at(1100 * ms), Gen: 3}, "signal g1 drain", "watch-release g1"),
			on(Released{At: at(1200 * ms), Gen: 1}, "reply [3] g3 ok").then(wantFinished(3, KindReload, 3, []RequestID{3}, false)),
			on(Exited{At: at(1300 * ms), Gen: 1}, "forget g1"),
			on(Exited{At: at(time.Minute), Gen: 3, Status: 137}, "forget g3", "start g4 replacement"),
			on(Started{At: at(time.Minute + 5*ms), Gen: 4, Pid: 400}),
			on(Ready{At: at(time.Minute + 50*ms), Gen: 4}).then(func(t *testing.T, m *Machine, acts []Action) {
				wantFinished(4, KindReplacement, 4, nil, false)(t, m, acts)
				if last := m.LastReload(); last.Gen != 3 {
					t.Fatalf("LastReload = g%d, want g3: a crash replacement is not a reload", last.Gen)
				}
			}),
		},
	)})
}
