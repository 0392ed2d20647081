package supervisor

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/batonproxy/baton/api"
)

// A record stays pending until its own baton's first generation serves:
// MarkListenersServed clears only the records of that baton (its pid,
// written at or after its start), so a failed first start of an earlier
// baton, even one that had the same pid, stays pending.
func TestMarkListenersServed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.sock.listeners")
	t0 := time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)
	recs := []api.ListenerRecord{
		{At: t0, BatonPid: 5, Addr: "127.0.0.1:80", Key: "a", Inode: 1, Pending: true},                  // an earlier baton with pid 5
		{At: t0.Add(time.Minute), BatonPid: 6, Addr: "127.0.0.1:80", Key: "a", Inode: 2, Pending: true}, // another failed start
		{At: t0.Add(time.Hour), BatonPid: 5, Addr: "127.0.0.1:80", Key: "a", Inode: 3, Pending: true},
		{At: t0.Add(time.Hour), BatonPid: 5, Addr: "127.0.0.1:81", Key: "b", Inode: 4, Pending: true},
	}
	if err := writeHistory(path, recs); err != nil {
		t.Fatal(err)
	}
	if err := MarkListenersServed(path, 5, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := readListenerHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, true, false, false}
	if len(got) != len(want) {
		t.Fatalf("%d records, want %d: %+v", len(got), len(want), got)
	}
	for i, r := range got {
		if r.Pending != want[i] || r.Inode != recs[i].Inode {
			t.Errorf("record %d: %+v, want pending %v", i, r, want[i])
		}
	}
	// Nothing left to mark: the file is not rewritten (and no error).
	if err := MarkListenersServed(path, 5, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	// A record without the field (an older baton's) reads as served.
	legacy := `{"at":"2026-01-02T12:00:00Z","baton_pid":7,"addr":"127.0.0.1:80","key":"a","inode":9}` + "\n"
	if err := os.WriteFile(path, []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := readListenerHistory(path); err != nil || len(got) != 1 || got[0].Pending {
		t.Errorf("an older baton's record: %+v, %v; want one, not pending", got, err)
	}
}
