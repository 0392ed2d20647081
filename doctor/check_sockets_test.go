package doctor

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The stale-503 incident: SO_REUSEPORT groups and old proxies that still
// listen.
func TestReuseportGroup(t *testing.T) {
	tests := []struct {
		name  string
		facts func() *Facts
		want  []string
	}{
		{"one socket per address", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "baton", time.Hour), fakeProc(11, 10, "haproxy", time.Minute)).
				listen("127.0.0.1:80", 100, 10, 11)
		}, []string{}},
		{"two sockets of one process", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "nginx", time.Hour)).
				listen("127.0.0.1:80", 100, 10).listen("127.0.0.1:80", 101, 10)
		}, []string{"warning reuseport-group 127.0.0.1:80"}},
		{"old and new haproxy, each its own socket", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "haproxy", 3*time.Hour), fakeProc(20, 1, "haproxy", time.Hour)).
				listen("127.0.0.1:80", 100, 10).listen("127.0.0.1:80", 101, 20)
		}, []string{"critical reuseport-group 127.0.0.1:80"}},
		{"two test processes (not proxies)", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "app", 3*time.Hour), fakeProc(20, 1, "app", time.Hour)).
				listen("127.0.0.1:80", 100, 10).listen("127.0.0.1:80", 101, 20)
		}, []string{"warning reuseport-group 127.0.0.1:80"}},
		{"holders unknown", func() *Facts {
			return fakeFacts().listen("127.0.0.1:80", 100).listen("127.0.0.1:80", 101)
		}, []string{"warning reuseport-group 127.0.0.1:80"}},
		{"same port, other addresses", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "nginx", time.Hour)).
				listen("127.0.0.1:80", 100, 10).listen("127.0.0.2:80", 101, 10).listen("[::1]:80", 102, 10)
		}, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := checkReuseport(tc.facts(), opts())
			requireComplete(t, got)
			if !sameStrings(summarize(got), tc.want) {
				t.Errorf("got %q, want %q", summarize(got), tc.want)
			}
		})
	}
	f := fakeFacts().listen("127.0.0.1:80", 100).listen("127.0.0.1:80", 101)
	if got := checkReuseport(f, opts()); len(got) == 1 && !strings.Contains(got[0].Saw, "run as root") {
		t.Errorf("unknown holders not explained: %s", got[0].Saw)
	}
}

func TestOldProxyProcess(t *testing.T) {
	tests := []struct {
		name     string
		facts    func() *Facts
		oldAfter time.Duration
		want     []string
	}{
		{"-sf reload left the old master and worker listening", func() *Facts {
			return fakeFacts(
				fakeProc(10, 1, "haproxy", 3*time.Hour), fakeProc(11, 10, "haproxy", 3*time.Hour),
				fakeProc(20, 1, "haproxy", time.Hour), fakeProc(21, 20, "haproxy", time.Hour),
			).listen("127.0.0.1:80", 100, 11).listen("127.0.0.1:80", 101, 21).listen("127.0.0.1:80", 102, 10)
		}, 0, []string{"critical old-proxy-process pid 10 haproxy", "critical old-proxy-process pid 11 haproxy"}},
		{"nginx HUP: old workers still listening beside new ones", func() *Facts {
			return fakeFacts(
				fakeProc(10, 1, "nginx", 3*time.Hour),
				fakeProc(11, 10, "nginx", 2*time.Hour), fakeProc(12, 10, "nginx", 2*time.Hour),
				fakeProc(13, 10, "nginx", time.Hour),
			).listen("0.0.0.0:80", 100, 10, 11, 12, 13)
		}, 0, []string{"critical old-proxy-process pid 11 nginx", "critical old-proxy-process pid 12 nginx"}},
		{"a master and its workers are one start", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "nginx", 3*time.Hour), fakeProc(11, 10, "nginx", time.Hour)).
				listen("0.0.0.0:80", 100, 10, 11)
		}, 0, []string{}},
		{"a reload under way (newer one younger than --old-after)", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "haproxy", 3*time.Hour), fakeProc(20, 1, "haproxy", 2*time.Second)).
				listen("127.0.0.1:80", 100, 10, 20)
		}, 10 * time.Second, []string{}},
		{"different programs", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "haproxy", 3*time.Hour), fakeProc(20, 1, "nginx", time.Hour)).
				listen("127.0.0.1:80", 100, 10, 20)
		}, 0, []string{}},
		{"baton and its generations (one socket, baton is no proxy)", func() *Facts {
			return fakeFacts(fakeProc(5, 1, "baton", 5*time.Hour), fakeProc(20, 5, "haproxy", time.Hour), fakeProc(21, 20, "haproxy", time.Hour)).
				listen("127.0.0.1:80", 100, 5, 21)
		}, 0, []string{}},
		{"same start second", func() *Facts {
			return fakeFacts(fakeProc(10, 1, "haproxy", time.Hour), fakeProc(20, 1, "haproxy", time.Hour-500*time.Millisecond)).
				listen("127.0.0.1:80", 100, 10, 20)
		}, 0, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := opts()
			o.OldAfter = tc.oldAfter
			got := checkOldProxies(tc.facts(), o)
			sortFindings(got)
			requireComplete(t, got)
			if !sameStrings(summarize(got), tc.want) {
				t.Errorf("got %q, want %q", summarize(got), tc.want)
			}
		})
	}
	got := checkOldProxies(tests[0].facts(), Options{OldAfter: time.Nanosecond})
	sortFindings(got)
	if len(got) != 2 || !slices.Equal(got[0].Pids, []int{10, 21}) || !slices.Equal(got[0].Ports, []int{80}) {
		t.Errorf("pids/ports of the first finding: %+v", got)
	}
}
