package supervisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// The state file (CONTROL.state) is what a baton restarted after a crash
// needs to carry on: the live generations with their lifecycle state, the
// listeners, the last good config. Only baton writes it, in the checked
// control directory (see CheckControlDir), and a reader trusts it no
// further than this: the file must be a regular file of baton's uid, at
// most stateLimit bytes, of this stateVersion, naming the reader's own run
// directory, and consistent (validateState). Every process it lists must
// still be proven a generation of that run directory (see proveLeaders)
// before baton signals it or takes its sockets.

// stateVersion is the state file format. A file of another version is
// not trusted (it is moved aside; generations are found by their marker).
const stateVersion = 1

// stateLimit bounds the state file (a few KiB in practice).
const stateLimit = 1 << 20

// Bounds of what a state file may list.
const (
	maxStateGens      = 1024
	maxStateListeners = 4096
)

// stateFile is the state file's content: a Handover (without descriptors)
// and what authenticates it.
type stateFile struct {
	Version int `json:"version"`
	// RunDir is the run directory of the baton that wrote it: every
	// generation directory and config copy it lists is inside.
	RunDir string `json:"run_dir"`
	// BatonStartTicks is the writer's start time (with BatonPid, which
	// Handover has): a state file whose writer still runs is not adopted.
	BatonStartTicks uint64 `json:"baton_start_ticks"`
	Handover
}

// saveState writes the state file when the supervisor is settled (no
// reload, no stop under way) and the state changed, through
// writeFileAtomic. A write that fails (a full disk) leaves no temporary
// file; the previous state file, now stale, is removed (a restarted baton
// then finds the generations by their markers instead of trusting a state
// that no longer holds) and the failure is logged at WARN.
func (s *Supervisor) saveState() {
	if s.cfg.StateFile == "" || s.exited {
		return
	}
	h, _, err := s.collectHandover(false)
	if err != nil {
		return // not settled: the next step will write it
	}
	data, err := json.MarshalIndent(stateFile{Version: stateVersion, RunDir: s.run.Path, BatonStartTicks: s.startTicks, Handover: h}, "", "  ")
	if err != nil || bytes.Equal(data, s.savedState) {
		return
	}
	if err := writeFileAtomic(s.cfg.StateFile, data); err != nil {
		rmErr := removeIfExists(s.cfg.StateFile)
		s.log.Warn("state file not updated: a baton restarted after a crash finds the generations by their markers instead",
			zap.String("path", s.cfg.StateFile), zap.Error(err), zap.NamedError("remove_stale", rmErr))
		s.savedState = nil
		return
	}
	s.savedState = data
}

// readState reads a state file a previous baton left: a regular file (not
// a symbolic link) of baton's uid, at most stateLimit bytes, in this
// format. (nil, nil) when there is none. The processes it lists are not
// checked: see Recover for that.
func readState(path string) (*Handover, error) { return ReadStateOwnedBy(path, os.Geteuid()) }

// ReadStateOwnedBy is readState for the state file of a baton running as
// uid owner (doctor reads a non-root baton's).
func ReadStateOwnedBy(path string, owner int) (*Handover, error) {
	sf, err := readStateFileOwnedBy(path, owner)
	if err != nil || sf == nil {
		return nil, err
	}
	return &sf.Handover, nil
}

func readStateFile(path string) (*stateFile, error) { return readStateFileOwnedBy(path, os.Geteuid()) }

func readStateFileOwnedBy(path string, owner int) (*stateFile, error) {
	data, err := readOwnedFile(path, owner, stateLimit)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	sf, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return sf, nil
}

// decodeState parses a state file and checks what it says about itself:
// version, writer, and the consistency of its lifecycle state, listeners
// and generations. It does not know where the reader's run directory is
// (validateState checks that).
func decodeState(data []byte) (*stateFile, error) {
	if len(data) > stateLimit {
		return nil, fmt.Errorf("larger than %d bytes", stateLimit)
	}
	var sf stateFile
	if err := json.Unmarshal(data, &sf); err != nil {
		return nil, err
	}
	switch {
	case sf.Version != stateVersion:
		return nil, fmt.Errorf("format version %d, this baton reads %d", sf.Version, stateVersion)
	case sf.BatonPid <= 1 || sf.BatonStartTicks == 0:
		return nil, fmt.Errorf("no writer (baton pid %d, start %d)", sf.BatonPid, sf.BatonStartTicks)
	case !filepath.IsAbs(sf.RunDir) || filepath.Clean(sf.RunDir) != sf.RunDir:
		return nil, fmt.Errorf("run directory %q is not a clean absolute path", sf.RunDir)
	case len(sf.Gens) > maxStateGens || len(sf.Machine.Gens) > maxStateGens:
		return nil, fmt.Errorf("more than %d generations", maxStateGens)
	case len(sf.Listeners) > maxStateListeners:
		return nil, fmt.Errorf("more than %d listeners", maxStateListeners)
	}
	gens := map[lifecycle.Gen]bool{}
	for _, g := range sf.Gens {
		if g.Gen <= 0 || gens[g.Gen] {
			return nil, fmt.Errorf("generation %d listed twice or not positive", g.Gen)
		}
		gens[g.Gen] = true
	}
	if err := checkMachineState(sf.Machine, gens); err != nil {
		return nil, err
	}
	keys := map[string]bool{}
	steered := map[string]bool{} // a steered listener's key, with its members seen
	members := map[string]bool{} // key and generation of each member
	last := ""                   // the key of the listener record before
	for _, l := range sf.Listeners {
		sp, err := fdpass.ParseSpec(l.Spec)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", l.Spec, err)
		}
		if l.MemberOf != 0 {
			// A steered group's member follows its listener's record.
			m := fmt.Sprintf("%s/%d", sp.Key(), l.MemberOf)
			switch {
			case !steered[sp.Key()] || last != sp.Key():
				return nil, fmt.Errorf("listener %s: a member of generation %d without its steered listener before it", l.Spec, l.MemberOf)
			case !gens[l.MemberOf] || members[m]:
				return nil, fmt.Errorf("listener %s: member of generation %d listed twice or of a generation not listed", l.Spec, l.MemberOf)
			}
			members[m] = true
			continue
		}
		if keys[sp.Key()] {
			return nil, fmt.Errorf("listener %s listed twice", l.Spec)
		}
		keys[sp.Key()], last = true, sp.Key()
		if l.Steered {
			steered[sp.Key()] = true
		}
		for _, u := range l.Users {
			if !gens[u] {
				return nil, fmt.Errorf("listener %s: user generation %d is not listed", l.Spec, u)
			}
		}
	}
	return &sf, nil
}

// checkMachineState: the lifecycle state lists exactly the generations
// listed with a process, each once, in a settled state, at most one active,
// none above the last generation number.
func checkMachineState(m lifecycle.MachineState, gens map[lifecycle.Gen]bool) error {
	seen := map[lifecycle.Gen]bool{}
	active := 0
	for _, g := range m.Gens {
		switch {
		case !gens[g.Gen] || seen[g.Gen]:
			return fmt.Errorf("lifecycle state: generation %d is not listed once with its process", g.Gen)
		case g.Gen > m.LastGen:
			return fmt.Errorf("lifecycle state: generation %d above the last generation %d", g.Gen, m.LastGen)
		case g.State == lifecycle.Active:
			active++
		case g.State == lifecycle.Draining, g.State == lifecycle.Stopping, g.State == lifecycle.Killed:
		default:
			return fmt.Errorf("lifecycle state: generation %d is %s", g.Gen, g.State)
		}
		seen[g.Gen] = true
	}
	if active > 1 {
		return fmt.Errorf("lifecycle state: %d active generations", active)
	}
	if len(seen) != len(gens) {
		return errors.New("lifecycle state: a generation listed with its process has no lifecycle state")
	}
	return nil
}

// genRefusal is a generation a state file lists that baton does not adopt,
// and why.
type genRefusal struct {
	Gen    lifecycle.Gen
	Pid    int
	Reason string
}

// validateState checks sf against the reader's run directory runDir: the
// file must be the state of that run directory; each generation's
// directory must be runDir/GEN exactly and its config copies inside it, or
// that generation is refused (returned with the reason, and dropped from
// the result); last good copies must be in runDir/last-good (else the
// last good config is dropped); the pid file must name a kept generation
// (else it is dropped). It only looks at the data.
func validateState(sf *stateFile, runDir string) (*Handover, []genRefusal, error) {
	if sf.RunDir != runDir {
		return nil, nil, fmt.Errorf("it is the state of run directory %s, not of %s", sf.RunDir, runDir)
	}
	h := sf.Handover
	h.ControlFd, h.LockFd, h.InitFd, h.MetricsFd, h.NumFds = -1, -1, -1, -1, 0
	var refused []genRefusal
	kept := map[lifecycle.Gen]bool{}
	h.Gens = nil
	for _, g := range sf.Gens {
		want := filepath.Join(runDir, fmt.Sprint(int(g.Gen)))
		reason := ""
		switch {
		case g.Pid <= 1:
			reason = fmt.Sprintf("pid %d is never a generation", g.Pid)
		case g.StartTicks == 0:
			reason = "no start time"
		case g.Dir != want:
			reason = fmt.Sprintf("its directory %q is not baton's %s", g.Dir, want)
		default:
			for orig, c := range g.Config {
				if !filepath.IsAbs(orig) || !inside(c, want) {
					reason = fmt.Sprintf("config copy %q is not inside %s", c, want)
					break
				}
			}
		}
		if reason != "" {
			refused = append(refused, genRefusal{Gen: g.Gen, Pid: g.Pid, Reason: reason})
			continue
		}
		g.Pidfd, g.Output = -1, -1
		h.Gens = append(h.Gens, g)
		kept[g.Gen] = true
	}
	h.Machine.Gens = nil
	for _, g := range sf.Machine.Gens {
		if kept[g.Gen] {
			h.Machine.Gens = append(h.Machine.Gens, g)
		}
	}
	for orig, c := range h.LastGood {
		if !filepath.IsAbs(orig) || !inside(c, filepath.Join(runDir, "last-good")) {
			h.LastGood = nil
			break
		}
	}
	pidOK := false
	for _, g := range h.Gens {
		pidOK = pidOK || g.Pid == h.PidFile.Pid
	}
	if !pidOK || !filepath.IsAbs(h.PidFile.Path) || filepath.Clean(h.PidFile.Path) != h.PidFile.Path {
		h.PidFile = api.PidFileState{}
	}
	return &h, refused, nil
}

// inside reports whether path is a clean path strictly below dir.
func inside(path, dir string) bool {
	return filepath.Clean(path) == path && strings.HasPrefix(path, dir+"/")
}
