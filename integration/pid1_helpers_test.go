package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// pid1Split checks, from the host, the shape docs/design.md gives baton as a
// container's PID 1: the init is PID 1 of its namespace (NSpid ends in 1),
// the supervisor is its child with a small pid of its own in the namespace
// (status "pid", not 1), and the active generation is the supervisor's
// child. fresh: baton has just started (the supervisor's pid in the
// namespace is then small; after an upgrade it is whatever came next). It
// returns the supervisor's host pid.
func pid1Split(t *testing.T, nb *batontest.NSBaton, fresh bool) int {
	t.Helper()
	st, err := nb.Status()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	initIDs, _ := batontest.NSPids(nb.InitPid)
	sup := nb.HostPid(st.Pid)
	supIDs, _ := batontest.NSPids(sup)
	_, genNS := st.Active()
	gen := nb.HostPid(genNS)
	t.Logf("namespace %s: init host pid %d NSpid %v; supervisor (status pid %d) host pid %d NSpid %v parent %d; active generation pid %d (host %d, parent %d)",
		nb.NS, nb.InitPid, initIDs, st.Pid, sup, supIDs, batontest.ParentPid(sup), genNS, gen, batontest.ParentPid(gen))
	if len(initIDs) < 2 || initIDs[len(initIDs)-1] != 1 {
		t.Errorf("baton's init (host pid %d) has NSpid %v: it is not PID 1 of a namespace of its own", nb.InitPid, initIDs)
	}
	if st.Pid <= 1 || fresh && st.Pid > 100 {
		t.Errorf("status pid %d: the supervisor should be a small pid other than 1 in the namespace", st.Pid)
	}
	if sup == 0 || batontest.ParentPid(sup) != nb.InitPid {
		t.Errorf("the supervisor (namespace pid %d, host pid %d) is not the init's child (its parent: %d)", st.Pid, sup, batontest.ParentPid(sup))
	}
	if gen == 0 || batontest.ParentPid(gen) != sup {
		t.Errorf("the active generation (namespace pid %d, host pid %d) is not the supervisor's child (its parent: %d)", genNS, gen, batontest.ParentPid(gen))
	}
	return sup
}

// pid1Zombies lists the zombies of the namespace: among the init and its
// descendants (walked through /proc/PID/task/*/children) and among every
// process whose /proc/PID/ns/pid is the namespace's. live counts the
// processes seen that are not zombies.
func pid1Zombies(nb *batontest.NSBaton) (zombies []batontest.NSProc, live int) {
	seen := map[int]bool{}
	add := func(p batontest.NSProc) {
		if seen[p.HostPid] {
			return
		}
		seen[p.HostPid] = true
		if p.State == "Z" {
			zombies = append(zombies, p)
		} else {
			live++
		}
	}
	for _, pid := range append([]int{nb.InitPid}, batontest.Descendants(nb.InitPid)...) {
		if p, ok := batontest.ReadProc(pid); ok {
			add(p)
		}
	}
	for _, p := range nb.Procs() {
		add(p)
	}
	return zombies, live
}

// pid1Left lists the processes of the namespace still there.
func pid1Left(nb *batontest.NSBaton) []string {
	var out []string
	for _, p := range nb.Procs() {
		out = append(out, fmt.Sprintf("%d(%s %s)", p.HostPid, p.Comm, p.State))
	}
	return out
}

// pid1KeepAlive is one HTTP/1.1 keep-alive connection.
type pid1KeepAlive struct {
	c net.Conn
	r *bufio.Reader
}

func pid1DialKeepAlive(t *testing.T, addr string) *pid1KeepAlive {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &pid1KeepAlive{c: c, r: bufio.NewReader(c)}
}

// get sends GET / on the connection and reads the answer.
func (k *pid1KeepAlive) get() (*http.Response, string, error) {
	_ = k.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(k.c, "GET / HTTP/1.1\r\nHost: baton-test\r\n\r\n"); err != nil {
		return nil, "", err
	}
	resp, err := http.ReadResponse(k.r, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = bufio.NewReader(resp.Body).WriteTo(&b)
	return resp, b.String(), err
}

// pid1Durations summarises ds: min, median, p95 and max.
func pid1Durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(p float64) time.Duration { return s[int(p*float64(len(s)-1))].Round(100 * time.Microsecond) }
	return fmt.Sprintf("min %s, median %s, p95 %s, max %s", at(0), at(0.5), at(0.95), at(1))
}
