package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
)

// nginxConf is batontest.NginxConfig with literal edits applied: each pair
// replaces its first string (which must occur) by its second.
func nginxConf(t *testing.T, port, version int, extraMain, extraHTTP []string, edits ...[2]string) string {
	t.Helper()
	text := batontest.NginxConfig(port, version, extraMain, extraHTTP)
	for _, e := range edits {
		if !strings.Contains(text, e[0]) {
			t.Fatalf("nginx config has no %q to replace:\n%s", e[0], text)
		}
		text = strings.Replace(text, e[0], e[1], 1)
	}
	return text
}

// listenEdit turns the config's `listen 127.0.0.1:PORT;` into one with
// params.
func listenEdit(port int, params string) [2]string {
	return [2]string{fmt.Sprintf("listen 127.0.0.1:%d;", port), fmt.Sprintf("listen 127.0.0.1:%d %s;", port, params)}
}

// lineOf is the 1-based number of the first line of text containing sub.
func lineOf(t *testing.T, text, sub string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	t.Fatalf("no line with %q in:\n%s", sub, text)
	return 0
}

// startNginxAcc starts `baton run -l tcp://127.0.0.1:PORT ARGS... -- nginx
// -e stderr -c CFG` with the config text(port) and waits until it serves.
// It returns an accProxy (whose HAProxy-only write must not be used).
func startNginxAcc(t *testing.T, text func(port int) string, args []string, so batontest.StartOptions) *accProxy {
	t.Helper()
	nginx := batontest.RequireBinary(t, "nginx")
	port := batontest.FreePort(t)
	p := &accProxy{port: port, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	p.cfg = filepath.Join(batontest.ShortTempDir(t), "nginx.conf")
	writeConf(t, p.cfg, text(port))
	full := append([]string{"-l", "tcp://" + p.addr}, args...)
	full = append(full, "--", nginx, "-e", "stderr", "-c", p.cfg)
	p.b = batontest.StartBaton(t, full, so)
	return p
}

func writeConf(t *testing.T, path, text string) {
	t.Helper()
	if err := batontest.WriteFileAtomic(path, []byte(text)); err != nil {
		t.Fatal(err)
	}
}

// waitNginxSettled waits until only the active generation is left and it
// has its master and both workers (readiness needs one worker polling; the
// master may fork the second a moment later), in status and below baton.
func waitNginxSettled(t *testing.T, p *accProxy) batontest.Status {
	t.Helper()
	var st batontest.Status
	batontest.Eventually(t, 10*time.Second, func() error {
		st = p.status(t)
		gen, _ := st.Active()
		g := st.Gen(gen)
		desc := batontest.Descendants(p.b.Pid())
		if len(st.Generations) != 1 || g == nil || len(g.Pids) != 3 || len(desc) != 3 {
			return fmt.Errorf("generations %+v, baton's descendants %v: want one generation of a master and 2 workers", st.Generations, desc)
		}
		return nil
	})
	return st
}

// sockFd is one descriptor a process has on a socket, with its open file
// description's flags from /proc/PID/fdinfo.
type sockFd struct {
	fd    int
	flags uint64
}

// socketFds lists pid's descriptors on the socket with inode.
func socketFds(pid int, inode uint64) ([]sockFd, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	want := fmt.Sprintf("socket:[%d]", inode)
	var out []sockFd
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err != nil || target != want {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				fl, err := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
				if err != nil {
					return nil, fmt.Errorf("pid %d fd %s: flags %q: %w", pid, e.Name(), v, err)
				}
				fd, _ := strconv.Atoi(e.Name())
				out = append(out, sockFd{fd: fd, flags: fl})
			}
		}
	}
	return out, nil
}

// oNonblock is O_NONBLOCK as /proc/PID/fdinfo prints flags (octal 04000).
const oNonblock = 0o4000

// listenInfo returns the LISTEN sockets on port as sock_diag reports them.
func listenInfo(t *testing.T, port int) []fdpass.ListenInfo {
	t.Helper()
	all, err := fdpass.ListeningTCP()
	if err != nil {
		t.Fatal(err)
	}
	var out []fdpass.ListenInfo
	for _, l := range all {
		if int(l.Addr.Port()) == port {
			out = append(out, l)
		}
	}
	return out
}
