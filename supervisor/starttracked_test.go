package supervisor

import (
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// failStarter fails a start in a cgroup with inCgroup and one without with
// plain (nil: it starts), and counts the starts in a cgroup.
type failStarter struct {
	inCgroup, plain error
	cgroupStarts    int
}

func (f *failStarter) Start(sp proc.StartSpec) (Proc, error) {
	if sp.InCgroup {
		f.cgroupStarts++
		return nil, f.inCgroup
	}
	return nil, f.plain
}

// TestStartTrackedTransientFailureKeepsCgroups: a start that fails in a
// cgroup and without one (EAGAIN: RLIMIT_NPROC) does not turn cgroup
// tracking off; the next generation starts in a cgroup. A start that fails
// only in a cgroup does turn it off.
func TestStartTrackedTransientFailureKeepsCgroups(t *testing.T) {
	if err := cgroupUsable(); err != nil {
		t.Skipf("no writable cgroup v2 here: %v", err)
	}
	st := &failStarter{inCgroup: unix.EAGAIN, plain: unix.EAGAIN}
	s := &Supervisor{cgroups: newCgroupTree(newTrackID(), false), starter: st, log: zap.NewNop()}
	t.Cleanup(func() {
		for _, dir := range s.cgroups.leftovers() {
			_ = s.cgroups.remove(dir)
		}
		_ = s.cgroups.close()
	})
	rt := func(gen int) *genRuntime { return &genRuntime{gen: lifecycle.Gen(gen), log: zap.NewNop()} }

	if _, _, err := s.startTracked(rt(1), proc.StartSpec{}); err == nil {
		t.Fatal("start did not fail")
	}
	if s.cgroups.off != nil {
		t.Fatalf("a transient start failure turned cgroups off: %v", s.cgroups.off)
	}
	st.inCgroup, st.plain = nil, nil
	if _, cg, err := s.startTracked(rt(2), proc.StartSpec{}); err != nil || cg == "" || st.cgroupStarts != 2 {
		t.Fatalf("next start: cgroup %q, %d starts in a cgroup, err %v; want it in a cgroup", cg, st.cgroupStarts, err)
	}
	st.inCgroup = unix.EOPNOTSUPP
	if _, cg, err := s.startTracked(rt(3), proc.StartSpec{}); err != nil || cg != "" || s.cgroups.off == nil {
		t.Fatalf("start failing only in a cgroup: cgroup %q, err %v, off %v; want a start without one, cgroups off", cg, err, s.cgroups.off)
	}
}
