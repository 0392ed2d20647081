package supervisor

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
)

// admit is the control listener's first step for every connection: the
// peer's credentials, as the kernel recorded them at connect, decide
// whether it may talk to baton. A refused peer is answered 403 and closed
// (by refuse) and never takes one of the server's connection places.
func (c *ControlServer) admit(conn net.Conn) bool {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		_ = conn.Close()
		return false
	}
	cred, err := fdpass.PeerCred(uc)
	if err != nil {
		c.refuse(uc, nil, fmt.Errorf("peer credentials unavailable: %w", err))
		return false
	}
	if err := c.allowed(uc, cred); err != nil {
		c.refuse(uc, cred, err)
		return false
	}
	return true
}

// allowed: root, baton's own uid, and members of allowGID (primary or
// supplementary group of the peer when it connected).
func (c *ControlServer) allowed(uc *net.UnixConn, cred *unix.Ucred) error {
	if cred.Uid == 0 || int(cred.Uid) == os.Geteuid() {
		return nil
	}
	if c.allowGID < 0 {
		return fmt.Errorf("uid %d may not control this baton (allowed: root, uid %d)", cred.Uid, os.Geteuid())
	}
	if int(cred.Gid) == c.allowGID {
		return nil
	}
	groups, err := peerGroups(uc)
	if err != nil {
		return fmt.Errorf("uid %d: its groups are unavailable (%w); allowed: root, uid %d, group %d", cred.Uid, err, os.Geteuid(), c.allowGID)
	}
	if slices.Contains(groups, uint32(c.allowGID)) {
		return nil
	}
	return fmt.Errorf("uid %d may not control this baton (allowed: root, uid %d, members of group %d)", cred.Uid, os.Geteuid(), c.allowGID)
}

// refuse logs a refused peer (rate-limited: the first, then one line per
// capLogEvery with the count) and answers it 403 on a goroutine of its
// own: the request is read first (up to a second, 16 KiB), so that the
// client sees the answer rather than a broken pipe. At most
// maxRefusalsAnswered are answered at once; the others are closed at once.
func (c *ControlServer) refuse(uc *net.UnixConn, cred *unix.Ucred, why error) {
	if due, skipped := c.refused.due(); due {
		fields := []zap.Field{zap.Error(why), zap.Int("refused_since_last_line", skipped)}
		if cred != nil {
			fields = append(fields, zap.Int32("peer_pid", cred.Pid), zap.Uint32("uid", cred.Uid), zap.Uint32("peer_gid", cred.Gid),
				zap.String("command", procComm(int(cred.Pid))))
		}
		c.log.Warn("control connection refused", fields...)
	}
	select {
	case c.refusing <- struct{}{}:
	default:
		_ = uc.Close()
		return
	}
	c.refusals.Add(1)
	go func() {
		defer c.refusals.Done()
		defer func() { <-c.refusing }()
		defer uc.Close()
		_ = uc.SetDeadline(time.Now().Add(time.Second))
		readRequestHead(uc, 16<<10)
		_, _ = uc.Write(forbiddenAnswer(why))
	}()
}

// readRequestHead reads until the blank line that ends an HTTP request's
// head, up to max bytes or an error (the deadline).
func readRequestHead(c net.Conn, max int) {
	buf := make([]byte, 0, 1024)
	tmp := make([]byte, 1024)
	for len(buf) < max && !bytes.Contains(buf, []byte("\r\n\r\n")) {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			return
		}
	}
}

// forbiddenAnswer is a complete HTTP/1.1 403 answer with an api.APIError body.
func forbiddenAnswer(why error) []byte {
	body, _ := json.Marshal(api.APIError{Code: "forbidden", Error: why.Error()})
	return []byte("HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\nConnection: close\r\n\r\n" + string(body))
}

// procComm is pid's command name, "" once it is gone.
func procComm(pid int) string {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	return strings.TrimSpace(string(b))
}
