package supervisor

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// FuzzReadState: whatever a state file holds, decodeState and
// validateState neither panic nor accept what breaks their rules: a kept
// generation has a pid above 1, a start time and its directory at RUN/GEN,
// and every lifecycle state it keeps belongs to a kept generation.
func FuzzReadState(f *testing.F) {
	seed := realState(f)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"run_dir":"/r","baton_pid":5,"baton_start_ticks":1,"gens":[{"generation":1,"pid":2,"start_ticks":3,"dir":"/r/1"}],"machine":{"generations":[{"Gen":1,"State":3}],"last_generation":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := decodeState(data)
		if err != nil {
			return
		}
		run := sf.RunDir
		h, _, err := validateState(sf, run)
		if err != nil {
			t.Fatalf("validateState refused the file's own run directory: %v", err)
		}
		kept := map[int]bool{}
		for _, g := range h.Gens {
			if g.Pid <= 1 || g.StartTicks == 0 || g.Dir != filepath.Join(run, strconv.Itoa(int(g.Gen))) || g.Pidfd != -1 || g.Output != -1 {
				t.Fatalf("kept generation %+v", g)
			}
			for _, c := range g.Config {
				if !strings.HasPrefix(c, g.Dir+"/") {
					t.Fatalf("kept config copy %q outside %s", c, g.Dir)
				}
			}
			kept[int(g.Gen)] = true
		}
		for _, g := range h.Machine.Gens {
			if !kept[int(g.Gen)] {
				t.Fatalf("lifecycle state of generation %d kept without it", g.Gen)
			}
		}
	})
}
