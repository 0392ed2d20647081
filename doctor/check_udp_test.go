package doctor

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// UDP (QUIC) listeners: groups of unconnected UDP sockets on one address,
// baton's (one member per generation, all held by baton) or not, and
// sockets beside baton's that no baton holds.
func TestUDPChecks(t *testing.T) {
	// baton pid 5 with generations 3 (haproxy 20) and 4 (haproxy 30).
	batonGens := func(more ...*Process) *Facts {
		g3, g4 := fakeProc(20, 5, "haproxy", 2*time.Hour), fakeProc(30, 5, "haproxy", time.Hour)
		g3.Gen, g3.BatonControl = 3, "/run/baton/baton.sock"
		g4.Gen, g4.BatonControl = 4, "/run/baton/baton.sock"
		return fakeFacts(append([]*Process{fakeProc(5, 1, "baton", 5*time.Hour), g3, g4}, more...)...)
	}
	tests := []struct {
		name  string
		facts func() *Facts
		want  []string
	}{
		{"one socket per address", func() *Facts {
			return batonGens().udp("127.0.0.1:443", 100, 5, 20, 30).udp("[::1]:443", 101, 5, 20, 30)
		}, []string{}},
		{"baton's group: one member per generation, baton holds every one", func() *Facts {
			return batonGens().udp("127.0.0.1:443", 100, 5, 20).udp("127.0.0.1:443", 101, 5, 30)
		}, []string{"info udp-reuseport-group 127.0.0.1:443"}},
		{"baton's group while an upgrade hands it to a new baton", func() *Facts {
			return batonGens(fakeProc(6, 1, "baton", time.Minute)).
				udp("127.0.0.1:443", 100, 5, 6, 20).udp("127.0.0.1:443", 101, 5, 6, 30)
		}, []string{"info udp-reuseport-group 127.0.0.1:443"}},
		{"two processes, each its own member", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "app", time.Hour), fakeProc(11, 1, "app", time.Hour)).
				udp("127.0.0.1:443", 100, 10).udp("127.0.0.1:443", 101, 11)
		}, []string{"warning udp-reuseport-group 127.0.0.1:443"}},
		{"haproxy -sf: old and new haproxy, each its own member", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "haproxy", 3*time.Hour), fakeProc(20, 1, "haproxy", time.Hour)).
				udp("127.0.0.1:443", 100, 10).udp("127.0.0.1:443", 101, 20)
		}, []string{"critical udp-reuseport-group 127.0.0.1:443"}},
		{"nginx quic reuseport: one master holds the members", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "nginx", time.Hour), fakeProc(11, 10, "nginx", time.Hour)).
				udp("0.0.0.0:443", 100, 10, 11).udp("0.0.0.0:443", 101, 10)
		}, []string{"warning udp-reuseport-group 0.0.0.0:443"}},
		{"holders unknown", func() *Facts {
			return fakeFacts().udp("127.0.0.1:443", 100).udp("127.0.0.1:443", 101)
		}, []string{"warning udp-reuseport-group 127.0.0.1:443"}},
		{"two batons, each with its own member", func() *Facts {
			return fakeFacts(fakeProc(5, 1, "baton", time.Hour), fakeProc(6, 1, "baton", time.Hour)).
				udp("127.0.0.1:443", 100, 5).udp("127.0.0.1:443", 101, 6)
		}, []string{"warning udp-reuseport-group 127.0.0.1:443"}},
		{"a foreign socket beside baton's group", func() *Facts {
			return batonGens(fakeProc(40, 1, "app", time.Minute)).
				udp("127.0.0.1:443", 100, 5, 20).udp("127.0.0.1:443", 101, 5, 30).udp("127.0.0.1:443", 102, 40)
		}, []string{"warning udp-foreign-socket 127.0.0.1:443"}},
		{"a generation bound its own socket beside baton's", func() *Facts {
			return batonGens().udp("127.0.0.1:443", 100, 5, 20, 30).udp("127.0.0.1:443", 101, 30)
		}, []string{"warning udp-foreign-socket 127.0.0.1:443"}},
		{"a foreign socket of a process doctor cannot read", func() *Facts {
			return batonGens().udp("127.0.0.1:443", 100, 5, 20, 30).udp("127.0.0.1:443", 101)
		}, []string{"warning udp-foreign-socket 127.0.0.1:443"}},
		{"same port, other addresses; TCP listeners do not count", func() *Facts {
			return batonGens(fakeProc(40, 1, "app", time.Minute)).
				udp("127.0.0.1:443", 100, 5, 20, 30).udp("127.0.0.2:443", 101, 40).udp("[::1]:443", 102, 40).
				listen("127.0.0.1:443", 103, 40).listen("127.0.0.1:443", 104, 40)
		}, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.facts()
			got := append(checkUDPReuseport(f, opts()), checkUDPForeign(f, opts())...)
			requireComplete(t, got)
			if !sameStrings(summarize(got), tc.want) {
				t.Errorf("got %q, want %q", summarize(got), tc.want)
			}
			for _, fd := range got {
				if !slices.Equal(fd.Ports, []int{443}) {
					t.Errorf("%s: ports %v, want [443]", fd.Check, fd.Ports)
				}
				t.Logf("%s %s %s\n  saw: %s\n  why: %s\n  fix: %s", fd.Severity, fd.Check, fd.Subject, fd.Saw, fd.Why, fd.Fix)
			}
		})
	}

	f := batonGens().udp("127.0.0.1:443", 100, 5, 20).udp("127.0.0.1:443", 101, 5, 30)
	if got := checkUDPReuseport(f, opts()); len(got) != 1 ||
		!strings.Contains(got[0].Saw, "a QUIC reuseport group baton created, one member per generation") ||
		!slices.Equal(got[0].Pids, []int{5, 20, 30}) || got[0].Data["baton"] != 5 {
		t.Errorf("baton's group: %+v", got)
	}
	f = fakeFacts(fakeProc(5, 1, "baton", time.Hour), fakeProc(6, 1, "baton", time.Hour)).
		udp("127.0.0.1:443", 100, 5).udp("127.0.0.1:443", 101, 6)
	if got := checkUDPReuseport(f, opts()); len(got) != 1 || !strings.Contains(got[0].Saw, "two batons bound the same address") {
		t.Errorf("two batons: %+v", got)
	}
	f = fakeFacts(fakeProc(10, 1, "haproxy", 3*time.Hour), fakeProc(20, 1, "haproxy", time.Hour)).
		udp("127.0.0.1:443", 100, 10).udp("127.0.0.1:443", 101, 20)
	if got := checkUDPReuseport(f, opts()); len(got) != 1 || !strings.Contains(got[0].Fix, "`kill -USR1 10`") {
		t.Errorf("superseded haproxy not stopped by the fix: %+v", got)
	}

	f = batonGens(fakeProc(40, 1, "app", time.Minute)).
		udp("127.0.0.1:443", 100, 5, 20).udp("127.0.0.1:443", 101, 5, 30).udp("127.0.0.1:443", 102, 40).udp("127.0.0.1:443", 103)
	f.UDPSockets[2].UID, f.UDPSockets[3].UID = 1000, 65534
	got := checkUDPForeign(f, opts())
	if len(got) != 1 {
		t.Fatalf("foreign sockets: %+v", got)
	}
	for _, want := range []string{"2 foreign UDP sockets on a baton address", "inode 102 (owner uid 1000) held by pid 40 app",
		"inode 103 (owner uid 65534) holders unknown", "pid 5 baton holds", "inodes 100, 101", "run as root"} {
		if !strings.Contains(got[0].Saw, want) {
			t.Errorf("saw %q, want %q in it", got[0].Saw, want)
		}
	}
	if !slices.Equal(got[0].Pids, []int{40}) || !slices.Equal(got[0].Data["inodes"].([]uint64), []uint64{102, 103}) ||
		!strings.Contains(got[0].Fix, "`ss -uapn 'sport = :443'`") {
		t.Errorf("foreign sockets: %+v", got[0])
	}
	f = batonGens().udp("127.0.0.1:443", 100, 5, 20, 30).udp("127.0.0.1:443", 101, 30)
	if got := checkUDPForeign(f, opts()); len(got) != 1 ||
		!strings.Contains(got[0].Saw, "pid 30: generation 4 of baton /run/baton/baton.sock") {
		t.Errorf("a generation's own socket: %+v", got)
	}
}
