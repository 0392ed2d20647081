package doctor

import (
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/proc"
)

// t0 is the fake clock's now.
var t0 = time.Date(2026, 1, 2, 12, 0, 0, 0, time.UTC)

// fakeProc is a process started ago before t0.
func fakeProc(pid, ppid int, comm string, ago time.Duration) *Process {
	return &Process{
		Pid: pid, PPid: ppid, Pgrp: pid, Comm: comm, Program: programOf(comm, nil),
		Start: t0.Add(-ago), Fds: 10, Nofile: proc.Limit{Soft: 65536, Hard: 65536}, LimitsKnown: true,
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

// udp adds an unconnected UDP socket on addr owned by uid 0 and held by
// pids.
func (f *Facts) udp(addr string, inode uint64, pids ...int) *Facts {
	f.UDPSockets = append(f.UDPSockets, UDPSocket{Addr: netip.MustParseAddrPort(addr), Inode: inode, Holders: pids})
	for _, pid := range pids {
		if p, ok := f.Procs[pid]; ok {
			p.UDP = append(p.UDP, inode)
		}
	}
	return f
}

// requireComplete fails unless every finding names its check, severity and
// subject and says what it saw, why and the fix, in an operator's words:
// why in one sentence, the fix with a command or config line (in
// backquotes), and nothing that only the source tree or its history
// explains (a repository path, an incident's name).
func requireComplete(t *testing.T, fs []Finding) {
	t.Helper()
	jargon := regexp.MustCompile(`(?i)incident|examples/|docs/|README|design\.md|\.go\b`)
	for _, f := range fs {
		if f.Check == "" || f.Severity == "" || f.Subject == "" || f.Saw == "" || f.Why == "" || f.Fix == "" {
			t.Errorf("incomplete finding: %+v", f)
		}
		// Saw may name the operator's own files (the tests use examples/).
		for _, text := range []string{f.Why, f.Fix} {
			if m := jargon.FindString(text); m != "" {
				t.Errorf("%s finding speaks of %q, which an operator cannot look up: %q", f.Check, m, text)
			}
		}
		if m := regexp.MustCompile(`(?i)incident`).FindString(f.Saw); m != "" {
			t.Errorf("%s finding speaks of an %q: %q", f.Check, m, f.Saw)
		}
		if regexp.MustCompile(`[.;:] [A-Z]|\.$`).MatchString(f.Why) {
			t.Errorf("%s finding: why is more than one sentence: %q", f.Check, f.Why)
		}
		if !strings.Contains(f.Fix, "`") {
			t.Errorf("%s finding: the fix names no command or config line: %q", f.Check, f.Fix)
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
