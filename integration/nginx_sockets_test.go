package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
)

// TestNginxSharedSocketFlags guards docs/design.md's invariant 1 with nginx and the two ways
// nginx can change baton's socket for every holder: the shared open file
// description keeps O_NONBLOCK (nginx never sets it on inherited sockets, and
// Go's (*os.File).Fd would clear it) in the master and every worker, after
// the first start and after 100 reloads; the backlog stays baton's; and a
// config that would re-listen it (backlog=N) or add a second socket
// (reuseport) is refused by `baton reload` with file:line, changing nothing.
func TestNginxSharedSocketFlags(t *testing.T) {
	p := startNginxAcc(t, func(port int) string { return nginxConf(t, port, 1, nil, nil) }, nil, batontest.StartOptions{})
	port := p.port
	st := p.status(t)
	if len(st.Listeners) != 1 {
		t.Fatalf("status lists %d listeners, want 1", len(st.Listeners))
	}
	inode := st.Listeners[0].Inode
	somaxconn := fdpass.DefaultBacklog()
	backlog := checkOneListen(t, port, inode)
	t.Logf("start: port %d, baton's socket inode %d, backlog (ss Send-Q) %d, somaxconn %d", port, inode, backlog, somaxconn)
	if backlog != uint32(somaxconn) {
		t.Errorf("backlog %d at start, want baton's default = somaxconn %d", backlog, somaxconn)
	}
	checkNonblock(t, p, inode, "start")

	const reloads = 100
	start := time.Now()
	var lat []time.Duration
	for i := range reloads {
		writeConf(t, p.cfg, nginxConf(t, port, i+2, nil, nil))
		res := p.b.CLI("reload")
		if res.Code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i+1, res.Code, res.Stderr)
		}
		lat = append(lat, res.Took)
	}
	t.Logf("%d sequential `baton reload` in %s: p50 %s p99 %s", reloads, time.Since(start).Round(time.Millisecond),
		percentile(lat, 50).Round(time.Millisecond), percentile(lat, 99).Round(time.Millisecond))
	if left := oldGenerationsLeft(t, p.b, 10*time.Second); len(left) > 0 {
		t.Errorf("old-generation processes alive 10 s after the reloads: %v", left)
	}
	if got := p.get(t); got != fmt.Sprint(reloads+1) {
		t.Errorf("after %d reloads answers come from config version %q, want %d", reloads, got, reloads+1)
	}
	st = p.status(t)
	if len(st.Listeners) != 1 || st.Listeners[0].Inode != inode {
		t.Errorf("after the reloads status lists listeners %+v, want the same socket (inode %d)", st.Listeners, inode)
	}
	if b := checkOneListen(t, port, inode); b != backlog {
		t.Errorf("backlog %d after %d reloads, want %d as at start", b, reloads, backlog)
	} else {
		t.Logf("after %d reloads: backlog %d, one LISTEN socket, inode %d", reloads, b, inode)
	}
	checkNonblock(t, p, inode, fmt.Sprintf("after %d reloads", reloads))

	// Configs nginx accepts but baton must refuse.
	gen, pid := st.Active()
	for _, c := range []struct {
		name   string
		params string
		want   []string
	}{
		{"backlog", "backlog=1024", []string{"backlog=1024", fmt.Sprintf("backlog %d", backlog)}},
		{"reuseport", "reuseport", []string{"reuseport", "second socket"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := nginxConf(t, port, 900, nil, nil, listenEdit(port, c.params))
			writeConf(t, p.cfg, text)
			where := fmt.Sprintf("%s:%d", p.cfg, lineOf(t, text, "listen 127.0.0.1:"))
			res := p.b.CLI("reload")
			t.Logf("listen ... %s: `baton reload` exit %d after %s: %s", c.params, res.Code, res.Took.Round(time.Millisecond), strings.TrimSpace(res.Stderr))
			if res.Code != 1 {
				t.Errorf("exit %d, want 1", res.Code)
			}
			for _, w := range append(c.want, where, "config check failed") {
				if !strings.Contains(res.Stderr, w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if b := checkOneListen(t, port, inode); b != backlog {
				t.Errorf("backlog %d after the refused reload, want %d", b, backlog)
			}
			st := p.status(t)
			if g, pd := st.Active(); g != gen || pd != pid || len(st.Generations) != 1 {
				t.Errorf("after the refused reload: active generation %d pid %d (%d generations), want the untouched %d pid %d", g, pd, len(st.Generations), gen, pid)
			}
			if got := p.get(t); got != fmt.Sprint(reloads+1) {
				t.Errorf("after the refused reload answers come from version %q, want %d", got, reloads+1)
			}
		})
	}
	// And a good config still reloads.
	writeConf(t, p.cfg, nginxConf(t, port, 1000, nil, nil))
	if g, _ := p.reload(t); g <= gen {
		t.Errorf("good config after the refusals: generation %d, want > %d", g, gen)
	}
	if got := p.get(t); got != "1000" {
		t.Errorf("answers from version %q, want 1000", got)
	}
}

// checkOneListen asserts that port has exactly one LISTEN socket, baton's
// (inode), and returns its backlog.
func checkOneListen(t *testing.T, port int, inode uint64) uint32 {
	t.Helper()
	ls := listenInfo(t, port)
	if len(ls) != 1 || ls[0].Inode != inode {
		t.Fatalf("LISTEN sockets on port %d: %+v, want exactly baton's (inode %d)", port, ls, inode)
	}
	return ls[0].Backlog
}

// checkNonblock asserts that every process of the active generation (from
// status and from baton's process tree, once no other generation is left)
// and baton itself hold the socket with O_NONBLOCK set.
func checkNonblock(t *testing.T, p *accProxy, inode uint64, when string) {
	t.Helper()
	st := waitNginxSettled(t, p)
	gen, leader := st.Active()
	g := st.Gen(gen)
	desc := batontest.Descendants(p.b.Pid())
	pids := slices.Sorted(slices.Values(slices.Concat(g.Pids, desc)))
	pids = slices.Compact(pids)
	if len(g.Pids) != 3 || len(pids) != 3 {
		t.Errorf("%s: generation %d processes %v, baton's descendants %v: want a master and 2 workers", when, gen, g.Pids, desc)
	}
	for _, pid := range append(pids, p.b.Pid()) {
		role := "worker"
		switch pid {
		case leader:
			role = "master"
		case p.b.Pid():
			role = "baton"
		}
		fds, err := socketFds(pid, inode)
		if err != nil {
			t.Errorf("%s: %s %d: %v", when, role, pid, err)
			continue
		}
		if len(fds) == 0 {
			t.Errorf("%s: %s %d does not hold socket:[%d]", when, role, pid, inode)
		}
		for _, f := range fds {
			t.Logf("%s: generation %d %s pid %d fd %d socket:[%d] flags 0%o (O_NONBLOCK %t)", when, gen, role, pid, f.fd, inode, f.flags, f.flags&oNonblock != 0)
			if f.flags&oNonblock == 0 {
				t.Errorf("%s: %s %d fd %d: flags 0%o lack O_NONBLOCK", when, role, pid, f.fd, f.flags)
			}
		}
	}
}
