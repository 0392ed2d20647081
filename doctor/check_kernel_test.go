package doctor

import (
	"testing"
	"time"

	"github.com/batonproxy/baton/api"
)

// The dropped-connections incident: kernel limits and queues.
func TestKernelChecks(t *testing.T) {
	base := func() *Facts {
		f := fakeFacts(fakeProc(10, 1, "haproxy", time.Hour))
		f.Sys = Sysctls{Somaxconn: 4096, MaxSynBacklog: 2048, Syncookies: 1, MaxTWBuckets: 1000}
		f.TimeWait = 10
		return f.listen("127.0.0.1:80", 100, 10)
	}
	tests := []struct {
		name   string
		change func(f *Facts)
		want   []string
	}{
		{"quiet host", func(*Facts) {}, []string{}},
		{"TIME_WAIT at 85 %", func(f *Facts) { f.TimeWait = 850 }, []string{"warning time-wait host"}},
		{"TIME_WAIT at the limit", func(f *Facts) { f.TimeWait = 1000 }, []string{"critical time-wait host"}},
		{"TIME_WAIT unknown", func(f *Facts) { f.TimeWait = -1 }, []string{}},
		{"baton asked for more than somaxconn", func(f *Facts) {
			f.Batons = []Baton{{Control: "/b.sock", Status: &api.Status{Pid: 5, Listeners: []api.ListenerStatus{
				{Spec: "tcp://127.0.0.1:80?backlog=65535", Addr: "127.0.0.1:80", Backlog: 4096},
				{Spec: "tcp://127.0.0.1:81?backlog=1024", Addr: "127.0.0.1:81", Backlog: 1024},
			}}}}
		}, []string{"warning backlog-capped 127.0.0.1:80"}},
		{"no SYN cookies, syn backlog below a listener's", func(f *Facts) {
			f.Sys.Syncookies, f.Sys.MaxSynBacklog = 0, 128
		}, []string{"warning backlog-capped host"}},
		{"nginx listen backlog above somaxconn", func(f *Facts) {
			f.Configs = []ProxyConfig{{Program: "nginx", Pids: []int{10}, Files: []ConfigFile{{Path: "/n.conf",
				Text: "worker_shutdown_timeout 1m;\nhttp { server { listen 127.0.0.1:80 backlog=65535; listen 81 backlog=511; } }\n"}}}}
		}, []string{"warning backlog-capped /n.conf:2"}},
		{"SYN cookies on: syn backlog does not drop", func(f *Facts) { f.Sys.MaxSynBacklog = 128 }, []string{}},
		{"accept queue at 60 %", func(f *Facts) { f.Listeners[0].Queue = 2500 }, []string{"warning accept-queue 127.0.0.1:80"}},
		{"accept queue full", func(f *Facts) { f.Listeners[0].Queue = 4096 }, []string{"critical accept-queue 127.0.0.1:80"}},
		{"listen drops growing", func(f *Facts) {
			f.Drops = DropCounters{Known: true, Interval: 200 * time.Millisecond, Overflows: [2]uint64{5, 9}, Drops: [2]uint64{5, 9}}
		}, []string{"critical listen-drops host"}},
		{"listen drops since boot only", func(f *Facts) {
			f.Drops = DropCounters{Known: true, Interval: 200 * time.Millisecond, Overflows: [2]uint64{5, 5}, Drops: [2]uint64{7, 7}}
		}, []string{"info listen-drops host"}},
		{"no drops", func(f *Facts) {
			f.Drops = DropCounters{Known: true, Interval: 200 * time.Millisecond}
		}, []string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := base()
			tc.change(f)
			r := Evaluate(f, Options{})
			requireComplete(t, r.Findings)
			if !sameStrings(summarize(r.Findings), tc.want) {
				t.Errorf("got %q, want %q", summarize(r.Findings), tc.want)
			}
			if wantFail := len(tc.want) > 0 && tc.want[0][:4] != "info"; r.Failing() != wantFail {
				t.Errorf("Failing() = %v, want %v", r.Failing(), wantFail)
			}
		})
	}
}

// --port and --pid keep the findings about them and the host-wide ones.
func TestScope(t *testing.T) {
	f := fakeFacts(fakeProc(10, 1, "haproxy", 3*time.Hour), fakeProc(20, 1, "haproxy", time.Hour)).
		listen("127.0.0.1:80", 100, 10).listen("127.0.0.1:80", 101, 20).
		listen("127.0.0.1:81", 200, 10).listen("127.0.0.1:81", 201, 20)
	f.Sys.MaxTWBuckets, f.TimeWait = 10, 10
	all := summarize(Evaluate(f, Options{}).Findings)
	tests := []struct {
		name string
		o    Options
		want []string
	}{
		{"none", Options{}, all},
		{"port 81", Options{Ports: []int{81}}, []string{"critical old-proxy-process pid 10 haproxy", "critical reuseport-group 127.0.0.1:81", "critical time-wait host"}},
		{"pid 10", Options{Pids: []int{10}}, all},
		{"pid 99", Options{Pids: []int{99}}, []string{"critical time-wait host"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := summarize(Evaluate(f, tc.o).Findings)
			if !sameStrings(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
