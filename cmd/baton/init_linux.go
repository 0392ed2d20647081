package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initChildEnv marks the supervisor started by baton's PID 1 init.
const initChildEnv = "BATON_INIT_CHILD"

// forwarded are the signals the init passes on to the supervisor.
var forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2}

// runsAsInit reports whether this `baton run` is a container's PID 1: it
// then splits into a minimal init and the supervisor as its child, so that
// the supervisor can be replaced (baton upgrade) while PID 1 stays, and
// every orphan is still reaped.
func runsAsInit(args []string) bool {
	return os.Getpid() == 1 && os.Getenv(initChildEnv) == "" && len(args) > 1 && args[1] == "run"
}

// initMain is PID 1: it starts the supervisor (this same binary and
// arguments, with BATON_INIT_CHILD=1) in its own process group, forwards
// TERM, INT, HUP, QUIT, USR1 and USR2 to it, reaps every process that ends
// up its child, and exits with the supervisor's status (128+signal when a
// signal ended it). It does nothing else: no allocation-heavy work, no
// upgrade.
func initMain(args []string, stderr io.Writer) int {
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, append([]os.Signal{unix.SIGCHLD}, forwarded...)...)
	// The supervisor tells the init, over this pipe, which process carries
	// on after a `baton upgrade` ("handover PID").
	rd, wr, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "baton (init): %v\n", err)
		return exitFailed
	}
	env := append(os.Environ(), initChildEnv+"=1", "BATON_INIT_FD=3")
	exe, err := os.Executable() // its real name, for ps and pidof (not "exe")
	if err != nil {
		exe = "/proc/self/exe"
	}
	pid, err := syscall.ForkExec(exe, args, &syscall.ProcAttr{
		Env:   env,
		Files: []uintptr{0, 1, 2, wr.Fd()},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	wr.Close()
	if err != nil {
		fmt.Fprintf(stderr, "baton (init): start the supervisor: %v\n", err)
		return exitFailed
	}
	defer rd.Close()
	rfd := int(rd.Fd())
	_ = unix.SetNonblock(rfd, true)
	var pending []byte
	for sig := range sigs {
		// A handover line is written before the old supervisor exits, so
		// reading it first never misses it.
		pid, pending = readHandovers(rfd, pid, pending)
		if sig != unix.SIGCHLD {
			_ = unix.Kill(pid, sig.(unix.Signal))
			continue
		}
		if code, done := reapAll(pid); done {
			reapAll(-1) // whatever else is left, best effort
			return code
		}
	}
	return exitFailed
}

// readHandovers reads the "handover PID" lines waiting in the pipe (without
// blocking) and returns the supervisor to follow.
func readHandovers(fd, pid int, pending []byte) (int, []byte) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		pending = append(pending, buf[:n]...)
	}
	for {
		line, rest, ok := strings.Cut(string(pending), "\n")
		if !ok {
			return pid, pending
		}
		pending = []byte(rest)
		if p, ok := strings.CutPrefix(line, "handover "); ok {
			if n, err := strconv.Atoi(p); err == nil {
				pid = n
			}
		}
	}
}

// reapAll collects every exited child; done reports that the supervisor
// (pid) was among them, with its exit code.
func reapAll(supervisor int) (code int, done bool) {
	for {
		var ws unix.WaitStatus
		p, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || p <= 0 {
			return code, done
		}
		if p == supervisor && (ws.Exited() || ws.Signaled()) {
			done = true
			code = ws.ExitStatus()
			if ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		}
	}
}
