package supervisor

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/proxyctl"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// freeAddr is a loopback TCP address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func wantedOf(t *testing.T, specs ...string) []proxyctl.ConfigListener {
	t.Helper()
	var out []proxyctl.ConfigListener
	for i, sp := range parseSpecs(t, specs...) {
		out = append(out, proxyctl.ConfigListener{Spec: sp, Where: fmt.Sprintf("h.cfg:%d", i+1)})
	}
	return out
}

// inodeOf is the inode of the set's socket for spec, 0 when it has none.
func inodeOf(ls *ListenerSet, spec string) uint64 {
	sp, _ := fdpass.ParseSpec(spec)
	if e := ls.items[listenerKey(sp.Key())]; e != nil {
		return e.sock.Inode()
	}
	return 0
}

// TestListenerSetDiff guards docs/design.md's invariant 7 with listeners from the config: a
// reload that adds an address binds it, one that removes an address closes
// it once no generation uses it, one that keeps it keeps the socket; a
// failed generation leaves the set as before; counts never go negative.
func TestListenerSetDiff(t *testing.T) {
	dir := shortDir(t)
	a, b, c := "tcp://"+freeAddr(t), "tcp://"+freeAddr(t), "unix://"+filepath.Join(dir, "c.sock")
	warmPoller(t)
	before := selfFdCount(t)
	ls, err := BindListeners(nil)
	if err != nil {
		t.Fatal(err)
	}

	// Generation 1 wants a and b: both bound, current once it is active.
	got, bound, err := ls.acquireFor(1, wantedOf(t, a, b))
	if err != nil || len(got) != 2 || len(bound) != 2 {
		t.Fatalf("gen 1: %d listeners, %d bound, %v", len(got), len(bound), err)
	}
	if len(ls.Sockets()) != 0 {
		t.Errorf("sockets current before generation 1 is active: %d", len(ls.Sockets()))
	}
	if _, err := ls.activate(1, map[listenerKey]string{listenerKey(got[0].Spec.Key()): "h.cfg:1"}); err != nil {
		t.Fatal(err)
	}
	if len(ls.Sockets()) != 2 || ls.where(listenerKey(got[0].Spec.Key())) != "h.cfg:1" {
		t.Fatalf("after activation: %d current, where %q", len(ls.Sockets()), ls.where(listenerKey(got[0].Spec.Key())))
	}
	inA, inB := inodeOf(ls, a), inodeOf(ls, b)

	// Generation 2 keeps a, drops b, adds c: a keeps its socket.
	got, bound, err = ls.acquireFor(2, wantedOf(t, a, c))
	if err != nil || len(bound) != 1 || got[0].Inode != inA {
		t.Fatalf("gen 2: %+v bound %v err %v; want a's socket kept (inode %d) and c bound", got, bound, err, inA)
	}
	removed, err := ls.activate(2, nil)
	if err != nil || len(removed) != 1 || removed[0].Inode() != inB {
		t.Fatalf("activate 2: removed %v, %v; want b", removed, err)
	}
	if inodeOf(ls, b) != inB || fdInode(removed[0].Fd()) != inB {
		t.Fatal("b closed while generation 1 still uses it")
	}
	if err := ls.Release(1); err != nil {
		t.Fatal(err)
	}
	if inodeOf(ls, b) != 0 {
		t.Error("b still in the set after its last user was released")
	}
	if cur := currentInodes(ls); len(cur) != 2 || !cur[inA] || !cur[inodeOf(ls, c)] {
		t.Errorf("current after gen 2: %v", cur)
	}

	// Generation 3 adds b back and fails before it is active: the socket
	// bound only for it is closed when it is forgotten, nothing else moves.
	inC := inodeOf(ls, c)
	got, bound, err = ls.acquireFor(3, wantedOf(t, a, b, c))
	if err != nil || len(bound) != 1 {
		t.Fatalf("gen 3: %v %v", bound, err)
	}
	newB := got[1]
	if err := ls.Release(3); err != nil {
		t.Fatal(err)
	}
	if inodeOf(ls, b) != 0 || fdInode(newB.Fd) == newB.Inode {
		t.Error("socket bound for the failed generation 3 left open")
	}
	if inodeOf(ls, a) != inA || inodeOf(ls, c) != inC || len(ls.Sockets()) != 2 || usedBy(ls, 2) != 2 {
		t.Error("the failed generation changed the serving generation's listeners")
	}

	// A crash replacement takes the active generation's set.
	if got, _ := ls.acquire(4); len(got) != 2 {
		t.Errorf("replacement got %d listeners, want the active set's 2", len(got))
	}

	// A bind failure changes nothing.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ls.acquireFor(5, wantedOf(t, a, b, "tcp://"+busy.Addr().String())); err == nil || !strings.Contains(err.Error(), "h.cfg:3") {
		t.Errorf("bind of a busy address: %v, want an error naming h.cfg:3", err)
	}
	busy.Close()
	if usedBy(ls, 5) != 0 || inodeOf(ls, b) != 0 || usedBy(ls, 2) != 2 {
		t.Error("failed AcquireFor changed the set")
	}
	// v6only cannot change on a bound socket.
	sp, _ := fdpass.ParseSpec(a)
	sp.V6Only = true
	if _, _, err := ls.acquireFor(6, []proxyctl.ConfigListener{{Spec: sp, Where: "h.cfg:9"}}); err == nil || !strings.Contains(err.Error(), "v6only") {
		t.Errorf("changed v6only: %v", err)
	}

	// Counts never go negative silently.
	if err := ls.Release(lifecycle.Gen(3)); err == nil {
		t.Error("second release of generation 3 succeeded")
	}
	for _, g := range []lifecycle.Gen{2, 4} {
		if err := ls.Release(g); err != nil {
			t.Errorf("release %d: %v", g, err)
		}
	}
	if len(ls.Sockets()) != 2 {
		t.Error("the active config's listeners closed when their users left")
	}
	if err := ls.CloseAll(); err != nil {
		t.Fatal(err)
	}
	if n := selfFdCount(t); n != before {
		t.Errorf("fd count %d, %d before\n%s", n, before, fdList(t))
	}
}
