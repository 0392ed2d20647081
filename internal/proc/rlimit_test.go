package proc

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The limits baton holds itself are inherited: the child starts directly
// (one program start less) with exactly them. The hard limit stays baton's
// own: lowering it could not be undone without CAP_SYS_RESOURCE.
func TestTakeOnRlimitsStartsWithoutShim(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	const soft = 1000
	if orig.Max < 2000 {
		t.Skipf("hard NOFILE limit %d is below %d", orig.Max, 2000)
	}
	// Lower our own soft limit, as a wrapper that starts baton might.
	lowered := orig
	lowered.Cur = 512
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
			t.Errorf("restore NOFILE: %v", err)
		}
	})
	nofile := Rlimit{Name: "nofile", Resource: unix.RLIMIT_NOFILE, Soft: soft, Max: orig.Max}
	own, why := TakeOnRlimits([]Rlimit{nofile})
	if own == nil {
		t.Fatalf("TakeOnRlimits: %s", why)
	}
	st := &ExecStarter{Reaper: startReaper(t), Own: own}
	out := filepath.Join(t.TempDir(), "nofile")
	sp := StartSpec{Path: "/bin/sh", Argv: []string{"sh", "-c", "echo $(ulimit -Sn) $(ulimit -Hn) >" + out}, Rlimits: []Rlimit{nofile}}
	if !st.direct(sp) {
		t.Fatal("a child with the limits baton holds goes through the shim")
	}
	if st.direct(StartSpec{Rlimits: []Rlimit{nofile}, ListenPID: true}) {
		t.Error("a child that needs LISTEN_PID started without the shim")
	}
	if other := (Rlimit{Name: "nofile", Resource: unix.RLIMIT_NOFILE, Soft: 900, Max: orig.Max}); st.direct(StartSpec{Rlimits: []Rlimit{other}}) {
		t.Error("a child with other limits than baton's started without the shim")
	}
	p, err := st.Start(sp)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Release()
	<-p.Done()
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d %s", soft, limitString(orig.Max)); strings.TrimSpace(string(b)) != want {
		t.Errorf("a child started directly has NOFILE %q, want %q", strings.TrimSpace(string(b)), want)
	}
	// Someone changes baton's limits behind its back: the shim again.
	changed := syscall.Rlimit{Cur: 999, Max: orig.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &changed); err != nil {
		t.Fatal(err)
	}
	if st.direct(sp) {
		t.Error("after baton's own limits changed, a child still starts without the shim")
	}
	if own, _ := TakeOnRlimits([]Rlimit{{Name: "as", Resource: unix.RLIMIT_AS, Soft: 1 << 40, Max: 1 << 40}, nofile}); own != nil {
		t.Error("baton took on an address-space limit itself")
	}
}
