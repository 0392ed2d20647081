package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// startProc starts argv with env, in a process group of its own when
// group is set, its stdin a pipe that stays open until cleanup, which
// kills it by pid. It must not fork (the test binary is a subreaper).
func startProc(t *testing.T, env []string, group bool, argv ...string) *exec.Cmd {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, env...)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: group}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); w.Close(); <-done })
	return cmd
}

func newRunDir(t *testing.T, gens ...int) *RunDir {
	t.Helper()
	rd, err := OpenRunDir(filepath.Join(shortDir(t), "b.sock.d"), false)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gens {
		must(t, os.Mkdir(rd.genDir(lifecycle.Gen(g)), 0o700))
	}
	return rd
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// TestFindLeaders: a process is a generation's leader when it leads its
// own process group and carries the generation's marker (or runs as
// baton's uid naming the generation's directory on its command line), the
// directory exists, and it started first among those claiming it.
func TestFindLeaders(t *testing.T) {
	rd := newRunDir(t, 1, 2, 3, 4, 5)
	sleep := []string{"sleep", "30"}
	p1 := startProc(t, []string{markerVar + "=" + rd.markerValue("1-2-0000000a", 1)}, true, sleep...)
	startProc(t, []string{markerVar + "=1-2-0000000a.2:" + strings.Repeat("0", 32)}, true, sleep...) // forged MAC
	startProc(t, []string{markerVar + "=" + rd.markerValue("1-2-0000000a", 3)}, false, sleep...)     // not a group leader
	p4 := startProc(t, nil, true, "/bin/sh", "-c", "read x", rd.genDir(4)+"/config/x.cfg")           // reads its stdin: no child
	p5 := startProc(t, []string{markerVar + "=" + rd.markerValue("1-2-0000000a", 5)}, true, sleep...)
	startProc(t, []string{markerVar + "=" + rd.markerValue("1-2-0000000a", 5)}, true, sleep...) // started later: a daemonized child
	startProc(t, []string{markerVar + "=" + rd.markerValue("1-2-0000000a", 6)}, true, sleep...) // no directory 6
	startProc(t, nil, true, sleep...)                                                           // unrelated
	got := rd.findLeaders()
	want := map[lifecycle.Gen]int{1: p1.Process.Pid, 4: p4.Process.Pid, 5: p5.Process.Pid}
	if len(got) != len(want) {
		t.Errorf("found %v, want %v", got, want)
	}
	for gen, pid := range want {
		if got[gen].Pid != pid {
			t.Errorf("generation %d: leader %+v, want pid %d", gen, got[gen], pid)
		}
	}
}

// TestForgedStateFileRefused guards the forged state file incident at the
// reader: a state file listing an unrelated process (with its real start
// time) is refused for that process, by pid at WARN, whether its directory
// is outside the run directory or is a real generation directory; nothing
// is adopted, the process is not touched.
func TestForgedStateFileRefused(t *testing.T) {
	for _, inside := range []bool{false, true} {
		t.Run("dir-inside-"+strconv.FormatBool(inside), func(t *testing.T) {
			rd := newRunDir(t, 1)
			victim := startProc(t, nil, true, "sleep", "30")
			pid := victim.Process.Pid
			ticks, err := proc.StartTicks(pid)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if inside {
				dir = rd.genDir(1)
			}
			state := filepath.Join(filepath.Dir(rd.Path), "b.sock.state")
			must(t, os.WriteFile(state, stateOf(t, rd.Path, 1, pid, ticks, dir), 0o600))
			log, logs := observed()
			if h, err := Recover(state, rd, log); h != nil || err != nil {
				t.Fatalf("Recover adopted %+v (%v)", h, err)
			}
			warned := false
			for _, e := range logs.FilterLevelExact(zapcore.WarnLevel).All() {
				warned = warned || e.ContextMap()["pid"] == int64(pid)
				t.Logf("WARN %s %v", e.Message, e.ContextMap())
			}
			if !warned {
				t.Errorf("no WARN naming pid %d", pid)
			}
			if procState(pid) == "Z" || syscall.Kill(pid, 0) != nil {
				t.Errorf("the listed process was touched")
			}
			if _, err := os.Stat(dir); err != nil {
				t.Errorf("the listed directory: %v", err)
			}
		})
	}
}

// TestTruncatedStateFileRecovered guards the truncated state file: it is
// moved aside (PATH.bad) with an ERROR, and the generation is still found
// by its marker and adopted, so baton starts with it instead of failing on
// a busy address.
func TestTruncatedStateFileRecovered(t *testing.T) {
	rd := newRunDir(t, 1, 2)
	p := startProc(t, []string{markerVar + "=" + rd.markerValue("1-2-0000000a", 2)}, true, "sleep", "30")
	ticks, _ := proc.StartTicks(p.Process.Pid)
	state := filepath.Join(filepath.Dir(rd.Path), "b.sock.state")
	full := stateOf(t, rd.Path, 2, p.Process.Pid, ticks, rd.genDir(2))
	must(t, os.WriteFile(state, full[:len(full)/2], 0o600))
	log, logs := observed()
	h, err := Recover(state, rd, log)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil || len(h.Gens) != 1 || h.Gens[0].Gen != 2 || h.Gens[0].Pid != p.Process.Pid || h.Gens[0].Dir != rd.genDir(2) {
		t.Fatalf("Recover = %+v, want generation 2 pid %d", h, p.Process.Pid)
	}
	if h.Machine.LastGen != 2 {
		t.Errorf("last generation %d, want 2 (new generations must not reuse a directory)", h.Machine.LastGen)
	}
	if logs.FilterLevelExact(zapcore.ErrorLevel).FilterMessageSnippet("state file not trusted").Len() != 1 {
		t.Errorf("no ERROR about the state file: %v", logs.All())
	}
	if _, err := os.Stat(state + ".bad"); err != nil {
		t.Errorf("state file not moved aside: %v", err)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("state file still there: %v", err)
	}
}

// TestRunningWriterStopsRecovery guards two batons on one set of
// generations: a state file whose writer still runs (here the test itself)
// makes Recover adopt nothing, not even the generations found by their
// markers, and fail with errControlInUse naming the writer's pid.
func TestRunningWriterStopsRecovery(t *testing.T) {
	rd := newRunDir(t, 1, 2)
	p := startProc(t, []string{markerVar + "=" + rd.markerValue("1-2-0000000a", 2)}, true, "sleep", "30")
	ticks, _ := proc.StartTicks(p.Process.Pid)
	var sf stateFile
	must(t, json.Unmarshal(stateOf(t, rd.Path, 2, p.Process.Pid, ticks, rd.genDir(2)), &sf))
	sf.BatonPid = os.Getpid()
	own, err := proc.StartTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	sf.BatonStartTicks = own
	b, err := json.Marshal(sf)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(filepath.Dir(rd.Path), "b.sock.state")
	must(t, os.WriteFile(state, b, 0o600))
	log, _ := observed()
	h, err := Recover(state, rd, log)
	if h != nil {
		t.Errorf("Recover adopted %+v while the state file's writer runs", h.Gens)
	}
	if !errors.Is(err, errControlInUse) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("Recover: %v, want errControlInUse naming pid %d", err, os.Getpid())
	}
	if _, err := os.Stat(state); err != nil {
		t.Errorf("the state file of a running writer was moved: %v", err)
	}
}

// TestBusyAddressNamesHolder: binding an address another process listens
// on fails with its pid and command line and what to do.
func TestBusyAddressNamesHolder(t *testing.T) {
	ls := bindSpecs(t, "tcp://127.0.0.1:0")
	sock := ls.Sockets()[0]
	dup, err := dupFd(sock.Fd())
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(dup), "listener") // the child's copy
	cmd := exec.Command("sleep", "30")
	cmd.ExtraFiles = []*os.File{f}
	err = cmd.Start()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	must(t, ls.CloseAll())
	sp, err := fdpass.ParseSpec("tcp://" + sock.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_, err = BindListeners([]fdpass.Spec{sp})
	if err == nil {
		t.Fatal("bound a busy address")
	}
	t.Logf("%v", err)
	for _, w := range []string{"address already in use", "held by pid " + strconv.Itoa(cmd.Process.Pid) + " (sleep 30)", "kill " + strconv.Itoa(cmd.Process.Pid)} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q", w)
		}
	}
}

// TestUpgradeWhileStoppingSaysSo guards the false "upgrade on SIGUSR2
// failed; this baton carries on" of an exiting baton: an upgrade asked
// during a stop fails with lifecycle.ErrStopping, and after Run returned
// with ErrNotRunning, which the signal handler reports as such.
func TestUpgradeWhileStoppingSaysSo(t *testing.T) {
	life := testLife()
	life.DrainTimeout, life.KillGrace = 2*time.Second, time.Second
	h := newHarness(t, harnessOpts{life: &life, modes: []string{"nodrain"}})
	h.start()
	stopped := make(chan error, 1)
	go func() { stopped <- h.sup.Stop(context.Background(), false) }()
	waitFor(t, shortWait, "the stop under way", func() bool { return h.status().Stopping })
	if _, err := h.sup.Upgrade(context.Background()); !errors.Is(err, lifecycle.ErrStopping) {
		t.Errorf("upgrade during the stop: %v, want ErrStopping", err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	h.waitRun()
	if _, err := h.sup.Upgrade(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("upgrade after Run returned: %v, want ErrNotRunning", err)
	}
}

// TestRecoverWithoutStateKeepsTracking: with no state file, the tracking ID
// comes from the generations' proven markers (so their daemons are still
// theirs), and a listening socket that only a daemon of a generation holds
// (a session of its own, a child of the leader's parent, carrying the
// marker) is taken back.
func TestRecoverWithoutStateKeepsTracking(t *testing.T) {
	const id = "99999999-1-0000000a" // no such pid: its baton is gone
	rd := newRunDir(t, 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	// sh stands for the dead baton's init: the leader's parent, and the
	// daemon's. The leader (started first) does not hold fd 3.
	sh := exec.Command("/bin/sh", "-c", "setsid sleep 30 3>&- & setsid sleep 30 & wait")
	sh.Env = []string{"PATH=/usr/bin:/bin", markerVar + "=" + rd.markerValue(id, 1)}
	sh.ExtraFiles = []*os.File{f}
	err = sh.Start()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, pid := range proc.Children(sh.Process.Pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		sh.Wait() // its wait reaps them, then it exits
	})
	// Both must have called setsid and run sleep before the scan.
	ready := func() bool {
		kids := proc.Children(sh.Process.Pid)
		for _, pid := range kids {
			st, err := proc.ReadStat(pid)
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
			if err != nil || st.Pgrp != pid || string(comm) != "sleep\n" {
				return false
			}
		}
		return len(kids) == 2
	}
	for deadline := time.Now().Add(2 * time.Second); !ready() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}

	log, _ := observed()
	h, err := Recover(filepath.Join(filepath.Dir(rd.Path), "b.sock.state"), rd, log)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil || h.Tracking == nil || h.Tracking.ID != id {
		t.Fatalf("Recover = %+v, want tracking ID %s", h, id)
	}
	pfs, err := proc.NewFS()
	if err != nil {
		t.Fatal(err)
	}
	ls, found, err := RecoverListeners(h, nil, pfs)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.CloseAll()
	if found != 1 || len(ls.Sockets()) != 1 || ls.Sockets()[0].Addr() != l.Addr().String() {
		t.Fatalf("took back %d sockets %v, want the daemon's %s", found, ls.Sockets(), l.Addr())
	}
}

// TestRecoverWithoutStateTrackingFromCgroup: a leader proven by its command
// line carries no marker (nginx overwrites its environment); the tracking
// ID and subtree of its baton come from its cgroup, BASE/baton-ID/gen-N.
func TestRecoverWithoutStateTrackingFromCgroup(t *testing.T) {
	if err := cgroupUsable(); err != nil {
		t.Skipf("no writable cgroup v2 here: %v", err)
	}
	const id = "99999999-1-0000000b" // no such pid: its baton is gone
	rd := newRunDir(t, 1)
	prev := newCgroupTree(id, false)
	dir, fd, _, err := prev.create(1)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Close(fd)
	t.Cleanup(func() { _ = prev.remove(dir); _ = prev.close() })
	p := startProc(t, nil, true, "/bin/sh", "-c", "read x", rd.genDir(1)+"/config/x.cfg")
	must(t, os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(p.Process.Pid)), 0o644))

	log, _ := observed()
	h, err := Recover(filepath.Join(filepath.Dir(rd.Path), "b.sock.state"), rd, log)
	if err != nil {
		t.Fatal(err)
	}
	if h == nil || h.Tracking == nil || h.Tracking.ID != id || h.Tracking.Cgroup != prev.dir {
		t.Fatalf("Recover = %+v, want tracking %s in %s", h, id, prev.dir)
	}
	if got := h.procs[1].Cgroup; got != dir {
		t.Errorf("generation 1's cgroup %q, want %s", got, dir)
	}
}
