package lifecycle

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// settled drives a machine to: g1 draining (deadline set), g2 active, one
// reload done and counted.
func settled(t *testing.T) *Machine {
	t.Helper()
	m := New(DefaultConfig())
	steps := []Event{
		ReloadRequested{At: at(0), Req: 1},
		CheckDone{At: at(10 * ms), Gen: 1},
		Started{At: at(20 * ms), Gen: 1, Pid: 100},
		Ready{At: at(50 * ms), Gen: 1},
		ReloadRequested{At: at(1000 * ms), Req: 2},
		CheckDone{At: at(1010 * ms), Gen: 2},
		Started{At: at(1020 * ms), Gen: 2, Pid: 200},
		Ready{At: at(1050 * ms), Gen: 2},
		Released{At: at(1060 * ms), Gen: 1},
	}
	for _, ev := range steps {
		m.Step(ev)
	}
	if _, err := m.Snapshot(); err != nil {
		t.Fatalf("settled machine: %v (generations %v)", err, m.Generations())
	}
	return m
}

// TestSnapshotRestoreRoundTrip: a restored machine (through JSON, as the
// handover and the state file carry it) has the same generations,
// deadlines, counters and last reload, and goes on from there: the
// draining generation is hard stopped at its deadline, and the next reload
// is numbered after the last one.
func TestSnapshotRestoreRoundTrip(t *testing.T) {
	m := settled(t)
	st, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back MachineState
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	r, err := Restore(DefaultConfig(), back, at(2*1000*ms))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Generations(), m.Generations(); !reflect.DeepEqual(got, want) {
		t.Fatalf("generations after restore:\n got %v\nwant %v", got, want)
	}
	if r.Counters() != m.Counters() {
		t.Errorf("counters %+v, want %+v", r.Counters(), m.Counters())
	}
	if r.LastReload().Gen != 2 || r.NextDeadline() != m.NextDeadline() {
		t.Errorf("last reload g%d, next deadline %s; want g2, %s", r.LastReload().Gen, fmtTime(r.NextDeadline()), fmtTime(m.NextDeadline()))
	}

	// The draining g1 is hard stopped at the deadline it had.
	acts := r.Step(Tick{At: m.NextDeadline()})
	if got := fmtActions(acts); got != "signal g1 stop" {
		t.Errorf("at g1's drain deadline the restored machine did %q, want a hard stop", got)
	}
	// The next reload is g3.
	acts = r.Step(ReloadRequested{At: m.NextDeadline().Add(ms), Req: 3})
	if got := fmtActions(acts); got != "check g3" {
		t.Errorf("next reload: %q, want check g3", got)
	}
}

// TestSnapshotRefusedUnlessSettled: no snapshot during a reload, before
// anything served, or while stopping; Restore refuses unsettled states.
func TestSnapshotRefusedUnlessSettled(t *testing.T) {
	m := New(DefaultConfig())
	if _, err := m.Snapshot(); !errors.Is(err, ErrNotQuiescent) {
		t.Errorf("snapshot before the first generation: %v, want ErrNotQuiescent", err)
	}
	m = settled(t)
	m.Step(ReloadRequested{At: at(3000 * ms), Req: 9})
	if _, err := m.Snapshot(); !errors.Is(err, ErrNotQuiescent) {
		t.Errorf("snapshot during a reload: %v, want ErrNotQuiescent", err)
	}
	m = settled(t)
	m.Step(StopRequested{At: at(3000 * ms), Req: 9})
	if _, err := m.Snapshot(); !errors.Is(err, ErrNotQuiescent) {
		t.Errorf("snapshot while stopping: %v, want ErrNotQuiescent", err)
	}

	st, _ := settled(t).Snapshot()
	bad := st
	bad.Gens = append([]GenInfo(nil), st.Gens...)
	bad.Gens[0].State = Starting
	if _, err := Restore(DefaultConfig(), bad, at(0)); err == nil {
		t.Error("Restore accepted a starting generation")
	}
	two := st
	two.Gens = append([]GenInfo(nil), st.Gens...)
	for i := range two.Gens {
		two.Gens[i].State = Active
	}
	if _, err := Restore(DefaultConfig(), two, at(0)); err == nil {
		t.Error("Restore accepted two active generations")
	}
}
