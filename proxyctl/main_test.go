package proxyctl

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

// epollWorkerEnv makes the test binary an epoll "worker" (see TestMain): it
// adds the fds 3 .. 3+N-1 it inherited to an epoll set, says "polling" on
// stdout and waits for stdin to close.
const epollWorkerEnv = "PROXYCTL_TEST_EPOLL_WORKER"

// getsocksMasterEnv makes the test binary a "master" that forks a worker
// (the test binary again, with getsocksFetchEnv) which fetches the sockets
// from the path given, as HAProxy 3.1+ does; getsocksFetchEnv alone makes
// it fetch them itself. Either prints "got N" or "error: ..." on stdout.
const (
	getsocksMasterEnv = "PROXYCTL_TEST_GETSOCKS_MASTER"
	getsocksFetchEnv  = "PROXYCTL_TEST_GETSOCKS_FETCH"
)

func TestMain(m *testing.M) {
	if n, err := strconv.Atoi(os.Getenv(epollWorkerEnv)); err == nil {
		os.Exit(epollWorker(n))
	}
	if path := os.Getenv(getsocksMasterEnv); path != "" {
		os.Exit(getsocksMaster(path))
	}
	if path := os.Getenv(getsocksFetchEnv); path != "" {
		os.Exit(getsocksFetch(path))
	}
	os.Exit(m.Run())
}

func getsocksMaster(path string) int {
	// Wait until the test has allowed this process, then fork the worker.
	_, _ = io.ReadFull(os.Stdin, make([]byte, 1))
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), getsocksMasterEnv+"=", getsocksFetchEnv+"="+path)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	return 0
}

func getsocksFetch(path string) int {
	fds, _, err := fdpass.FetchGetsocks(path, 5*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return 0
	}
	fmt.Println("got", len(fds))
	return 0
}

func epollWorker(n int) int {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for fd := 3; fd < 3+n; fd++ {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	fmt.Println("polling")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// epollWith creates an epoll fd in this process watching fds.
func epollWith(t *testing.T, fds ...int) int {
	t.Helper()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			t.Fatal(err)
		}
	}
	return ep
}

type epollWorkerProc struct {
	cmd   *exec.Cmd
	lines chan string
}

// startEpollWorker re-executes the test binary as a child polling ls. It is
// stopped (stdin closed, then killed by pid if need be) at cleanup.
func startEpollWorker(t *testing.T, ls ...Listener) *epollWorkerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), epollWorkerEnv+"="+strconv.Itoa(len(ls)))
	for _, l := range ls {
		dup, err := unix.Dup(l.Fd) // the child gets a copy; the borrowed fd stays ours
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(dup), "listener")
		defer f.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, f)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &epollWorkerProc{cmd: cmd, lines: make(chan string, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(done)
		}()
		timer := time.NewTimer(5 * time.Second)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return w
}

func (w *epollWorkerProc) waitPolling(t *testing.T) {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case line := <-w.lines:
		if line != "polling" {
			t.Fatalf("epoll worker said %q", line)
		}
	case <-timer.C:
		t.Fatal("epoll worker not polling after 10 s")
	}
}

// startSleeper starts a child that lives until the test ends (killed by pid
// at cleanup) and returns its pid.
func startSleeper(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}
