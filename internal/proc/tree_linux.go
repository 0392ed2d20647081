package proc

// The process tree, walked through /proc/PID/task/TID/children: one walk
// for the proxy drivers, the supervisor and the test helpers.

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Children lists the children of every thread of pid (none when pid is
// gone). A child is listed by the thread that forked it.
func Children(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task/"
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	tids, _ := f.Readdirnames(-1)
	f.Close()
	var out []int
	var buf [4096]byte
	for _, tid := range tids {
		out = appendChildren(out, dir+tid+"/children", buf[:])
	}
	return out
}

// MainChildren lists the children of pid's main thread only: where the
// kernel re-parents the orphans pid reaps as a subreaper (the group's first
// thread that is not exiting, the main one unless it exited). One read
// instead of one per thread.
func MainChildren(pid int) []int {
	p := strconv.Itoa(pid)
	var buf [4096]byte
	return appendChildren(nil, "/proc/"+p+"/task/"+p+"/children", buf[:])
}

// appendChildren appends the pids a children file lists (nothing when it
// cannot be read: the thread ended).
func appendChildren(out []int, path string, buf []byte) []int {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return out
	}
	defer unix.Close(fd)
	var data []byte
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
		data = append(data, buf[:n]...)
	}
	for _, f := range strings.Fields(string(data)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// Descendants lists every descendant of pid, children first.
func Descendants(pid int) []int {
	var out []int
	queue := Children(pid)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, p)
		queue = append(queue, Children(p)...)
	}
	return out
}
