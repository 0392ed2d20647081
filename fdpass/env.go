package fdpass

import (
	"strconv"
	"strings"
)

// FirstInheritedFd is the descriptor number of the first socket a child
// inherits (SD_LISTEN_FDS_START): 0-2 are stdio.
const FirstInheritedFd = 3

// NginxEnv names n sockets inherited as fds 3, 4, ... the way nginx reads
// them: NGINX=3;4; — every number followed by ';' (a last number without it
// is rejected by nginx).
func NginxEnv(n int) string {
	var b strings.Builder
	b.WriteString("NGINX=")
	for i := range n {
		b.WriteString(strconv.Itoa(FirstInheritedFd + i))
		b.WriteByte(';')
	}
	return b.String()
}

// ListenFdsEnv is the systemd socket activation environment for sockets
// inherited as fds 3, 4, ... with the given names (LISTEN_FDNAMES, ':'
// separated). LISTEN_PID must be the child's own pid, so it is set between
// fork and exec by the exec shim, not here.
func ListenFdsEnv(names []string) []string {
	return []string{
		"LISTEN_FDS=" + strconv.Itoa(len(names)),
		"LISTEN_FDNAMES=" + strings.Join(names, ":"),
	}
}
