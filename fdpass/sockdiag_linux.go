package fdpass

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenInfo is one TCP or UDP socket as the kernel reports it through
// NETLINK_SOCK_DIAG.
type ListenInfo struct {
	Addr  netip.AddrPort
	Inode uint64
	UID   uint32 // the socket's owner (the effective uid of its creator)
	State uint8  // TCP state (TCPEstablished, TCPListen, ...)
	// For a listening socket, Queue is the accept queue length now
	// (connections completed but not yet accepted) and Backlog its limit.
	// For others, the receive and send queue lengths.
	Queue, Backlog uint32
}

// TCP states, as the kernel numbers them.
const (
	TCPEstablished = 1
	TCPClose       = 7 // a UDP socket that is not connected
	TCPListen      = 10
)

const (
	inetDiagReqV2Len  = 56
	inetDiagMsgMinLen = 72
)

// ListeningTCP lists every TCP socket in LISTEN state on the host (IPv4 and
// IPv6) through sock_diag: the kernel filters by state, so this costs the
// same however many connections the host has, unlike /proc/net/tcp.
func ListeningTCP() ([]ListenInfo, error) {
	return DiagTCP(1 << TCPListen)
}

// DiagTCP lists the TCP sockets (IPv4 and IPv6) whose state is in
// stateMask (1<<state for each wanted state).
func DiagTCP(stateMask uint32) ([]ListenInfo, error) {
	return diag(unix.IPPROTO_TCP, stateMask)
}

// DiagUDP lists the UDP sockets (IPv4 and IPv6) whose state is in
// stateMask: 1<<TCPClose for the unconnected ones (bound, receiving from
// anyone), 1<<TCPEstablished for the connected ones. It needs the kernel's
// udp_diag (a module, loaded on first use where modules can be loaded).
func DiagUDP(stateMask uint32) ([]ListenInfo, error) {
	return diag(unix.IPPROTO_UDP, stateMask)
}

func diag(proto uint8, stateMask uint32) ([]ListenInfo, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	var out []ListenInfo
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		got, err := dump(fd, family, proto, stateMask)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

func dump(fd int, family, proto uint8, stateMask uint32) ([]ListenInfo, error) {
	req := make([]byte, unix.NLMSG_HDRLEN+inetDiagReqV2Len)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(req[8:], 1) // seq
	body := req[unix.NLMSG_HDRLEN:]
	body[0], body[1] = family, proto
	binary.NativeEndian.PutUint32(body[4:], stateMask)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var out []ListenInfo
	buf := make([]byte, 64*1024)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag parse: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
					}
				}
				return out, nil
			}
			info, err := parseDiagMsg(m.Data)
			if err != nil {
				return nil, err
			}
			out = append(out, info)
		}
	}
}

func parseDiagMsg(d []byte) (ListenInfo, error) {
	if len(d) < inetDiagMsgMinLen {
		return ListenInfo{}, errors.New("sock_diag: short inet_diag_msg")
	}
	port := binary.BigEndian.Uint16(d[4:6])
	var ip netip.Addr
	if d[0] == unix.AF_INET {
		ip = netip.AddrFrom4([4]byte(d[8:12]))
	} else {
		ip = netip.AddrFrom16([16]byte(d[8:24]))
	}
	return ListenInfo{
		Addr:    netip.AddrPortFrom(ip, port),
		State:   d[1],
		Queue:   binary.NativeEndian.Uint32(d[56:60]),
		Backlog: binary.NativeEndian.Uint32(d[60:64]),
		UID:     binary.NativeEndian.Uint32(d[64:68]),
		Inode:   uint64(binary.NativeEndian.Uint32(d[68:72])),
	}, nil
}
