package supervisor

import (
	"errors"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerGroups returns the supplementary groups of the process at the other
// end of c, as the kernel recorded them when it connected
// (SO_PEERGROUPS, Linux 4.13). Like SO_PEERCRED they describe the peer at
// connect time, so a peer that exits and whose pid is reused cannot lend
// it another process's groups, as reading /proc/PID/status would.
func peerGroups(c *net.UnixConn) ([]uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var groups []uint32
	var gerr error
	if err := raw.Control(func(fd uintptr) { groups, gerr = getPeerGroups(int(fd)) }); err != nil {
		return nil, err
	}
	return groups, gerr
}

func getPeerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 32)
	for range 2 { // a second try with the size the kernel asked for
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == 0:
			return buf[:size/4], nil
		case errno == unix.ERANGE && int(size/4) > len(buf):
			buf = make([]uint32, size/4)
		default:
			return nil, errno
		}
	}
	return nil, errors.New("SO_PEERGROUPS: the group list kept growing")
}
