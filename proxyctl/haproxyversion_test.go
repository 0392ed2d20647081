package proxyctl

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

func TestReadyAfterWorker(t *testing.T) {
	for v, want := range map[string]bool{
		"3.2.0-e134140d2": true, "3.1.0": true, "3.1-dev14": true, "3.4.0": true, "4.0.1": true,
		"3.0.0": false, "2.6.12-1+deb12u4": false, "2.9.0": false, "": false, "v3.2": false, "3": false, "x3.2.0": false,
	} {
		if got := readyAfterWorker(v); got != want {
			t.Errorf("readyAfterWorker(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestHAProxyNotifyOnceKnown31: a generation runs with -Ws and a
// NOTIFY_SOCKET of its own only once an earlier generation's "show info"
// said this very binary file is 3.1+; a binary replaced on disk, or an
// older version, runs with -W and is probed. Under -Ws the master's
// READY=1 wakes the probe, and a STATUS= saying the load failed is not
// readiness.
func TestHAProxyNotifyOnceKnown31(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "haproxy")
	if err := os.WriteFile(bin, []byte("v1"), 0o755); err != nil {
		t.Fatal(err)
	}
	h, err := NewHAProxy([]string{bin, "-f", "/etc/h.cfg"})
	if err != nil {
		t.Fatal(err)
	}
	prepare := func(gen int) (Launch, *haproxySession, string) {
		t.Helper()
		dir := batontest.ShortTempDir(t)
		l, s, err := h.Prepare(GenSpec{Gen: gen, Dir: dir, Listeners: []Listener{boundListener(t, "tcp://127.0.0.1:0")}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return l, s.(*haproxySession), dir
	}
	l, s, _ := prepare(1)
	if l.Argv[1] != "-W" || l.Env != nil || s.ReadyNotified() != nil {
		t.Fatalf("unknown version: argv %q env %q, want -W and no NOTIFY_SOCKET", l.Argv, l.Env)
	}
	s.learn("3.0.0")
	if l, _, _ := prepare(2); l.Argv[1] != "-W" {
		t.Fatalf("after 3.0.0: argv %q, want -W", l.Argv)
	}
	s.learn("3.2.0-e134140d2")
	l, s, dir := prepare(3)
	sock := filepath.Join(dir, "notify.sock")
	if l.Argv[1] != "-Ws" || len(l.Env) != 1 || l.Env[0] != "NOTIFY_SOCKET="+sock {
		t.Fatalf("after 3.2.0: argv %q env %q, want -Ws and NOTIFY_SOCKET=%s", l.Argv, l.Env, sock)
	}
	s.Started(os.Getpid()) // this process plays the master
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "no READY=1") {
		t.Errorf("Ready before READY=1: %v", err)
	}
	send(t, sock, "READY=1\nSTATUS=Reload failed!\n")
	select {
	case <-s.ReadyNotified():
	case <-time.After(5 * time.Second):
		t.Fatal("READY=1 from the master did not wake the probe")
	}
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "Reload failed!") {
		t.Errorf("Ready after READY=1 with a failed load: %v, want HAProxy's status", err)
	}

	// A READY=1 without failure leads to the probe (no stats socket here).
	_, s, dir = prepare(4)
	s.Started(os.Getpid())
	send(t, filepath.Join(dir, "notify.sock"), "READY=1\nMAINPID=1\nSTATUS=Ready.\n")
	<-s.ReadyNotified()
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "haproxy cli") {
		t.Errorf("Ready after READY=1: %v, want the show info probe's error", err)
	}

	// The binary replaced on disk: not known any more.
	if err := os.WriteFile(bin, []byte("v2, longer"), 0o755); err != nil {
		t.Fatal(err)
	}
	if l, _, _ := prepare(5); l.Argv[1] != "-W" {
		t.Fatalf("binary replaced: argv %q, want -W", l.Argv)
	}
}

// TestNotifyLeaderOnly: with leaderOnly, only the leader's datagrams
// count, not a descendant's (this process descends from pid 1).
func TestNotifyLeaderOnly(t *testing.T) {
	ns := &notifySession{pid: 1}
	if !ns.fromGeneration(os.Getpid()) {
		t.Fatal("a descendant of the leader does not count without leaderOnly")
	}
	ns.leaderOnly = true
	if ns.fromGeneration(os.Getpid()) {
		t.Error("a descendant of the leader counts with leaderOnly")
	}
	if !ns.fromGeneration(1) {
		t.Error("the leader does not count with leaderOnly")
	}
}

func send(t *testing.T, path, msg string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
}
