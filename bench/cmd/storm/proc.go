package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	batonproc "github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/internal/testbed"
)

// proc is a process the bench started itself. The goroutine started with
// it is the only caller of Wait; done is closed when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startProc runs argv with stdout and stderr appended to logPath (a file,
// never a pipe: a daemonizing child would keep a pipe open), in a process
// group of its own (a Ctrl-C of the bench does not reach it; the bench
// stops it), with deathSig sent to it should the bench die first.
func startProc(argv []string, logPath string, deathSig syscall.Signal) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSig}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has exited.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to exit.
func (p *proc) waitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// stop sends sig, waits up to grace, then SIGKILLs and waits.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(sig)
	if !p.waitExit(grace) {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// procID names a process by pid and start time, so that a pid reused by
// somebody else's process is never signalled.
type procID struct {
	Pid   int
	Start uint64 // clock ticks after boot, field 22 of /proc/PID/stat
}

// idOf names a live process; false if it is gone.
func idOf(pid int) (procID, bool) {
	st, err := batonproc.ReadStat(pid)
	if err != nil || st.State == 'Z' {
		return procID{}, false
	}
	return procID{Pid: pid, Start: st.StartTicks}, true
}

// alive reports whether this very process still runs (not a zombie).
func (id procID) alive() bool {
	st, err := batonproc.ReadStat(id.Pid)
	return err == nil && st.StartTicks == id.Start && st.State != 'Z'
}

// signal sends sig to this very process, if it still runs.
func (id procID) signal(sig syscall.Signal) {
	if id.alive() {
		_ = syscall.Kill(id.Pid, sig)
	}
}

// descendantIDs names every live descendant of pid.
func descendantIDs(pid int) []procID {
	var out []procID
	for _, d := range testbed.Descendants(pid) {
		if id, ok := idOf(d); ok {
			out = append(out, id)
		}
	}
	return out
}

// reap SIGKILLs every process of ids still alive and waits up to 5 s for
// them to be gone; it returns those still alive then.
func reap(ids []procID) []procID {
	for _, id := range ids {
		id.signal(syscall.SIGKILL)
	}
	var left []procID
	pollUntil(5*time.Second, 10*time.Millisecond, func() bool {
		left = left[:0]
		for _, id := range ids {
			if id.alive() {
				left = append(left, id)
			}
		}
		return len(left) == 0
	})
	return left
}

// pollUntil calls cond every interval until it is true (true) or timeout
// passed (false).
func pollUntil(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		<-t.C
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		t.Reset(interval)
	}
}

// rssKB is VmRSS of pid in kB.
func rssKB(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, errors.New("no VmRSS")
}

// footprint is a process's resident memory, fd count and CPU ticks.
type footprint struct {
	RSSKB int    `json:"rss_kb"`
	Fds   int    `json:"fds"`
	Ticks uint64 `json:"cpu_ticks"`
}

func footprintOf(pid int) (footprint, error) {
	rss, err := rssKB(pid)
	if err != nil {
		return footprint{}, err
	}
	fds, err := testbed.FdCount(pid)
	if err != nil {
		return footprint{}, err
	}
	st, err := batonproc.ReadStat(pid)
	return footprint{RSSKB: rss, Fds: fds, Ticks: st.CPUTicks}, err
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
