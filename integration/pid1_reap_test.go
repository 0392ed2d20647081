package integration

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestPID1ReapsAndDrains guards README's "Containers" promise: as PID 1 of a PID namespace, baton reaps every orphan and
// drains on SIGTERM. Each generation is a shell that double-forks (a
// background `sleep 0.2` whose parent subshell exits at once, so the sleep
// is orphaned and outlives the shell's exec of examples/activated); after
// 100 reloads no zombie is left in the namespace. Halfway, `baton upgrade`
// replaces the supervisor: the serving generation is then the init's child
// (its parent exited), and when the next reload drains it the init must
// reap it. SIGTERM to PID 1 drains the serving generation (an open
// keep-alive connection gets its next answer, with "Connection: close") and
// baton exits 0, leaving no process.
func TestPID1ReapsAndDrains(t *testing.T) {
	batontest.RequireBinary(t, "unshare")
	act := batontest.BuildBinary(t, "./examples/activated")
	dir := batontest.ShortTempDir(t)
	cfg := filepath.Join(dir, "activated.conf")
	writeConf(t, cfg, activatedConf(1))
	addr := fmt.Sprintf("127.0.0.1:%d", batontest.FreePort(t))
	// The grandchild closes fd 3 (the listener): holding it, it would be a
	// member of the old generation that still holds the socket, and each
	// acknowledgement would wait for it (which is right, but slow).
	wrapper := fmt.Sprintf("(sleep 0.2 3>&- &) ; exec %s -config %s", shq(act), shq(cfg))
	nb := batontest.StartBatonPID1(t, []string{"-l", "tcp://" + addr, "--proxy", "generic",
		"--check-command", shq(act) + " -check -config " + shq(cfg), "--drain-timeout", "30s",
		"--", "/bin/sh", "-c", wrapper}, batontest.StartOptions{})
	sup := pid1Split(t, nb, true)

	const reloads = 100
	var took []time.Duration
	orphans := map[int]bool{} // sleeps seen reparented to the supervisor
	maxZombies, zombieSamples := 0, 0
	gen, _ := nb.WaitActive(5 * time.Second).Active()
	for i := range reloads {
		if i == reloads/2 {
			sup, gen = pid1Upgrade(t, nb, sup)
		}
		writeConf(t, cfg, activatedConf(i+2))
		res := nb.CLI("reload", "--json")
		if res.Code != 0 {
			t.Fatalf("reload %d: exit %d: %s", i+1, res.Code, res.Stderr)
		}
		var out struct {
			Generation int `json:"generation"`
		}
		if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil || out.Generation != gen+1 {
			t.Fatalf("reload %d answered %q (%v), want generation %d", i+1, res.Stdout, err, gen+1)
		}
		gen = out.Generation
		took = append(took, res.Took)
		zs, _ := pid1Zombies(nb)
		if len(zs) > 0 {
			zombieSamples++
		}
		maxZombies = max(maxZombies, len(zs))
		for _, p := range nb.Procs() {
			if p.Comm == "sleep" && p.PPid == sup {
				orphans[p.HostPid] = true
			}
		}
	}
	t.Logf("%d sequential reloads under PID 1: `baton reload` took %s", reloads, pid1Durations(took))
	t.Logf("zombies seen right after a reload: in %d of %d samples, at most %d at once; %d orphaned sleeps seen reparented to the supervisor",
		zombieSamples, reloads, maxZombies, len(orphans))
	if len(orphans) == 0 {
		t.Errorf("no orphaned grandchild was ever seen with the supervisor (host pid %d) as its parent: the double fork did not happen as planned", sup)
	}
	var last []batontest.NSProc
	var live int
	took0, ok := batontest.PollUntil(5*time.Second, 10*time.Millisecond, func() bool {
		last, live = pid1Zombies(nb)
		for _, p := range nb.Procs() {
			if p.Comm == "sleep" {
				return false // not yet exited, so not yet reaped
			}
		}
		return len(last) == 0
	})
	t.Logf("after the reloads: %d zombies (%v) and %d live processes in the namespace, %s after the last reload", len(last), last, live, took0.Round(time.Millisecond))
	if !ok {
		t.Fatalf("zombies left in the namespace 5 s after the last reload: %+v (processes: %v)", last, pid1Left(nb))
	}
	if r := batontest.HTTPGet(addr, "/", 5*time.Second); r.Err != nil || r.Status != 200 || r.Gen != fmt.Sprint(reloads+1) {
		t.Errorf("GET after %d reloads: status %d, X-Gen %q, err %v; want 200 from version %d", reloads, r.Status, r.Gen, r.Err, reloads+1)
	}

	// SIGTERM to PID 1: a drain, not a kill. The keep-alive connection holds
	// the serving generation until its next request is answered.
	ka := pid1DialKeepAlive(t, addr)
	if resp, _, err := ka.get(); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request on the keep-alive connection: %v %v", resp, err)
	}
	if err := nb.SignalInit(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	termAt := time.Now()
	batontest.Eventually(t, 10*time.Second, func() error {
		raw, err := nb.RawStatus()
		if err != nil {
			return err
		}
		var st struct {
			Stopping    bool `json:"stopping"`
			Generations []struct {
				State string `json:"state"`
			} `json:"generations"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			return err
		}
		if !st.Stopping || len(st.Generations) != 1 || st.Generations[0].State != "draining" {
			return fmt.Errorf("status %s: want stopping with one draining generation", raw)
		}
		return nil
	})
	select {
	case <-nb.Exited():
		t.Fatalf("baton exited while a connection was still open on the draining generation:\n%s", nb.LogTail(20))
	default:
	}
	resp, body, err := ka.get()
	if err != nil {
		t.Fatalf("request on the kept connection during the drain: %v", err)
	}
	t.Logf("during the drain the kept connection got %d %q, Connection: close %t", resp.StatusCode, strings.TrimSpace(body), resp.Close)
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("answer during the drain: status %d, close %t; want 200 with Connection: close", resp.StatusCode, resp.Close)
	}
	ka.c.Close()
	code, err := nb.ExitCode(15 * time.Second)
	t.Logf("after SIGTERM to PID 1: exit status %d (%v) %s after the signal", code, err, time.Since(termAt).Round(time.Millisecond))
	if err != nil || code != 0 {
		t.Fatalf("exit status %d (%v), want 0 after a drain\n%s", code, err, nb.LogTail(20))
	}
	if left := pid1Left(nb); len(left) > 0 {
		t.Errorf("processes of the namespace left after baton exited: %v", left)
	}
	log := nb.Log()
	drains := batontest.LogLines(log, "signal generation", fmt.Sprintf(`"gen": %d,`, gen), `"kind": "drain"`)
	if len(drains) != 1 || len(batontest.LogLines(log, "baton stopped")) != 1 {
		t.Errorf("baton's log: drains of generation %d %q, want one, and one \"baton stopped\"", gen, drains)
	}
	if kills := batontest.LogLines(log, "signal generation", `"kind": "kill"`); len(kills) > 0 {
		t.Errorf("baton killed generations: %q", kills)
	}
}

// pid1Upgrade runs `baton upgrade` under PID 1 and checks what docs/design.md
// says follows: a new supervisor, child of the init (which follows it); the
// generations the old one started are now the init's children. One reload
// later the adopted generation has drained and exited, reaped (not a
// zombie). It returns the new supervisor's host pid and the active
// generation.
func pid1Upgrade(t *testing.T, nb *batontest.NSBaton, oldSup int) (sup, active int) {
	t.Helper()
	st, err := nb.Status()
	if err != nil {
		t.Fatal(err)
	}
	gen, genNS := st.Active()
	genHost := nb.HostPid(genNS)
	res := nb.CLI("upgrade")
	if res.Code != 0 {
		t.Fatalf("baton upgrade: exit %d: %s %s", res.Code, res.Stdout, res.Stderr)
	}
	// The old supervisor exits, and the init reaps it (no zombie left):
	// its /proc entry goes away; its children are the init's.
	took, ok := batontest.PollUntil(10*time.Second, 10*time.Millisecond, func() bool {
		_, exists := batontest.ReadProc(oldSup)
		return !exists && batontest.ParentPid(genHost) == nb.InitPid
	})
	old, _ := batontest.ReadProc(oldSup)
	parent := batontest.ParentPid(genHost)
	t.Logf("`baton upgrade` under PID 1 (%s): %s; %s later the old supervisor (host pid %d) is gone %t (%+v), generation %d (host pid %d) has parent %d (init %d)",
		res.Took.Round(time.Millisecond), strings.TrimSpace(res.Stdout), took.Round(time.Millisecond), oldSup, old.HostPid == 0, old, gen, genHost, parent, nb.InitPid)
	if !ok {
		t.Errorf("10 s after the upgrade: old supervisor %+v (want reaped), generation %d's parent %d (want the init %d)", old, gen, parent, nb.InitPid)
	}
	if res := nb.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload after the upgrade: exit %d: %s", res.Code, res.Stderr)
	}
	took, gone := batontest.PollUntil(5*time.Second, 10*time.Millisecond, func() bool {
		_, exists := batontest.ReadProc(genHost)
		return !exists
	})
	p, _ := batontest.ReadProc(genHost)
	t.Logf("the adopted generation %d (host pid %d) gone %t %s after the reload that drained it (last seen: %+v)", gen, genHost, gone, took.Round(time.Millisecond), p)
	if !gone {
		t.Errorf("generation %d (host pid %d), child of the init after the upgrade, not reaped 5 s after its drain: %+v", gen, genHost, p)
	}
	sup = pid1Split(t, nb, false)
	st, err = nb.Status()
	if err != nil {
		t.Fatal(err)
	}
	active, _ = st.Active()
	return sup, active
}
