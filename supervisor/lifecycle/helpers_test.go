package lifecycle

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

// t0 is the fake base time of every test; events happen at t0.Add(...).
var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const ms = time.Millisecond

func at(d time.Duration) time.Time { return t0.Add(d) }

// rel renders an absolute time as an offset from t0 ("+1.5s").
func rel(t time.Time) string { return "+" + t.Sub(t0).String() }

// fmtTime is rel, or "zero" for the zero time.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "zero"
	}
	return rel(t)
}

// sentinels are the errors actions may carry; fmtErr names them through
// errors.Is, never through their text.
var sentinels = []error{ErrCheckFailed, ErrStartFailed, ErrNotReady, ErrExitedBeforeReady, ErrExitedAfterReady, ErrStopping}

// fmtErr renders err as "ok", "err=<sentinel>" or "err=<sentinel>: ..." when
// the sentinel is wrapped with more detail. The detail (the child's text)
// is deliberately left out so that expectations do not depend on it.
func fmtErr(err error) string {
	if err == nil {
		return "ok"
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			if err == s {
				return "err=" + s.Error()
			}
			return "err=" + s.Error() + ": ..."
		}
	}
	return fmt.Sprintf("err=UNEXPECTED(%v)", err)
}

func fmtAction(a Action) string {
	switch a := a.(type) {
	case RunCheck:
		return fmt.Sprintf("check g%d", a.Gen)
	case Start:
		if a.Replacement {
			return fmt.Sprintf("start g%d replacement", a.Gen)
		}
		return fmt.Sprintf("start g%d", a.Gen)
	case Signal:
		return fmt.Sprintf("signal g%d %s", a.Gen, a.Kind)
	case WatchRelease:
		return fmt.Sprintf("watch-release g%d", a.Gen)
	case Reply:
		s := fmt.Sprintf("reply %v", a.Reqs)
		if a.Gen != 0 {
			s += fmt.Sprintf(" g%d", a.Gen)
		}
		return s + " " + fmtErr(a.Err)
	case Forget:
		return fmt.Sprintf("forget g%d", a.Gen)
	case CloseListeners:
		return "close-listeners"
	case Exit:
		return "exit " + fmtErr(a.Err)
	}
	return fmt.Sprintf("unknown action %T", a)
}

// fmtActions renders actions one per line.
func fmtActions(acts []Action) string {
	lines := make([]string, len(acts))
	for i, a := range acts {
		lines[i] = fmtAction(a)
	}
	return strings.Join(lines, "\n")
}

// fmtEvent renders an event in the script syntax of testdata/*.txt.
func fmtEvent(ev Event) string {
	errSuffix := func(err error) string {
		if err == nil {
			return ""
		}
		return " err=" + err.Error()
	}
	var s string
	switch e := ev.(type) {
	case ReloadRequested:
		s = fmt.Sprintf("reload %d", e.Req)
	case CheckDone:
		s = fmt.Sprintf("checked g%d%s", e.Gen, errSuffix(e.Err))
	case Started:
		if e.Err != nil {
			s = fmt.Sprintf("started g%d%s", e.Gen, errSuffix(e.Err))
		} else {
			s = fmt.Sprintf("started g%d pid=%d", e.Gen, e.Pid)
		}
	case Ready:
		s = fmt.Sprintf("ready g%d", e.Gen)
	case Released:
		s = fmt.Sprintf("released g%d", e.Gen)
	case Exited:
		s = fmt.Sprintf("exited g%d status=%d%s", e.Gen, e.Status, errSuffix(e.Err))
	case Tick:
		s = "tick"
	case StopRequested:
		if e.Fast {
			s = fmt.Sprintf("stop fast %d", e.Req)
		} else {
			s = fmt.Sprintf("stop %d", e.Req)
		}
	default:
		s = fmt.Sprintf("unknown event %T", ev)
	}
	return rel(ev.at()) + " " + s
}

// fmtGen renders one generation for the "gens" script directive and for
// failure messages.
func fmtGen(g GenInfo) string {
	s := fmt.Sprintf("g%d %s", g.Gen, g.State)
	if g.Pid != 0 {
		s += fmt.Sprintf(" pid=%d", g.Pid)
	}
	if g.Replacement {
		s += " replacement"
	}
	if !g.Deadline.IsZero() {
		s += " deadline=" + rel(g.Deadline)
	}
	if g.Released {
		s += " released"
	}
	return s
}

// lineDiff is a small line diff (longest common subsequence): lines only
// in want start with "-", lines only in got with "+", and unchanged lines
// more than three lines away from a change are elided.
func lineDiff(want, got string) string {
	a, b := strings.Split(want, "\n"), strings.Split(got, "\n")
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var lines []string // each prefixed "  ", "- " or "+ "
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			lines = append(lines, "  "+a[i])
			i, j = i+1, j+1
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			lines = append(lines, "- "+a[i])
			i++
		default:
			lines = append(lines, "+ "+b[j])
			j++
		}
	}
	const context = 3
	near := make([]bool, len(lines))
	for k, l := range lines {
		if !strings.HasPrefix(l, "  ") {
			for d := max(0, k-context); d <= min(len(lines)-1, k+context); d++ {
				near[d] = true
			}
		}
	}
	var out strings.Builder
	for k, l := range lines {
		switch {
		case near[k]:
			out.WriteString(l + "\n")
		case k == 0 || near[k-1]:
			out.WriteString("  ...\n")
		}
	}
	return out.String()
}

// checkInvariants fails t when m breaks one of the invariants of doc.go.
// It looks at the generation table and at the actions of the last Step:
//   - at most one generation is Active, at most one is Checking or Starting;
//   - every generation older than the active one is Draining, Stopping or
//     Killed; Draining, Stopping and Starting ones have a deadline, Active
//     and Killed ones none, and NextDeadline is no later than any of them;
//   - the table is sorted ascending by Gen;
//   - Active plus Draining generations do not exceed MaxGenerations;
//   - a crash replacement that waits has a deadline to wake it, and pending
//     requests always have a reload in flight ahead of them;
//   - after a stop nothing is checked or started, and after Exit nothing but
//     replies comes out.
//
// The harness adds what needs history: one reply per request, Exit once,
// acknowledgements only after older generations released, and actions
// that make sense for the processes that exist (world).
func checkInvariants(t testing.TB, m *Machine) {
	t.Helper()
	if errs := invariantErrors(m); len(errs) > 0 {
		t.Fatalf("invariants violated:\n  %s\ngenerations:\n%s", strings.Join(errs, "\n  "), fmtTable(m))
	}
}

func fmtTable(m *Machine) string {
	var b strings.Builder
	for _, g := range m.Generations() {
		fmt.Fprintf(&b, "  %s\n", fmtGen(g))
	}
	return b.String()
}

func invariantErrors(m *Machine) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	gens := m.Generations()
	var active *GenInfo
	busy, live := 0, 0
	for i := range gens {
		g := &gens[i]
		if i > 0 && gens[i-1].Gen >= g.Gen {
			bad("generations not sorted ascending: g%d before g%d", gens[i-1].Gen, g.Gen)
		}
		switch g.State {
		case Checking, Starting:
			busy++
		case Active:
			live++
			if active != nil {
				bad("two active generations: g%d and g%d", active.Gen, g.Gen)
			}
			active = g
		case Draining:
			live++
		case Stopping, Killed:
		default:
			bad("g%d in unknown state %d", g.Gen, g.State)
		}
		switch {
		case (g.State == Draining || g.State == Stopping || g.State == Starting) && g.Deadline.IsZero():
			bad("g%d is %s without a deadline", g.Gen, g.State)
		case (g.State == Active || g.State == Killed) && !g.Deadline.IsZero():
			bad("g%d is %s with a deadline %s", g.Gen, g.State, rel(g.Deadline))
		}
	}
	if busy > 1 {
		bad("%d generations checking or starting at once", busy)
	}
	if active != nil {
		for _, g := range gens {
			if g.Gen < active.Gen && g.State != Draining && g.State != Stopping && g.State != Killed {
				bad("g%d older than active g%d is %s", g.Gen, active.Gen, g.State)
			}
		}
	}
	if m.cfg.MaxGenerations > 0 && live > m.cfg.MaxGenerations {
		bad("%d active+draining generations exceed MaxGenerations %d", live, m.cfg.MaxGenerations)
	}
	next := m.NextDeadline()
	for _, g := range gens {
		if !g.Deadline.IsZero() && (next.IsZero() || g.Deadline.Before(next)) {
			bad("NextDeadline %s is after g%d's deadline %s", fmtTime(next), g.Gen, rel(g.Deadline))
		}
	}
	if m.wantReplacement() && next.IsZero() {
		bad("a crash replacement waits but NextDeadline is zero: it would never start")
	}
	if len(m.pending) > 0 && m.reload == nil {
		bad("requests %v pending with no reload in flight", m.pending)
	}
	if r := m.reload; r != nil && !r.switched {
		if g := m.find(r.gen); g == nil || (g.State != Checking && g.State != Starting) {
			bad("reload of g%d in flight but its generation is %v", r.gen, g)
		}
	}
	for _, a := range m.out {
		switch a.(type) {
		case RunCheck, Start:
			if m.Stopping() {
				bad("%s after stop", fmtAction(a))
			}
		}
	}
	if m.Exited() {
		if len(gens) > 0 || m.reload != nil || len(m.pending) > 0 {
			bad("exited with generations, a reload or pending requests left")
		}
		// In the step that exits, Exit comes last; in any later step only
		// replies may come out.
		exitAt := slices.IndexFunc(m.out, func(a Action) bool { _, ok := a.(Exit); return ok })
		switch {
		case exitAt >= 0 && exitAt != len(m.out)-1:
			bad("exit is not the last action")
		case exitAt < 0:
			for _, a := range m.out {
				if _, ok := a.(Reply); !ok {
					bad("%s after exit", fmtAction(a))
				}
			}
		}
	}
	return errs
}

// world is the fake executor: it mirrors what the supervisor would know
// from the actions (which checks and starts are outstanding, which processes
// live) so that tests can produce plausible events and can check the
// actions against reality.
type world struct {
	checks    map[Gen]bool // RunCheck seen, CheckDone not yet sent
	checkedOK map[Gen]bool
	starts    map[Gen]bool // Start seen, Started not yet sent
	procs     map[Gen]int  // live processes: pid
	ready     map[Gen]bool // Ready sent
	watch     map[Gen]bool // WatchRelease seen, Released not yet sent
	signals   map[Gen][]SignalKind
	gone      []Gen // generations whose process exited or that were forgotten
	maxGen    Gen
	nextPid   int
}

func newWorld() *world {
	return &world{
		checks: map[Gen]bool{}, checkedOK: map[Gen]bool{}, starts: map[Gen]bool{},
		procs: map[Gen]int{}, ready: map[Gen]bool{}, watch: map[Gen]bool{},
		signals: map[Gen][]SignalKind{}, nextPid: 100,
	}
}

// before updates the world with an event about to be stepped. Implausible
// (stale) events leave it unchanged.
func (w *world) before(ev Event) {
	switch e := ev.(type) {
	case CheckDone:
		if w.checks[e.Gen] {
			delete(w.checks, e.Gen)
			w.checkedOK[e.Gen] = e.Err == nil
		}
	case Started:
		if w.starts[e.Gen] {
			delete(w.starts, e.Gen)
			if e.Err == nil {
				w.procs[e.Gen] = e.Pid
			}
		}
	case Ready:
		if _, ok := w.procs[e.Gen]; ok {
			w.ready[e.Gen] = true
		}
	case Released:
		delete(w.watch, e.Gen)
	case Exited:
		if _, ok := w.procs[e.Gen]; ok {
			delete(w.procs, e.Gen)
			delete(w.watch, e.Gen)
			w.gone = append(w.gone, e.Gen)
		}
	}
}

// observe checks the actions of one step against the world and records them.
func (w *world) observe(acts []Action) []string {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	var alive bool
	for _, a := range acts {
		switch a := a.(type) {
		case RunCheck:
			if a.Gen <= w.maxGen {
				bad("check of g%d reuses a generation number (last g%d)", a.Gen, w.maxGen)
			}
			w.maxGen = max(w.maxGen, a.Gen)
			w.checks[a.Gen] = true
		case Start:
			if a.Replacement {
				if a.Gen <= w.maxGen {
					bad("replacement g%d reuses a generation number (last g%d)", a.Gen, w.maxGen)
				}
			} else if !w.checkedOK[a.Gen] {
				bad("start of g%d whose config check did not pass", a.Gen)
			}
			w.maxGen = max(w.maxGen, a.Gen)
			w.starts[a.Gen] = true
		case Signal:
			_, alive = w.procs[a.Gen]
			if !alive && !w.starts[a.Gen] {
				bad("signal %s to g%d, which has no process", a.Kind, a.Gen)
			}
			w.signals[a.Gen] = append(w.signals[a.Gen], a.Kind)
		case WatchRelease:
			if _, alive = w.procs[a.Gen]; !alive {
				bad("watch-release of g%d, which has no process", a.Gen)
			}
			w.watch[a.Gen] = true
		case Forget:
			if _, alive = w.procs[a.Gen]; alive || w.starts[a.Gen] {
				bad("forget g%d while its process may still run", a.Gen)
			}
			w.gone = append(w.gone, a.Gen)
		case Exit:
			if len(w.procs) > 0 || len(w.starts) > 0 {
				bad("exit with processes still running: %v, starts outstanding: %v", w.procs, w.starts)
			}
		}
	}
	return errs
}

// harness steps a machine, checking the invariants after every step, that
// every request is answered at most once, that Exit comes once, and the
// actions against a fake executor (world).
type harness struct {
	t       testing.TB
	m       *Machine
	w       *world
	now     time.Time
	asked   map[RequestID]bool
	replies map[RequestID]int
	exits   int
	lastReq RequestID
	trace   []string
	dump    bool // print the trace when the test fails: a check of step failed
}

func newHarness(t testing.TB, cfg Config) *harness {
	h := &harness{t: t, m: New(cfg), w: newWorld(), now: t0, asked: map[RequestID]bool{}, replies: map[RequestID]int{}}
	t.Cleanup(func() {
		if t.Failed() && h.dump {
			tail := h.trace[max(0, len(h.trace)-60):]
			t.Logf("last events and actions:\n%s\ngenerations:\n%s", strings.Join(tail, "\n"), fmtTable(h.m))
		}
	})
	return h
}

// newReq returns a request id not used so far in this test.
func (h *harness) newReq() RequestID {
	h.lastReq++
	for h.asked[h.lastReq] {
		h.lastReq++
	}
	return h.lastReq
}

func (h *harness) ask(id RequestID) {
	h.t.Helper()
	if h.asked[id] {
		h.t.Fatalf("test bug: request id %d used twice", id)
	}
	h.asked[id] = true
	h.lastReq = max(h.lastReq, id)
}

// step applies ev and checks everything that must hold after any step.
func (h *harness) step(ev Event) []Action {
	h.t.Helper()
	switch e := ev.(type) {
	case ReloadRequested:
		h.ask(e.Req)
	case StopRequested:
		h.ask(e.Req)
	}
	if ev.at().After(h.now) {
		h.now = ev.at()
	}
	h.w.before(ev)
	seq := h.m.LastFinished().Seq
	acts := h.m.Step(ev)
	h.trace = append(h.trace, fmtEvent(ev))
	for _, a := range acts {
		h.trace = append(h.trace, "  "+fmtAction(a))
	}
	errs := h.w.observe(acts)
	for _, a := range acts {
		switch a := a.(type) {
		case Reply:
			for _, id := range a.Reqs {
				if !h.asked[id] {
					errs = append(errs, fmt.Sprintf("reply to request %d, which was never made", id))
				}
				h.replies[id]++
				if h.replies[id] > 1 {
					errs = append(errs, fmt.Sprintf("request %d answered %d times", id, h.replies[id]))
				}
			}
			if a.Err == nil && a.Gen != 0 {
				// Acknowledged means switched: no older generation still
				// holds the listeners.
				for _, g := range h.m.Generations() {
					if g.Gen < a.Gen && !g.Released {
						errs = append(errs, fmt.Sprintf("reload to g%d acknowledged while g%d (%s) may hold listeners", a.Gen, g.Gen, g.State))
					}
				}
			}
		case Exit:
			h.exits++
			if h.exits > 1 {
				errs = append(errs, "exit emitted twice")
			}
		}
	}
	if f := h.m.LastFinished(); f.Seq != seq && f.Seq != seq+1 {
		errs = append(errs, fmt.Sprintf("finished reloads went from %d to %d in one step: the executor sees only the last", seq, f.Seq))
	}
	h.dump = true // stays set if one of these checks ends the test
	if len(errs) > 0 {
		h.t.Fatalf("after %s:\n  %s", fmtEvent(ev), strings.Join(errs, "\n  "))
	}
	checkInvariants(h.t, h.m)
	h.dump = false
	return acts
}

// checkAllReplied fails unless every request made got exactly one reply.
func (h *harness) checkAllReplied() {
	h.t.Helper()
	for _, id := range slices.Sorted(maps.Keys(h.asked)) {
		if n := h.replies[id]; n != 1 {
			h.t.Errorf("request %d answered %d times, want once", id, n)
		}
	}
}

// quiesce drives the machine to its exit like a well-behaved executor
// would after a fast stop: outstanding checks pass, outstanding starts
// succeed, every process exits, deadlines pass. Then every request must
// have had exactly one reply and Exit must have come exactly once.
func (h *harness) quiesce() {
	h.t.Helper()
	if !h.m.Exited() {
		h.step(StopRequested{At: h.now, Req: h.newReq(), Fast: true})
	}
	for i := 0; !h.m.Exited(); i++ {
		if i > 1000 {
			h.t.Fatalf("machine does not exit; generations:\n%s", fmtTable(h.m))
		}
		h.now = h.now.Add(ms)
		switch {
		case len(h.w.checks) > 0:
			h.step(CheckDone{At: h.now, Gen: minKey(h.w.checks)})
		case len(h.w.starts) > 0:
			h.w.nextPid++
			h.step(Started{At: h.now, Gen: minKey(h.w.starts), Pid: h.w.nextPid})
		case len(h.w.procs) > 0:
			h.step(Exited{At: h.now, Gen: minKey(h.w.procs), Status: 143})
		default:
			next := h.m.NextDeadline()
			if next.IsZero() {
				next = h.now.Add(time.Hour)
			}
			h.now = maxTime(h.now, next)
			h.step(Tick{At: h.now})
		}
	}
	if h.exits != 1 {
		h.t.Errorf("exit emitted %d times, want once", h.exits)
	}
	h.checkAllReplied()
}

func minKey[V any](m map[Gen]V) Gen {
	first := true
	var k Gen
	for g := range m {
		if first || g < k {
			k, first = g, false
		}
	}
	return k
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
