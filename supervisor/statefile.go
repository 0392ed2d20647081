package supervisor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// saveState writes the state file when the supervisor is settled (no
// reload, no stop under way) and the state changed: atomically, through a
// rename, so a crash never leaves half a file. A restarted baton adopts the
// generations it lists.
func (s *Supervisor) saveState() {
	if s.cfg.StateFile == "" || s.exited {
		return
	}
	h, _, err := s.collectHandover(false)
	if err != nil {
		return // not settled: the next step will write it
	}
	data, err := json.MarshalIndent(h, "", "  ")
	if err != nil || bytes.Equal(data, s.savedState) {
		return
	}
	tmp := s.cfg.StateFile + ".tmp"
	err = os.WriteFile(tmp, data, 0o600)
	if err == nil {
		err = os.Rename(tmp, s.cfg.StateFile)
	}
	if err != nil {
		s.log.Warn("write state file", zap.String("path", s.cfg.StateFile), zap.Error(err))
		return
	}
	s.savedState = data
}

// ReadState reads a state file a previous baton left. (nil, nil) when
// there is none.
func ReadState(path string) (*Handover, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var h Handover
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return &h, nil
}

// RecoverListeners builds the listener set of a baton restarted after a
// crash: each spec's socket is taken back (pidfd_getfd) from a live process
// of a generation the state file lists, so the same socket carries on; a
// spec nobody holds any more is bound anew. found counts the sockets taken
// back. The generations listed must still be the processes recorded (start
// time checked). With specs nil (the listeners come from the proxy's
// configuration) the recorded listeners are recovered with their users and
// removed flags; a removed one nobody holds any more is dropped.
func RecoverListeners(h *Handover, specs []fdpass.Spec, pfs ProcFS) (ls *ListenerSet, found int, err error) {
	recorded := map[string]ListenerHandover{}
	fromConfig := specs == nil
	for _, l := range h.Listeners {
		if sp, err := fdpass.ParseSpec(l.Spec); err == nil {
			recorded[sp.Key()] = l
			if fromConfig {
				specs = append(specs, sp)
			}
		}
	}
	live := map[lifecycle.Gen]bool{}
	var all []lifecycle.Gen
	for _, g := range h.Gens {
		live[g.Gen] = true
		all = append(all, g.Gen)
	}
	ls = &ListenerSet{items: map[ListenerKey]*listenerEntry{}}
	for _, sp := range specs {
		rec, ok := recorded[sp.Key()]
		var sock *fdpass.Socket
		if ok {
			sock = takeBack(h, sp, rec.Inode, pfs)
		}
		users, removed := all, false
		if fromConfig {
			users, removed = nil, rec.Removed
			for _, g := range rec.Users {
				if live[g] {
					users = append(users, g)
				}
			}
		}
		switch {
		case sock != nil:
			found++
		case fromConfig && removed:
			continue // nobody holds it and the active config does not want it
		default:
			if sock, err = fdpass.Listen(sp); err != nil {
				return nil, 0, errors.Join(err, ls.CloseAll())
			}
		}
		ls.add(sock, removed, users, rec.Where)
	}
	return ls, found, nil
}

// takeBack finds the socket with this inode in a recorded generation's
// processes and duplicates it into baton.
func takeBack(h *Handover, sp fdpass.Spec, inode uint64, pfs ProcFS) *fdpass.Socket {
	for _, g := range h.Gens {
		pidfd, err := OpenPidfd(g.Pid, g.StartTicks)
		if err != nil {
			continue
		}
		unix.Close(pidfd)
		pids, _ := pfs.Members(GenProcs{Pgid: g.Pid, Leader: g.Pid})
		for _, pid := range pids {
			fdnum := FindSocketFd(pid, inode)
			if fdnum < 0 {
				continue
			}
			pfd, err := unix.PidfdOpen(pid, 0)
			if err != nil {
				continue
			}
			fd, err := TakeFd(pfd, fdnum)
			unix.Close(pfd)
			if err != nil {
				continue
			}
			if sock, err := fdpass.Adopt(sp, fd); err == nil && sock.Inode() == inode {
				return sock
			} else if err == nil {
				sock.Close()
			}
		}
	}
	return nil
}
