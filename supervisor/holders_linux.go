package supervisor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/fdpass"
)

// maxHolders bounds how many holders explainBusy names.
const maxHolders = 3

// explainBusy adds to err, the failure to bind sp, who holds sp's address
// when it is in use: the processes holding the listening socket (found
// through sock_diag or /proc/net/unix, then /proc/PID/fd), with their
// command lines, and what to do. It runs only on that error path: it reads
// every process's descriptors.
func explainBusy(sp fdpass.Spec, err error) error {
	if !errors.Is(err, unix.EADDRINUSE) {
		return err
	}
	inode := listeningInode(sp)
	if inode == 0 {
		return err
	}
	pids := socketHolders(inode)
	if len(pids) == 0 {
		return err
	}
	var who []string
	for _, pid := range pids {
		who = append(who, fmt.Sprintf("pid %d (%s)", pid, commandLine(pid)))
	}
	return fmt.Errorf("%w: held by %s; if it is a generation a previous baton left that this one could not prove its own (see the warnings before), stop it (kill %d), otherwise free the address or choose another; then start baton again",
		err, strings.Join(who, ", "), pids[0])
}

// listeningInode is the inode of the listening socket bound to sp's
// address, 0 if none is found.
func listeningInode(sp fdpass.Spec) uint64 {
	if sp.Scheme == fdpass.Unix {
		return unixListeningInode(sp.Addr)
	}
	if !sp.IsStream() {
		return 0
	}
	listening, err := fdpass.ListeningTCP()
	if err != nil {
		return 0
	}
	for _, l := range listening {
		if l.Addr.String() == sp.Addr {
			return l.Inode
		}
	}
	return 0
}

// unixListeningInode reads /proc/net/unix for a listening socket bound to
// path.
func unixListeningInode(path string) uint64 {
	data, err := readProcNet("unix")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[7] != path {
			continue
		}
		flags, _ := strconv.ParseUint(f[3], 16, 32)
		if flags&(1<<16) == 0 { // __SO_ACCEPTCON: listening
			continue
		}
		if inode, err := strconv.ParseUint(f[6], 10, 64); err == nil {
			return inode
		}
	}
	return 0
}

// readProcNet reads /proc/net/NAME (at most 16 MiB: enough to find a
// listening socket on any host baton runs on).
func readProcNet(name string) ([]byte, error) {
	f, err := os.Open("/proc/net/" + name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 16<<20))
}

// socketHolders lists (up to maxHolders) the processes with a descriptor
// of the socket with this inode.
func socketHolders(inode uint64) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := "socket:[" + strconv.FormatUint(inode, 10) + "]"
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		dir := "/proc/" + e.Name() + "/fd/"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if t, err := os.Readlink(dir + fd.Name()); err == nil && t == want {
				out = append(out, pid)
				break
			}
		}
		if len(out) == maxHolders {
			break
		}
	}
	return out
}

// commandLine is pid's command line for a message (bounded).
func commandLine(pid int) string {
	b, err := readProcLimited(pid, "cmdline", 512)
	if err != nil || len(b) == 0 {
		return "?"
	}
	return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}
