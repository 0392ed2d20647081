package fdpass

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// MaxBatch is the largest number of descriptors sent in one SCM_RIGHTS
// message. The kernel allows 253 (SCM_MAX_FD); HAProxy and musl use 252.
const MaxBatch = 252

// ErrTruncated means the kernel dropped descriptors from a message because
// the receiver's control buffer was too small (MSG_CTRUNC).
var ErrTruncated = errors.New("control message truncated: descriptors were dropped")

// Batches splits n items into SCM_RIGHTS batches: full batches of MaxBatch
// first, the remainder last. It returns the [start, end) bounds.
func Batches(n int) [][2]int {
	var out [][2]int
	for off := 0; off < n; off += MaxBatch {
		out = append(out, [2]int{off, min(off+MaxBatch, n)})
	}
	return out
}

// Send writes data and the descriptors fds (borrowed) in one sendmsg on c.
func Send(c *net.UnixConn, data []byte, fds []int) error {
	if len(fds) > MaxBatch {
		return fmt.Errorf("send %d descriptors: more than %d in one message", len(fds), MaxBatch)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(data, oob, nil)
	if err != nil {
		return fmt.Errorf("sendmsg: %w", err)
	}
	if n != len(data) || oobn != len(oob) {
		return fmt.Errorf("sendmsg: short write (%d of %d bytes)", n, len(data))
	}
	return nil
}

// Recv reads one message into buf and up to maxFds descriptors from c. The
// caller owns the returned descriptors (close-on-exec). On error every
// descriptor received is closed and none is returned.
func Recv(c *net.UnixConn, buf []byte, maxFds int) (int, []int, error) {
	oob := make([]byte, unix.CmsgSpace(4*max(maxFds, 1)))
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, nil, err
	}
	var n, oobn, flags int
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		n, oobn, flags, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_CMSG_CLOEXEC)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return 0, nil, fmt.Errorf("recvmsg: %w", err)
	}
	fds, perr := parseRights(oob[:oobn])
	switch {
	case perr != nil:
		err = perr
	case flags&unix.MSG_CTRUNC != 0:
		err = ErrTruncated
	case len(fds) > maxFds:
		err = fmt.Errorf("got %d descriptors, expected at most %d", len(fds), maxFds)
	}
	if err != nil {
		closeAll(fds)
		return 0, nil, err
	}
	return n, fds, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			continue
		}
		got, err := unix.ParseUnixRights(&m)
		if err != nil {
			closeAll(fds)
			return nil, fmt.Errorf("parse SCM_RIGHTS: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
