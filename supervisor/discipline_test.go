package supervisor

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Flat fd count across reloads, and none left once Run returned; no
// goroutine outlives the supervisor and its reaper.
func TestFdAndGoroutineDiscipline(t *testing.T) {
	// Make the Go runtime open its poller (epoll fd and its wakeup fd) now,
	// so it does not count as baton's.
	warmPoller(t)
	ignore := goleak.IgnoreCurrent()
	before := selfFdCount(t)
	// Registered first, so it runs after the harness stopped the reaper.
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })

	h := newHarness(t, harnessOpts{})
	h.start()
	const reloads = 20
	var settled int
	for i := range reloads {
		res, err := h.reload()
		if err != nil {
			t.Fatalf("reload %d: %v", i+1, err)
		}
		// Wait until only the new generation is left, so each count sees
		// the same set of processes.
		waitFor(t, longWait, "the old generation forgotten", func() bool { return len(h.status().Generations) == 1 })
		if res.Generation != i+2 {
			t.Fatalf("reload %d made generation %d", i+1, res.Generation)
		}
		if i == 4 {
			settled = quietFdCount(t)
		}
	}
	if !pollUntil(shortWait, func() bool { return selfFdCount(t) == settled }) {
		t.Errorf("fd count %d after %d reloads, %d after 5: baton leaks descriptors\n%s", selfFdCount(t), reloads, settled, fdList(t))
	}
	if err := h.stop(false); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := h.waitRun(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !pollUntil(shortWait, func() bool { return selfFdCount(t) == before }) {
		t.Errorf("fd count %d after Run returned, %d before the listeners were bound\n%s", selfFdCount(t), before, fdList(t))
	}
}

// quietFdCount is the test process's fd count without the descriptors
// effect goroutines open for a moment (a /proc scan after a generation is
// ready): the least of reads over 200 ms.
func quietFdCount(t *testing.T) int {
	n := selfFdCount(t)
	for range 10 {
		timer := time.NewTimer(20 * time.Millisecond)
		<-timer.C
		n = min(n, selfFdCount(t))
	}
	return n
}

// warmPoller makes the Go runtime create its netpoller.
func warmPoller(t *testing.T) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
}

// fdList describes the test process's open descriptors, for failures.
func fdList(t *testing.T) string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		link, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		fmt.Fprintf(&b, "%s -> %s\n", e.Name(), link)
	}
	return b.String()
}

// docs/design.md's invariant 8: baton holds the listening sockets as raw descriptors, never
// in the Go runtime's poller (an os.File or net.Listener would register
// them, and baton would wake for every connection).
func TestListenersNotInPoller(t *testing.T) {
	dir := shortDir(t)
	h := newHarness(t, harnessOpts{specs: []string{"tcp://127.0.0.1:0", "unix://" + filepath.Join(dir, "l.sock")}})
	h.start()
	get(t, h.addr()) // traffic through the listener while we watch
	polled := pollerTargets(t)
	if len(polled.fds) == 0 {
		t.Fatal("no descriptor in any epoll set; the fdinfo parser is broken (the output pipes are polled)")
	}
	for _, s := range h.ls.Sockets() {
		if polled.fds[s.Fd()] || polled.inodes[s.Inode()] {
			t.Errorf("listener %s (fd %d, inode %d) is registered in baton's epoll set", s.Addr(), s.Fd(), s.Inode())
		}
	}
}

type pollTargets struct {
	fds    map[int]bool
	inodes map[uint64]bool
}

// pollerTargets reads every eventpoll descriptor of the test process from
// /proc/self/fdinfo: the fd number (tfd) and inode (ino, hex) of each
// registered file.
func pollerTargets(t *testing.T) pollTargets {
	t.Helper()
	out := pollTargets{fds: map[int]bool{}, inodes: map[uint64]bool{}}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); link != "anon_inode:[eventpoll]" {
			continue
		}
		f, err := os.Open(filepath.Join("/proc/self/fdinfo", e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 2 || fields[0] != "tfd:" {
				continue
			}
			if fd, err := strconv.Atoi(fields[1]); err == nil {
				out.fds[fd] = true
			}
			for _, kv := range fields {
				if v, ok := strings.CutPrefix(kv, "ino:"); ok {
					if ino, err := strconv.ParseUint(v, 16, 64); err == nil {
						out.inodes[ino] = true
					}
				}
			}
		}
		f.Close()
	}
	return out
}
