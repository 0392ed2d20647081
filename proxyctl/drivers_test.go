package proxyctl

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
)

// boundListener binds spec on 127.0.0.1 (port 0) and returns it as a driver
// sees it; the socket is closed at cleanup.
func boundListener(t *testing.T, spec string) Listener {
	t.Helper()
	sp, err := fdpass.ParseSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fdpass.Listen(sp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return Listener{Spec: sp, Fd: s.Fd(), Addr: s.Addr(), Inode: s.Inode(), Backlog: s.Backlog()}
}

func TestNewDriver(t *testing.T) {
	for _, c := range []struct {
		name, bin, want string
	}{
		{"", "/usr/sbin/haproxy", "haproxy"},
		{"", "/opt/haproxy-2.6/bin/haproxy", "haproxy"},
		{"", "/usr/sbin/nginx", "nginx"},
		{"", "/usr/local/openresty/nginx/sbin/nginx-debug", "nginx"},
		{"", "/usr/local/bin/activated", "generic"},
		{"generic", "/usr/sbin/nginx", "generic"},
		{"nginx", "/opt/bin/proxy", "nginx"},
	} {
		d, err := New(c.name, []string{c.bin}, GenericOptions{})
		if err != nil {
			t.Errorf("New(%q, %s): %v", c.name, c.bin, err)
			continue
		}
		if d.Name() != c.want {
			t.Errorf("New(%q, %s) is the %s driver, want %s", c.name, c.bin, d.Name(), c.want)
		}
	}
	if _, err := New("", nil, GenericOptions{}); !errors.Is(err, ErrBadCommand) || !strings.Contains(err.Error(), "no command") {
		t.Errorf("New with no command: %v", err)
	}
	if _, err := New("envoy", []string{"/usr/bin/envoy"}, GenericOptions{}); !errors.Is(err, ErrBadCommand) || !strings.Contains(err.Error(), `unknown proxy "envoy"`) {
		t.Errorf("New(envoy): %v", err)
	}
}

func TestNewNginxRefuses(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"-s", "reload"}, []string{"remove -s", "SIGQUIT", "SIGTERM"}},
		{[]string{"-c", "/x.conf", "-t"}, []string{"remove -t", "config check itself"}},
		{[]string{"-T"}, []string{"remove -T", "config check itself"}},
		{[]string{"-v"}, []string{"remove -v", "not a server command line"}},
		{[]string{"-V"}, []string{"remove -V"}},
		{[]string{"-h"}, []string{"remove -h"}},
		{[]string{"-?"}, []string{"remove -?"}},
		{[]string{"-c", "/x.conf", "-g"}, []string{"-g needs a value"}},
		{[]string{"-g", "pid /run/nginx.pid;"}, []string{"remove pid from -g", "own pid file"}},
		{[]string{"-g", "daemon off; pid /tmp/n.pid;"}, []string{"remove pid from -g"}},
	} {
		_, err := NewNginx(append([]string{"/usr/sbin/nginx"}, c.args...))
		if !errors.Is(err, ErrBadCommand) {
			t.Errorf("nginx %q: %v, want ErrBadCommand", c.args, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("nginx %q: %q lacks %q", c.args, err, w)
			}
		}
	}
}

func TestNewHAProxyRefuses(t *testing.T) {
	for flag, want := range map[string]string{
		"-sf": "SIGTTOU", "-st": "SIGTTOU", "-x": "its own -x", "-D": "foreground",
		"-W": "master-worker mode itself", "-Ws": "sd_notify", "-S": "own master CLI", "-c": "config check itself",
	} {
		_, err := NewHAProxy([]string{"/usr/sbin/haproxy", "-f", "/h.cfg", flag, "1"})
		if !errors.Is(err, ErrBadCommand) || !strings.Contains(err.Error(), "remove "+flag+" ") || !strings.Contains(err.Error(), want) {
			t.Errorf("haproxy %s: %v, want ErrBadCommand naming %s and %q", flag, err, flag, want)
		}
	}
	if _, err := NewHAProxy([]string{"/usr/sbin/haproxy", "-f", "/h.cfg", "-dR", "-L", "node1"}); err != nil {
		t.Errorf("ordinary haproxy command line refused: %v", err)
	}
}

func TestNginxPrepare(t *testing.T) {
	n, err := NewNginx([]string{"/usr/sbin/nginx", "-e", "stderr", "-g", "worker_processes 3;", "-c", "/etc/n.conf"})
	if err != nil {
		t.Fatal(err)
	}
	dir := batontest.ShortTempDir(t)
	ls := []Listener{boundListener(t, "tcp://127.0.0.1:0"), boundListener(t, "tcp://127.0.0.1:0")}
	g := GenSpec{Gen: 7, Dir: dir, Listeners: ls}
	globals := "pid " + filepath.Join(dir, "nginx.pid") + "; worker_processes 3;"
	wantCheck := []string{"/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/n.conf", "-T", "-g", globals}
	if got := n.CheckArgv(g); !reflect.DeepEqual(got, wantCheck) {
		t.Errorf("CheckArgv = %q, want %q", got, wantCheck)
	}
	launch, sess, err := n.Prepare(g)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	want := Launch{
		Argv:  []string{"/usr/sbin/nginx", "-e", "stderr", "-c", "/etc/n.conf", "-g", globals},
		Env:   []string{"NGINX=3;4;"},
		Files: []int{ls[0].Fd, ls[1].Fd},
	}
	if !reflect.DeepEqual(launch, want) {
		t.Errorf("Launch = %+v, want %+v", launch, want)
	}
	if n.Signal(Drain) != unix.SIGQUIT || n.Signal(HardStop) != unix.SIGTERM {
		t.Errorf("signals: drain %v stop %v, want SIGQUIT SIGTERM", n.Signal(Drain), n.Signal(HardStop))
	}
	// Without -g, the generation's pid file alone.
	n2, err := NewNginx([]string{"/usr/sbin/nginx"})
	if err != nil {
		t.Fatal(err)
	}
	l2, s2, err := n2.Prepare(GenSpec{Gen: 1, Dir: dir, Listeners: ls[:1]})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if want := []string{"/usr/sbin/nginx", "-g", "pid " + filepath.Join(dir, "nginx.pid") + ";"}; !reflect.DeepEqual(l2.Argv, want) || !reflect.DeepEqual(l2.Env, []string{"NGINX=3;"}) {
		t.Errorf("Launch = %+v, want argv %q env NGINX=3;", l2, want)
	}
	if _, ok := Driver(n).(OutputChecker); !ok {
		t.Errorf("the nginx driver does not read nginx -T's output")
	}
}

func TestHAProxyPrepare(t *testing.T) {
	h, err := NewHAProxy([]string{"/usr/sbin/haproxy", "-f", "/etc/h.cfg"})
	if err != nil {
		t.Fatal(err)
	}
	dir := batontest.ShortTempDir(t)
	ls := []Listener{boundListener(t, "tcp://127.0.0.1:0"), boundListener(t, "tcp://127.0.0.1:0")}
	g := GenSpec{Gen: 3, Dir: dir, Listeners: ls}
	if got, want := h.CheckArgv(g), []string{"/usr/sbin/haproxy", "-c", "-f", "/etc/h.cfg"}; !reflect.DeepEqual(got, want) {
		t.Errorf("CheckArgv = %q, want %q", got, want)
	}
	launch, sess, err := h.Prepare(g)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	want := []string{"/usr/sbin/haproxy", "-W", "-db", "-S", filepath.Join(dir, "master.sock"),
		"-x", filepath.Join(dir, "getsocks.sock"), "-dR", "-f", "/etc/h.cfg", "-f", filepath.Join(dir, "baton.cfg")}
	if !reflect.DeepEqual(launch.Argv, want) || launch.Env != nil || launch.Files != nil || launch.ListenPID {
		t.Errorf("Launch = %+v, want argv %q and nothing else", launch, want)
	}
	for _, a := range launch.Argv {
		if a == "-sf" || a == "-st" {
			t.Errorf("argv %q passes %s", launch.Argv, a)
		}
	}
	extra, err := os.ReadFile(filepath.Join(dir, "baton.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(extra), "stats socket "+filepath.Join(dir, "stats.sock")+" mode 600 level user") || !strings.Contains(string(extra), "generation 3") {
		t.Errorf("baton.cfg:\n%s", extra)
	}
	if h.Signal(Drain) != unix.SIGUSR1 || h.Signal(HardStop) != unix.SIGTERM {
		t.Errorf("signals: drain %v stop %v, want SIGUSR1 SIGTERM", h.Signal(Drain), h.Signal(HardStop))
	}
	// The getsocks socket answers the generation's pid (here: this test)
	// with the very sockets, in order.
	sess.Started(os.Getpid())
	fds, recs, err := fdpass.FetchGetsocks(filepath.Join(dir, "getsocks.sock"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	if len(fds) != 2 || len(recs) != 2 {
		t.Fatalf("got %d fds, %d records, want 2", len(fds), len(recs))
	}
	for i, fd := range fds {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		if st.Ino != ls[i].Inode {
			t.Errorf("socket %d: inode %d, want listener %d's %d", i, st.Ino, i, ls[i].Inode)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := sess.Ready(ctx); err == nil {
		t.Errorf("Ready with no haproxy stats socket: nil")
	}
	if err := sess.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "getsocks.sock")); err == nil {
		t.Errorf("getsocks socket still there after Close")
	}
}

func TestNewGeneric(t *testing.T) {
	d, err := NewGeneric([]string{"/bin/app"}, GenericOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Signal(Drain) != unix.SIGTERM || d.Signal(HardStop) != unix.SIGINT {
		t.Errorf("default signals: drain %v stop %v, want SIGTERM SIGINT", d.Signal(Drain), d.Signal(HardStop))
	}
	if argv := d.CheckArgv(GenSpec{}); argv != nil {
		t.Errorf("CheckArgv without a check = %q, want none", argv)
	}
	d, err = NewGeneric([]string{"/bin/app"}, GenericOptions{DrainSignal: unix.SIGUSR2, StopSignal: unix.SIGQUIT, Check: []string{"/bin/sh", "-c", "app -check"}})
	if err != nil {
		t.Fatal(err)
	}
	if d.Signal(Drain) != unix.SIGUSR2 || d.Signal(HardStop) != unix.SIGQUIT {
		t.Errorf("configured signals: drain %v stop %v, want SIGUSR2 SIGQUIT", d.Signal(Drain), d.Signal(HardStop))
	}
	if argv := d.CheckArgv(GenSpec{}); !reflect.DeepEqual(argv, []string{"/bin/sh", "-c", "app -check"}) {
		t.Errorf("CheckArgv = %q", argv)
	}
	_, err = NewGeneric([]string{"/bin/app"}, GenericOptions{ReadyProbe: []string{"/bin/true"}, ReadyAfter: time.Second})
	if !errors.Is(err, ErrBadCommand) || !strings.Contains(err.Error(), "not both") {
		t.Errorf("probe and ready-after together: %v", err)
	}
}

func TestGenericPrepareNotify(t *testing.T) {
	d, err := NewGeneric([]string{"/bin/app", "-x"}, GenericOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := batontest.ShortTempDir(t)
	web, admin := boundListener(t, "web=tcp://127.0.0.1:0"), boundListener(t, "admin=tcp://127.0.0.1:0")
	launch, sess, err := d.Prepare(GenSpec{Gen: 2, Dir: dir, Listeners: []Listener{web, admin}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	notify := filepath.Join(dir, "notify.sock")
	want := Launch{
		Argv:      []string{"/bin/app", "-x"},
		Env:       []string{"LISTEN_FDS=2", "LISTEN_FDNAMES=web:admin", "NOTIFY_SOCKET=" + notify},
		Files:     []int{web.Fd, admin.Fd},
		ListenPID: true,
	}
	if !reflect.DeepEqual(launch, want) {
		t.Errorf("Launch = %+v, want %+v", launch, want)
	}
	for _, e := range launch.Env {
		if strings.HasPrefix(e, "LISTEN_PID=") {
			t.Errorf("env has %s: LISTEN_PID is the exec shim's job", e)
		}
	}

	// READY=1 from a process outside the generation is ignored; from the
	// generation (here the leader is this test process) it counts.
	outsider := startSleeper(t)
	sess.Started(outsider)
	sendNotify(t, notify, "READY=1")
	if err := sess.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "no READY=1") {
		t.Errorf("Ready after READY=1 from a non-member: %v, want not ready", err)
	}
	sess.Close()

	_, sess, err = d.Prepare(GenSpec{Gen: 3, Dir: dir, Listeners: []Listener{web, admin}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	sess.Started(os.Getpid())
	if err := sess.Ready(context.Background()); err == nil {
		t.Fatalf("Ready before any READY=1: nil")
	} else {
		t.Logf("not ready yet: %v", err)
	}
	sendNotify(t, notify, "STATUS=warming up")
	sendNotify(t, notify, "STATUS=serving\nREADY=1\n")
	deadline := time.Now().Add(5 * time.Second)
	for sess.Ready(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no ready 5 s after READY=1: %v", sess.Ready(context.Background()))
		}
		waitFor(5 * time.Millisecond)
	}
	if err := sess.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(notify); err == nil {
		t.Errorf("notify socket %s left after Close", notify)
	}
}

func TestGenericPrepareProbeAndDelay(t *testing.T) {
	dir := batontest.ShortTempDir(t)
	ls := []Listener{boundListener(t, "tcp://127.0.0.1:0")}
	probe := []string{"/bin/sh", "-c", "curl -fsS http://127.0.0.1:1/"}
	d, err := NewGeneric([]string{"/bin/app"}, GenericOptions{ReadyProbe: probe})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.Prepare(GenSpec{Gen: 1, Dir: dir, Listeners: ls}); err == nil {
		t.Errorf("Prepare with a probe and no command runner: nil error")
	}
	calls, fail := 0, true
	run := func(_ context.Context, argv []string) error {
		calls++
		if !reflect.DeepEqual(argv, probe) {
			t.Errorf("probe ran %q, want %q", argv, probe)
		}
		if fail {
			return errors.New("exit status 7")
		}
		return nil
	}
	launch, sess, err := d.Prepare(GenSpec{Gen: 1, Dir: dir, Listeners: ls, Run: run})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	for _, e := range launch.Env {
		if strings.HasPrefix(e, "NOTIFY_SOCKET=") {
			t.Errorf("probe readiness, yet env has %s", e)
		}
	}
	sess.Started(12345)
	err = sess.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "readiness probe") || !strings.Contains(err.Error(), "exit status 7") {
		t.Errorf("failing probe: %v", err)
	}
	fail = false
	if err := sess.Ready(context.Background()); err == nil || calls != 1 {
		t.Errorf("second Ready within 100 ms: %v after %d probe runs, want the cached failure after 1", err, calls)
	}
	waitFor(110 * time.Millisecond)
	if err := sess.Ready(context.Background()); err != nil || calls != 2 {
		t.Errorf("Ready after 100 ms with a passing probe: %v after %d runs", err, calls)
	}

	d, err = NewGeneric([]string{"/bin/app"}, GenericOptions{ReadyAfter: 150 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, sess, err = d.Prepare(GenSpec{Gen: 2, Dir: dir, Listeners: ls})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	start := time.Now()
	sess.Started(12345)
	if err := sess.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "ready-after") {
		t.Errorf("Ready at once with ready-after 150ms: %v", err)
	}
	for sess.Ready(context.Background()) != nil {
		waitFor(5 * time.Millisecond)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
		t.Errorf("ready-after 150ms: ready after %s", took)
	}
}

// TestNginxReadinessEpoll: the nginx session is ready when one process
// below the leader (a worker) has every listener in an epoll set. The
// "worker" here is this test binary re-executed (see TestMain).
func TestNginxReadinessEpoll(t *testing.T) {
	n, err := NewNginx([]string{"/usr/sbin/nginx"})
	if err != nil {
		t.Fatal(err)
	}
	ls := []Listener{boundListener(t, "tcp://127.0.0.1:0"), boundListener(t, "tcp://127.0.0.1:0")}
	_, sess, err := n.Prepare(GenSpec{Gen: 1, Dir: batontest.ShortTempDir(t), Listeners: ls})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	sess.Started(os.Getpid()) // this process plays the nginx master
	err = sess.Ready(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no worker") {
		t.Fatalf("Ready with no worker: %v", err)
	}
	// This process polling the listeners does not count: masters never do.
	ep := epollWith(t, ls[0].Fd, ls[1].Fd)
	if err := sess.Ready(context.Background()); err == nil {
		t.Errorf("Ready counted the leader's own epoll set")
	}
	unix.Close(ep)

	// A worker polling only the first listener: not ready; both: ready.
	w1 := startEpollWorker(t, ls[0])
	w1.waitPolling(t)
	if err := sess.Ready(context.Background()); err == nil {
		t.Errorf("Ready with a worker polling 1 of 2 listeners")
	} else {
		t.Logf("one of two listeners polled: %v", err)
	}
	w2 := startEpollWorker(t, ls[0], ls[1])
	w2.waitPolling(t)
	if err := sess.Ready(context.Background()); err != nil {
		t.Errorf("Ready with a worker polling both listeners: %v", err)
	}
}

// sendNotify sends one sd_notify datagram to path.
func sendNotify(t *testing.T, path, msg string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}

// waitFor blocks for d on a timer.
func waitFor(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}

// nginx reads joined flags and attached values: "-tq" is a test run, and
// "-gpid x;" sets a pid, so both are refused; "-cFILE" and "-g 'a; b;'"
// are kept or merged.
func TestNewNginxJoinedFlags(t *testing.T) {
	for _, args := range [][]string{{"-tq"}, {"-sreload"}, {"-gpid /run/x.pid;"}, {"-qT"}} {
		if _, err := NewNginx(append([]string{"/usr/sbin/nginx"}, args...)); err == nil {
			t.Errorf("NewNginx(%q) accepted", args)
		}
	}
	n, err := NewNginx([]string{"/usr/sbin/nginx", "-c/etc/x.conf", "-q", "-gworker_processes 1;"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(n.args, " "); got != "-c /etc/x.conf -q" {
		t.Errorf("args %q, want -c /etc/x.conf -q", got)
	}
	if n.global != "worker_processes 1;" {
		t.Errorf("global %q", n.global)
	}
}
