package doctor

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor"
)

func tp(t time.Time) *time.Time { return &t }

// A drain needs a deadline and visibility: a generation draining longer
// than --old-after is reported.
func TestOldGeneration(t *testing.T) {
	status := func(state string, drained time.Duration) *api.Status {
		return &api.Status{Pid: 5, Listeners: []api.ListenerStatus{{Addr: "127.0.0.1:8080"}},
			Generations: []api.GenStatus{
				{Gen: 1, State: state, Pid: 20, StartedAt: tp(t0.Add(-time.Hour)), DrainedAt: tp(t0.Add(-drained)),
					Deadline: tp(t0.Add(time.Minute)), DeadlineAction: "hard stop", Connections: 3,
					Processes: []api.ProcStatus{{Pid: 20}, {Pid: 21}}},
				{Gen: 2, State: "active", Pid: 30, StartedAt: tp(t0.Add(-drained))},
			}}
	}
	tests := []struct {
		name      string
		state     string
		drained   time.Duration
		listening bool
		want      []string
	}{
		{"draining past --old-after", "draining", 2 * time.Second, false, []string{"warning old-generation baton /b.sock generation 1 (pid 20)"}},
		{"draining and still listening", "draining", 2 * time.Second, true, []string{"critical old-generation baton /b.sock generation 1 (pid 20)"}},
		{"stopping", "stopping", time.Hour, false, []string{"warning old-generation baton /b.sock generation 1 (pid 20)"}},
		{"draining, recent", "draining", 500 * time.Millisecond, false, []string{}},
		{"active", "active", time.Hour, false, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := fakeFacts(fakeProc(20, 5, "haproxy", time.Hour), fakeProc(21, 20, "haproxy", time.Hour))
			if tc.listening {
				f.listen("127.0.0.1:8080", 7, 21)
			}
			f.Batons = []Baton{{Control: "/b.sock", Status: status(tc.state, tc.drained)}}
			o := opts()
			o.OldAfter = time.Second
			got := checkOldGenerations(f, o)
			requireComplete(t, got)
			if !sameStrings(summarize(got), tc.want) {
				t.Fatalf("got %q, want %q", summarize(got), tc.want)
			}
			if len(got) == 1 && (got[0].Ports[0] != 8080 || !strings.Contains(got[0].Saw, "3 connections")) {
				t.Errorf("finding: %+v", got[0])
			}
		})
	}
}

func TestOrphans(t *testing.T) {
	h := &supervisor.Handover{BatonPid: 5, Listeners: []supervisor.ListenerHandover{{Spec: "tcp://127.0.0.1:8080"}}, Gens: []supervisor.GenHandover{{Gen: 3, Pid: 20, StartTicks: 777}, {Gen: 4, Pid: 30, StartTicks: 888}}}
	gen := fakeProc(20, 1, "haproxy", time.Hour)
	gen.StartTicks = 777
	reused := fakeProc(30, 1, "bash", time.Minute)
	reused.StartTicks = 999
	got := orphans(h, fakeFacts(gen, reused).Procs)
	if len(got) != 1 || got[0].Gen != 3 || got[0].Pid != 20 || !slices.Equal(got[0].Ports, []int{8080}) {
		t.Errorf("orphans = %+v, want generation 3 only (pid 30 is another process now)", got)
	}
	if got := orphans(h, fakeFacts(gen, fakeProc(5, 1, "baton", time.Hour)).Procs); len(got) != 0 {
		t.Errorf("baton alive, orphans = %+v", got)
	}
	f := fakeFacts(gen)
	f.Batons = []Baton{{Control: "/b.sock", Err: "connection refused", Orphans: orphans(h, f.Procs)}}
	fs := checkOrphans(f, opts())
	requireComplete(t, fs)
	if !sameStrings(summarize(fs), []string{"warning orphan-generation baton /b.sock generation 3 (pid 20)"}) {
		t.Errorf("got %q", summarize(fs))
	}
}

// The health-check flapping incident: NOFILE 1024 inherited by a proxy.
func TestNofile(t *testing.T) {
	withLimit := func(p *Process, soft, hard uint64, fds int) *Process {
		p.Nofile, p.Fds = proc.Limit{Soft: soft, Hard: hard}, fds
		return p
	}
	tests := []struct {
		name  string
		procs []*Process
		want  []string
	}{
		{"nginx master and workers at 1024", []*Process{
			withLimit(fakeProc(10, 1, "nginx", time.Hour), 1024, 4096, 20),
			withLimit(fakeProc(11, 10, "nginx", time.Hour), 1024, 4096, 20),
			withLimit(fakeProc(12, 10, "nginx", time.Hour), 1024, 4096, 20),
		}, []string{"critical nofile-low pid 10 nginx"}},
		{"haproxy at 2048", []*Process{withLimit(fakeProc(10, 1, "haproxy", time.Hour), 2048, 2048, 20)},
			[]string{"warning nofile-low pid 10 haproxy"}},
		{"host limit", []*Process{withLimit(fakeProc(10, 1, "haproxy", time.Hour), 1048576, 1048576, 20)}, []string{}},
		{"a listening daemon that is no proxy", []*Process{withLimit(fakeProc(10, 1, "sshd", time.Hour), 1024, 4096, 20)}, []string{}},
		{"a baton generation's own server", []*Process{func() *Process {
			p := withLimit(fakeProc(10, 5, "myserver", time.Hour), 1024, 1024, 20)
			p.Gen, p.BatonControl = 2, "/b.sock"
			return p
		}()}, []string{"critical nofile-low pid 10 myserver"}},
		{"one nginx started by a wrapper", []*Process{
			withLimit(fakeProc(10, 1, "nginx", time.Hour), 65536, 65536, 20),
			withLimit(fakeProc(20, 1, "nginx", time.Hour), 8192, 65536, 20),
		}, []string{"warning nofile-mismatch nginx leader processes under parent pid 1"}},
		{"nginx workers with worker_rlimit_nofile (not siblings of the master)", []*Process{
			withLimit(fakeProc(10, 1, "nginx", time.Hour), 65536, 65536, 20),
			withLimit(fakeProc(11, 10, "nginx", time.Hour), 200000, 200000, 20),
			withLimit(fakeProc(12, 10, "nginx", time.Hour), 200000, 200000, 20),
		}, []string{}},
		{"fds at 85 %", []*Process{withLimit(fakeProc(10, 1, "haproxy", time.Hour), 10000, 10000, 8500)},
			[]string{"warning fd-usage pid 10 haproxy"}},
		{"fds at 99 %", []*Process{withLimit(fakeProc(10, 1, "haproxy", time.Hour), 10000, 10000, 9900)},
			[]string{"critical fd-usage pid 10 haproxy"}},
		{"unlimited", []*Process{withLimit(fakeProc(10, 1, "haproxy", time.Hour), proc.Unlimited, proc.Unlimited, 9900)},
			[]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := fakeFacts(tc.procs...)
			var got []Finding
			for _, c := range []func(*Facts, Options) []Finding{checkNofileLow, checkNofileMismatch, checkFdUsage} {
				got = append(got, c(f, opts())...)
			}
			requireComplete(t, got)
			if !sameStrings(summarize(got), tc.want) {
				t.Errorf("got %q, want %q", summarize(got), tc.want)
			}
		})
	}
	f := fakeFacts(tests[0].procs...)
	got := checkNofileLow(f, opts())
	if len(got) != 1 || len(got[0].Pids) != 3 || !strings.Contains(got[0].Saw, "soft NOFILE 1024") {
		t.Errorf("one finding for the master and its workers, got %+v", got)
	}
}
