package supervisor

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/internal/proc"
)

// docs/design.md's invariant 6 and the 1024 incident: the exec shim gives every child the
// configured limits, whatever baton itself inherited. The generation is
// started through /bin/sh, which records the NOFILE limits it was exec'd
// with before it execs the fake: the fake is a Go program, whose runtime
// raises its own soft NOFILE to hard-1 at init.
func TestExecShimAppliesRlimits(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	const soft, hard = 1000, 2000
	if orig.Max < hard {
		t.Skipf("hard NOFILE limit %d is below %d", orig.Max, hard)
	}
	// Lower our own soft limit, as a wrapper that starts baton might.
	lowered := orig
	lowered.Cur = 512
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	lower := func(t *testing.T) {
		t.Helper()
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
			t.Errorf("restore NOFILE: %v", err)
		}
	})

	t.Run("configured", func(t *testing.T) {
		nofile := proc.Rlimit{Name: "nofile", Resource: unix.RLIMIT_NOFILE, Soft: soft, Max: hard}
		h := newHarness(t, harnessOpts{rlimits: []proc.Rlimit{nofile}, wrapShell: true})
		h.start()
		if got := startedNofile(t, h); got != [2]string{"1000", "2000"} {
			t.Errorf("generation 1 was exec'd with NOFILE %s:%s, want 1000:2000", got[0], got[1])
		}
		// Status reads the limits back from /proc; so does the test.
		g := h.active(h.status())
		s, hd, err := batontest.Nofile(g.Pid)
		if err != nil {
			t.Fatal(err)
		}
		lim := g.Processes[0].Nofile
		if strconv.FormatUint(lim.Soft, 10) != s || strconv.FormatUint(lim.Hard, 10) != hd || lim.Hard != hard {
			t.Errorf("status nofile %+v, /proc/%d/limits %s:%s; want them equal with hard %d", lim, g.Pid, s, hd, hard)
		}
		if x := get(t, h.addr()).nofile; !strings.HasSuffix(x, ":2000") {
			t.Errorf("the fake reports NOFILE %s, want hard limit 2000", x)
		}
	})
	t.Run("inherited without configuration", func(t *testing.T) {
		// The control: without an explicit limit the child gets baton's
		// lowered soft limit, so the subtest above would catch a shim that
		// sets nothing.
		lower(t)
		h := newHarness(t, harnessOpts{noRlimits: true, wrapShell: true})
		h.start()
		if got := startedNofile(t, h); got[0] != "512" {
			t.Errorf("generation 1 was exec'd with soft NOFILE %s, want the inherited 512", got[0])
		}
	})
}

// startedNofile is what the shell wrapper of generation 1 recorded.
func startedNofile(t *testing.T, h *harness) [2]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.drv.dir(1), "nofile"))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		t.Fatalf("nofile file %q", b)
	}
	return [2]string{f[0], f[1]}
}
