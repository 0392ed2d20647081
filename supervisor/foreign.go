package supervisor

import (
	"fmt"
	"net/netip"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// findForeign lists the listening TCP sockets g's processes hold that are
// not baton's, with a process and descriptor number holding each.
func (s *Supervisor) findForeign(g proc.GenProcs, ours map[uint64]bool) []foreignFd {
	listening, err := fdpass.ListeningTCP()
	if err != nil {
		return nil
	}
	byInode := map[uint64]fdpass.ListenInfo{}
	for _, l := range listening {
		if !ours[l.Inode] {
			byInode[l.Inode] = l
		}
	}
	if len(byInode) == 0 {
		return nil
	}
	seen := map[uint64]bool{}
	var out []foreignFd
	pids, _ := s.procfs.Members(g)
	for _, pid := range pids {
		in, err := s.procfs.SocketInodes(pid)
		if err != nil {
			continue
		}
		for inode := range in {
			l, ok := byInode[inode]
			if !ok || seen[inode] {
				continue
			}
			seen[inode] = true
			out = append(out, foreignFd{api.ForeignListener{Addr: l.Addr.String(), Inode: inode, Pid: pid}, l.Addr})
		}
	}
	return out
}

type foreignFd struct {
	api.ForeignListener
	addr netip.AddrPort
}

// noteForeign runs on the loop: it records what a generation bound itself,
// and with --adopt-listeners takes those sockets over so that the next
// generation receives them.
func (s *Supervisor) noteForeign(gen lifecycle.Gen, found []foreignFd) {
	rt := s.gens[gen]
	if rt == nil {
		return
	}
	for _, f := range found {
		fields := []zap.Field{zap.String("addr", f.Addr), zap.Uint64("inode", f.Inode), zap.Int("holder", f.Pid)}
		if s.cfg.AdoptListeners {
			// A failed adoption is part of this one incident line.
			if err := s.adoptForeign(gen, f); err != nil {
				fields = append(fields, zap.NamedError("adopt", err))
			} else {
				f.Adopted = true
			}
		}
		rt.log.Warn("generation bound a listening socket baton did not hand it: add it to --listen (or run with --adopt-listeners)",
			append(fields, zap.Bool("adopted", f.Adopted))...)
		rt.foreign = append(rt.foreign, f.ForeignListener)
	}
}

func (s *Supervisor) adoptForeign(gen lifecycle.Gen, f foreignFd) error {
	fdnum := proc.FindSocketFd(f.Pid, f.Inode)
	pidfd, err := unix.PidfdOpen(f.Pid, 0)
	if err != nil || fdnum < 0 {
		return fmt.Errorf("reach pid %d: %v", f.Pid, err)
	}
	fd, err := proc.TakeFd(pidfd, fdnum)
	unix.Close(pidfd)
	if err != nil {
		return err
	}
	scheme := fdpass.TCP4
	if f.addr.Addr().Is6() {
		scheme = fdpass.TCP6
	}
	sp, err := fdpass.ParseSpec(string(scheme) + "://" + f.addr.String())
	if err != nil {
		unix.Close(fd)
		return err
	}
	sock, err := fdpass.Adopt(sp, fd)
	if err != nil {
		return err
	}
	s.cfg.Listeners.add(sock, false, []lifecycle.Gen{gen}, "")
	return nil
}
