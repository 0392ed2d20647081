package main

import (
	"testing"

	"github.com/batonproxy/baton/internal/proc"
)

// TestUnregisteredExitsOnlyWhileWatching: the exits the reaper routes to
// nobody are kept only while an upgrade runs, and each upgrade starts
// afresh, so that a failed upgrade names the new baton only when its exit
// is the one seen in that upgrade.
func TestUnregisteredExitsOnlyWhileWatching(t *testing.T) {
	var u unregisteredExits
	u.note(10, proc.ExitStatus{Code: 1}) // before any upgrade
	u.watch()
	u.note(11, proc.ExitStatus{Code: 3})
	got := u.stop()
	if len(got) != 1 || got[0].pid != 11 || got[0].st.Code != 3 {
		t.Fatalf("exits seen during the upgrade: %+v, want pid 11 with status 3", got)
	}
	u.note(12, proc.ExitStatus{Code: 1}) // after it
	u.watch()
	if got := u.stop(); len(got) != 0 {
		t.Fatalf("a new upgrade saw %+v, want nothing", got)
	}
}
