package doctor

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/api"
)

// A socket re-created for an unchanged address resets what waited on it.
func TestListenerChurn(t *testing.T) {
	rec := func(ago time.Duration, pid int, addr string, inode uint64) api.ListenerRecord {
		return api.ListenerRecord{At: t0.Add(-ago), BatonPid: pid, Addr: addr, Key: "stream:" + addr, Inode: inode}
	}
	// never is a record whose baton exited before its first generation
	// served (a failed first start): the history still says pending.
	never := func(r api.ListenerRecord) api.ListenerRecord {
		r.Pending = true
		return r
	}
	tests := []struct {
		name    string
		history []api.ListenerRecord
		want    []string
		fixHas  string
	}{
		{"first start only", []api.ListenerRecord{rec(time.Hour, 5, "127.0.0.1:80", 1), rec(time.Hour, 5, "127.0.0.1:81", 2)}, []string{}, ""},
		{"baton stopped and started", []api.ListenerRecord{
			rec(time.Hour, 5, "127.0.0.1:80", 1), rec(time.Hour, 5, "127.0.0.1:81", 2), rec(time.Minute, 9, "127.0.0.1:80", 3),
		}, []string{"warning listener-churn 127.0.0.1:80 (baton /b.sock)"}, "baton reload"},
		{"re-created again and again", []api.ListenerRecord{
			rec(3*time.Hour, 5, "127.0.0.1:80", 1), rec(2*time.Hour, 6, "127.0.0.1:80", 3), rec(time.Hour, 7, "127.0.0.1:80", 4),
		}, []string{"critical listener-churn 127.0.0.1:80 (baton /b.sock)"}, "baton upgrade"},
		{"outside the window", []api.ListenerRecord{
			rec(72*time.Hour, 5, "127.0.0.1:80", 1), rec(48*time.Hour, 6, "127.0.0.1:80", 3),
		}, []string{}, ""},
		{"one baton re-created it", []api.ListenerRecord{
			rec(time.Hour, 5, "127.0.0.1:80", 1), rec(time.Minute, 5, "127.0.0.1:80", 3),
		}, []string{"warning listener-churn 127.0.0.1:80 (baton /b.sock)"}, "bug"},
		{"failed first start, then a start that serves", []api.ListenerRecord{
			never(rec(time.Hour, 5, "127.0.0.1:80", 1)), never(rec(time.Hour, 5, "127.0.0.1:81", 2)),
			rec(time.Minute, 9, "127.0.0.1:80", 3), rec(time.Minute, 9, "127.0.0.1:81", 4),
		}, []string{}, ""},
		{"two failed starts, then one that serves", []api.ListenerRecord{
			never(rec(time.Hour, 5, "127.0.0.1:80", 1)), never(rec(30*time.Minute, 6, "127.0.0.1:80", 2)),
			rec(time.Minute, 9, "127.0.0.1:80", 3),
		}, []string{}, ""},
		{"a failed start between two that served", []api.ListenerRecord{
			rec(3*time.Hour, 5, "127.0.0.1:80", 1), never(rec(2*time.Hour, 6, "127.0.0.1:80", 2)),
			rec(time.Hour, 7, "127.0.0.1:80", 3),
		}, []string{"warning listener-churn 127.0.0.1:80 (baton /b.sock)"}, "baton reload"},
		{"a start still waiting for its first generation", []api.ListenerRecord{
			never(rec(time.Minute, 5, "127.0.0.1:80", 1)),
		}, []string{}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := fakeFacts()
			f.Batons = []Baton{{Control: "/b.sock", History: tc.history}}
			got := checkListenerChurn(f, opts())
			requireComplete(t, got)
			if !sameStrings(summarize(got), tc.want) {
				t.Fatalf("got %q, want %q", summarize(got), tc.want)
			}
			if len(got) == 1 && (!strings.Contains(got[0].Fix, tc.fixHas) || got[0].Ports[0] != 80) {
				t.Errorf("finding %+v: want %q in the fix, port 80", got[0], tc.fixHas)
			}
		})
	}
}

// The JSON report is the contract of `baton doctor --json`.
func TestReportJSON(t *testing.T) {
	f := fakeFacts(fakeProc(10, 1, "nginx", time.Hour), fakeProc(20, 1, "nginx", 2*time.Hour)).
		listen("127.0.0.1:80", 1, 10).listen("127.0.0.1:80", 2, 20)
	r := Evaluate(f, Options{})
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"findings", "checked", "host", "took_ms"} {
		if _, ok := back[k]; !ok {
			t.Errorf("no %q in %s", k, data)
		}
	}
	fs := back["findings"].([]any)
	first := fs[0].(map[string]any)
	for _, k := range []string{"check", "severity", "subject", "saw", "why", "fix", "ports", "pids", "data"} {
		if _, ok := first[k]; !ok {
			t.Errorf("no %q in finding %v", k, first)
		}
	}
	if len(r.Checked) != len(CheckNames()) {
		t.Errorf("checked %q", r.Checked)
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 5 * time.Minute: "5m", 61 * time.Second: "1m1s",
		1500 * time.Millisecond: "2s", 200 * time.Millisecond: "200ms",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}
