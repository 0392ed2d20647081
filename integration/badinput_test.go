package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// badCase is one command line that must fail: its exit status and the
// words its stderr must contain.
type badCase struct {
	name string
	args []string
	code int
	want []string
}

// checkBad runs c and asserts its exit status and message.
func checkBad(t *testing.T, bin string, o batontest.RunOpts, c badCase) batontest.CLIResult {
	t.Helper()
	res := batontest.RunCLIWith(o, bin, c.args...)
	t.Logf("baton %s → exit %d: %s", strings.Join(c.args, " "), res.Code, strings.TrimSpace(res.Stderr))
	if res.Code != c.code {
		t.Errorf("exit %d, want %d (stdout %q, stderr %q)", res.Code, c.code, res.Stdout, res.Stderr)
	}
	for _, w := range c.want {
		if !strings.Contains(res.Stderr, w) {
			t.Errorf("stderr %q lacks %q", res.Stderr, w)
		}
	}
	return res
}

// TestBadInput guards the command-line contract (docs/design.md, "Command line" and "Exit status"): bad input is
// refused with the documented exit status (2 usage, 1 failed, 3 no baton)
// and a message that names the problem, and it changes nothing: no control
// socket is left behind, and a running baton keeps serving with the same
// generation.
func TestBadInput(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	bin := batontest.BatonBinary(t)
	dir := batontest.ShortTempDir(t)
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(batontest.HAProxyAcceptanceConfig(batontest.HAProxyOpts{Port: batontest.FreePort(t), Version: 1})), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("before-start", func(t *testing.T) {
		free := fmt.Sprintf("tcp://127.0.0.1:%d", batontest.FreePort(t))
		missingDir := filepath.Join(dir, "no-such-dir")
		runArgs := func(sock string, listen string, cmd ...string) []string {
			args := []string{"run", "-c", sock}
			if listen != "" {
				args = append(args, "-l", listen)
			}
			return append(append(args, "--"), cmd...)
		}
		cases := []struct {
			badCase
			sock string
		}{
			{badCase: badCase{name: "listen-host-not-ip", code: 2, want: []string{`"localhost"`, "want an IP address"}}},
			{badCase: badCase{name: "listen-port-out-of-range", code: 2, want: []string{`"99999"`, "0-65535"}}},
			{badCase: badCase{name: "listen-unknown-scheme", code: 2, want: []string{`unknown scheme "bogus"`}}},
			{badCase: badCase{name: "listen-option-not-for-tcp", code: 2, want: []string{`option "mode"`, "does not apply to tcp"}}},
			{badCase: badCase{name: "generic-without-listen", code: 2, want: []string{"generic driver needs --listen"}}},
			{badCase: badCase{name: "missing-proxy-binary", code: 1, want: []string{"/nonexistent/haproxy", "no such file"}}},
			{badCase: badCase{name: "forbidden-sf", code: 2, want: []string{"-sf", "SIGTTOU"}}},
			{badCase: badCase{name: "forbidden-D", code: 2, want: []string{"remove -D", "foreground"}}},
			{badCase: badCase{name: "control-dir-missing", code: 1, want: []string{"directory " + missingDir + " does not exist"}}, sock: filepath.Join(missingDir, "b.sock")},
			{badCase: badCase{name: "run-unknown-flag", args: []string{"run", "--bogus"}, code: 2, want: []string{"-bogus"}}},
			{badCase: badCase{name: "reload-unknown-flag", args: []string{"reload", "--nope"}, code: 2, want: []string{"-nope"}}},
			{badCase: badCase{name: "unknown-command", args: []string{"frobnicate"}, code: 2, want: []string{`unknown command "frobnicate"`}}},
		}
		for i, c := range cases {
			if c.sock == "" {
				c.sock = filepath.Join(dir, fmt.Sprintf("c%d.sock", i))
			}
			switch c.name {
			case "listen-host-not-ip":
				c.args = runArgs(c.sock, "tcp://localhost:80", haproxy, "-f", cfg)
			case "listen-port-out-of-range":
				c.args = runArgs(c.sock, "tcp://127.0.0.1:99999", haproxy, "-f", cfg)
			case "listen-unknown-scheme":
				c.args = runArgs(c.sock, "bogus://x", haproxy, "-f", cfg)
			case "listen-option-not-for-tcp":
				c.args = runArgs(c.sock, "tcp://127.0.0.1:80?mode=0600", haproxy, "-f", cfg)
			case "generic-without-listen":
				c.args = runArgs(c.sock, "", "/bin/true")
			case "missing-proxy-binary":
				c.args = runArgs(c.sock, free, "/nonexistent/haproxy", "-f", "x")
			case "forbidden-sf":
				c.args = runArgs(c.sock, free, haproxy, "-f", cfg, "-sf", "123")
			case "forbidden-D":
				c.args = runArgs(c.sock, free, haproxy, "-f", cfg, "-D")
			case "control-dir-missing":
				c.args = runArgs(c.sock, free, haproxy, "-f", cfg)
			}
			t.Run(c.name, func(t *testing.T) {
				checkBad(t, bin, batontest.RunOpts{Timeout: 20 * time.Second}, c.badCase)
				if _, err := os.Stat(c.sock); !os.IsNotExist(err) {
					t.Errorf("control socket %s left behind: %v", c.sock, err)
				}
				if _, err := os.Stat(missingDir); !os.IsNotExist(err) {
					t.Errorf("baton created the missing directory %s", missingDir)
				}
			})
		}
	})

	t.Run("address-in-use", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addr := ln.Addr().String()
		sock := filepath.Join(dir, "inuse.sock")
		checkBad(t, bin, batontest.RunOpts{Timeout: 20 * time.Second}, badCase{
			args: []string{"run", "-c", sock, "-l", "tcp://" + addr, "--", haproxy, "-f", cfg},
			code: 1, want: []string{"address already in use", addr},
		})
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("control socket %s left behind: %v", sock, err)
		}
		checkBad(t, bin, batontest.RunOpts{}, badCase{args: []string{"status", "-c", sock}, code: 3, want: []string{"no baton answering"}})
	})

	t.Run("no-baton", func(t *testing.T) {
		none := filepath.Join(dir, "none.sock")
		// A socket file nobody serves (a baton that died without cleanup).
		stale := filepath.Join(dir, "stale.sock")
		ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ul.SetUnlinkOnClose(false)
		ul.Close()
		for _, sock := range []string{none, stale} {
			for _, cmd := range []string{"status", "reload", "stop"} {
				checkBad(t, bin, batontest.RunOpts{}, badCase{args: []string{cmd, "-c", sock}, code: 3, want: []string{"no baton answering", sock}})
			}
		}
	})

	t.Run("running-baton", func(t *testing.T) {
		p := startAccProxy(t, batontest.HAProxyOpts{}, nil, batontest.StartOptions{})
		gen0, pid0 := p.status(t).Active()
		unchanged := func(t *testing.T) {
			t.Helper()
			st, err := p.b.Status()
			if err != nil {
				t.Fatalf("the running baton's control socket no longer answers: %v", err)
			}
			if gen, pid := st.Active(); gen != gen0 || pid != pid0 {
				t.Errorf("active generation %d pid %d, want the untouched %d pid %d", gen, pid, gen0, pid0)
			}
			if st.Counters["reloads_ok"] != 0 || st.Counters["reloads_failed"] != 0 { // the first start is not a reload
				t.Errorf("counters %v: bad input must not reload", st.Counters)
			}
			if g := p.get(t); g != "1" {
				t.Errorf("answer from config version %q, want 1", g)
			}
		}

		t.Run("unknown-flags", func(t *testing.T) {
			checkBad(t, bin, batontest.RunOpts{}, badCase{args: []string{"reload", "--nope", "-c", p.b.Control}, code: 2, want: []string{"-nope"}})
			checkBad(t, bin, batontest.RunOpts{}, badCase{args: []string{"status", "--nope", "-c", p.b.Control}, code: 2, want: []string{"-nope"}})
			checkBad(t, bin, batontest.RunOpts{}, badCase{args: []string{"reload", "-c", p.b.Control, "extra"}, code: 2, want: []string{`unexpected argument "extra"`}})
			unchanged(t)
		})

		t.Run("second-run-same-control", func(t *testing.T) {
			other := fmt.Sprintf("tcp://127.0.0.1:%d", batontest.FreePort(t))
			checkBad(t, bin, batontest.RunOpts{Timeout: 20 * time.Second}, badCase{
				args: []string{"run", "-c", p.b.Control, "-l", other, "--", haproxy, "-f", cfg},
				code: 1, want: []string{"another baton", fmt.Sprintf("pid %d", p.b.Pid()), p.b.Control},
			})
			unchanged(t)
			if res := p.b.CLI("status"); res.Code != 0 {
				t.Errorf("baton status after the second run: exit %d: %s", res.Code, res.Stderr)
			}
		})

		t.Run("unprivileged-peer", func(t *testing.T) {
			// Test only: let uid 65534 reach the socket path and run baton.
			if err := os.Chmod(p.b.Dir, 0o755); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(p.b.Dir, 0o700)
			pub := batontest.PublicCopy(t, bin)
			nobody := batontest.RunOpts{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}

			// The socket is 0600 root: the filesystem refuses the connect.
			checkBad(t, pub, nobody, badCase{args: []string{"status", "-c", p.b.Control}, code: 1, want: []string{"permission denied", p.b.Control}})
			checkBad(t, pub, nobody, badCase{args: []string{"reload", "-c", p.b.Control}, code: 1, want: []string{"permission denied"}})

			// Test only: open the socket up, so that baton's own
			// SO_PEERCRED check is what refuses.
			if err := os.Chmod(p.b.Control, 0o666); err != nil {
				t.Fatal(err)
			}
			defer os.Chmod(p.b.Control, 0o600)
			checkBad(t, pub, nobody, badCase{args: []string{"status", "-c", p.b.Control}, code: 1, want: []string{"uid 65534"}})
			checkBad(t, pub, nobody, badCase{args: []string{"reload", "-c", p.b.Control}, code: 1, want: []string{"uid 65534"}})
			checkBad(t, pub, nobody, badCase{args: []string{"stop", "-c", p.b.Control}, code: 1, want: []string{"uid 65534"}})
			// Refusals are logged at WARN at most once a minute, with a
			// count of those in between: the first of the three now.
			if n := len(batontest.LogLines(p.b.Log(), "control connection refused", `"uid": 65534`)); n != 1 {
				t.Errorf("baton logged %d refused control connections from uid 65534, want 1 (rate-limited)", n)
			}
			unchanged(t)
		})
		unchanged(t)
	})
}
