package doctor

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/supervisor"
)

// t0 is the fake clock's now.
var t0 = time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)

// fakeProc is a process started ago before t0.
func fakeProc(pid, ppid int, comm string, ago time.Duration) *Process {
	return &Process{
		Pid: pid, PPid: ppid, Pgrp: pid, Comm: comm, Program: programOf(comm, nil),
		Start: t0.Add(-ago), Fds: 10, Nofile: supervisor.Limit{Soft: 65536, Hard: 65536}, LimitsKnown: true,
	}
}

// fakeFacts holds procs and nothing else.
func fakeFacts(procs ...*Process) *Facts {
	f := &Facts{Now: t0, Procs: map[int]*Process{}, TimeWait: -1}
	for _, p := range procs {
		f.Procs[p.Pid] = p
	}
	return f
}

// listen adds a listening socket on addr held by pids.
func (f *Facts) listen(addr string, inode uint64, pids ...int) *Facts {
	f.Listeners = append(f.Listeners, Listener{Addr: netip.MustParseAddrPort(addr), Inode: inode, Backlog: 4096, Holders: pids})
	for _, pid := range pids {
		if p, ok := f.Procs[pid]; ok {
			p.Listening = append(p.Listening, inode)
		}
	}
	return f
}

// requireComplete fails unless every finding names its check, severity and
// subject and says what it saw, why and the fix.
func requireComplete(t *testing.T, fs []Finding) {
	t.Helper()
	for _, f := range fs {
		if f.Check == "" || f.Severity == "" || f.Subject == "" || f.Saw == "" || f.Why == "" || f.Fix == "" {
			t.Errorf("incomplete finding: %+v", f)
		}
		if !slices.Contains(CheckNames(), f.Check) {
			t.Errorf("finding from unknown check %q", f.Check)
		}
	}
}

// summarize is "check severity subject" per finding, for comparisons.
func summarize(fs []Finding) []string {
	out := []string{}
	for _, f := range fs {
		out = append(out, string(f.Severity)+" "+f.Check+" "+f.Subject)
	}
	return out
}

func sameStrings(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

func opts() Options { return Options{}.WithDefaults() }
