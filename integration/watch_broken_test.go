package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// TestWatchBrokenConfigKeepsServing guards docs/design.md's invariant 2 (never worse) for
// the config watch: a watched file that becomes invalid keeps the serving
// generation (same pid, same answers), and `baton status` shows HAProxy's
// own error in the watch section and the last reload. The same broken
// bytes written again are not retried; fixing the file reloads.
func TestWatchBrokenConfigKeepsServing(t *testing.T) {
	batontest.RequireBinary(t, "haproxy")
	port := batontest.FreePort(t)
	cfg := filepath.Join(batontest.ShortTempDir(t), "haproxy.cfg")
	good := func(v int) []byte { return []byte(batontest.HAProxyConfig(port, v, nil, nil)) }
	broken := append(good(2), "    bogus_keyword on\n"...)
	if err := batontest.WriteFileAtomic(cfg, good(1)); err != nil {
		t.Fatal(err)
	}
	p := startWatchProxy(t, port, cfg, cfg)
	st0 := p.status(t)
	gen1, pid1 := st0.Active()

	if err := batontest.WriteFileAtomic(cfg, broken); err != nil {
		t.Fatal(err)
	}
	st := p.waitWatch(t, 15*time.Second, func(s batontest.WatchedStatus) error {
		if s.Watch.Failed == 0 {
			return fmt.Errorf("the broken config was not tried yet (watch %+v)", *s.Watch)
		}
		return nil
	})
	w := st.Watch
	gen, pid := st.Active()
	got := p.getGen(t)
	t.Logf("broken config: watch reloads %d, failed %d, unchanged %d, events %d; last_error %q; last_reload %+v; active generation %d pid %d (before: %d pid %d); X-Gen %s",
		w.Reloads, w.Failed, w.Unchanged, w.Events, w.LastError, st.LastReload, gen, pid, gen1, pid1, got)
	if w.Reloads != 1 || w.Failed != 1 {
		t.Errorf("watch reloads %d, failed %d; want 1 and 1", w.Reloads, w.Failed)
	}
	if !strings.Contains(w.LastError, "unknown keyword 'bogus_keyword'") {
		t.Errorf("watch last_error %q does not carry HAProxy's own message", w.LastError)
	}
	if st.LastReload == nil || !strings.Contains(st.LastReload.Error, "bogus_keyword") {
		t.Errorf("last_reload %+v: want the failed reload with HAProxy's message", st.LastReload)
	}
	if gen != gen1 || pid != pid1 || got != "1" {
		t.Errorf("after the refused config: active generation %d pid %d answering X-Gen %q; want generation %d pid %d answering 1", gen, pid, got, gen1, pid1)
	}

	// The CLI shows the same.
	res := p.b.CLI("status", "--json")
	var cli batontest.WatchedStatus
	if res.Code != 0 {
		t.Fatalf("baton status --json: exit %d: %s", res.Code, res.Stderr)
	}
	if err := json.Unmarshal([]byte(res.Stdout), &cli); err != nil || cli.Watch == nil {
		t.Fatalf("baton status --json: %v: %s", err, res.Stdout)
	}
	if cli.Watch.Failed != 1 || cli.Watch.LastError != w.LastError {
		t.Errorf("baton status --json: watch failed %d, last_error %q; want 1 and %q", cli.Watch.Failed, cli.Watch.LastError, w.LastError)
	}

	// The same broken bytes again, by rename and in place: no retry.
	if err := batontest.WriteFileAtomic(cfg, broken); err != nil {
		t.Fatal(err)
	}
	if err := rewriteInPlace(cfg, broken); err != nil {
		t.Fatal(err)
	}
	again := p.waitWatch(t, 10*time.Second, func(s batontest.WatchedStatus) error {
		if s.Watch.Unchanged <= w.Unchanged {
			return errors.New("the rewrite was not checked yet")
		}
		return nil
	})
	gen, pid = again.Active()
	t.Logf("same broken bytes again: watch reloads %d, failed %d, unchanged %d -> %d, events %d",
		again.Watch.Reloads, again.Watch.Failed, w.Unchanged, again.Watch.Unchanged, again.Watch.Events)
	if again.Watch.Failed != 1 || again.Watch.Reloads != 1 {
		t.Errorf("the same broken content was retried: reloads %d, failed %d", again.Watch.Reloads, again.Watch.Failed)
	}
	if gen != gen1 || pid != pid1 || p.getGen(t) != "1" {
		t.Errorf("active generation %d pid %d, want %d pid %d answering 1", gen, pid, gen1, pid1)
	}

	// Fixed: reloads, serves the new version, clears the error.
	if err := batontest.WriteFileAtomic(cfg, good(3)); err != nil {
		t.Fatal(err)
	}
	fixed := p.waitWatch(t, 15*time.Second, func(s batontest.WatchedStatus) error {
		if s.Watch.Applied == again.Watch.Applied || s.Watch.LastError != "" {
			return fmt.Errorf("the fixed config is not applied yet, or its error not cleared (watch %+v)", *s.Watch)
		}
		return nil
	})
	gen, pid = fixed.Active()
	got = p.getGen(t)
	t.Logf("fixed: watch reloads %d, failed %d, last_error %q; active generation %d pid %d; X-Gen %s",
		fixed.Watch.Reloads, fixed.Watch.Failed, fixed.Watch.LastError, gen, pid, got)
	if fixed.Watch.Reloads != 2 || fixed.Watch.Failed != 1 || fixed.Watch.LastError != "" {
		t.Errorf("after the fix: watch reloads %d, failed %d, last_error %q; want 2, 1, none", fixed.Watch.Reloads, fixed.Watch.Failed, fixed.Watch.LastError)
	}
	if got != "3" || gen <= gen1 || pid == pid1 {
		t.Errorf("after the fix: generation %d pid %d answering %q; want a new generation answering 3", gen, pid, got)
	}
}
