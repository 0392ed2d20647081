package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// configRun is one `baton run --config FILE` supervising haproxy, whose
// frontend forwards to a SlowBackend (so that a drain can be held open).
type configRun struct {
	b    *batontest.Baton
	addr string
	slow *batontest.SlowBackend
}

// startConfigRun writes a YAML file (listen, control, drain-timeout,
// kill-grace, rlimit, log-format, command, and extra lines) and runs `baton
// run --config FILE FLAGS...`.
func startConfigRun(t *testing.T, haproxy string, extra []string, flags ...string) *configRun {
	t.Helper()
	dir := batontest.ShortTempDir(t)
	r := &configRun{slow: batontest.StartSlowBackend(t, 20*time.Second)}
	port := batontest.FreePort(t)
	r.addr = fmt.Sprintf("127.0.0.1:%d", port)
	cfg := filepath.Join(dir, "haproxy.cfg")
	writeConf(t, cfg, batontest.HAProxyAcceptanceConfig(batontest.HAProxyOpts{Port: port, Version: 1, BackendPort: r.slow.Port, MaxConn: 500}))
	control := filepath.Join(dir, "c.sock")
	yaml := fmt.Sprintf(`# baton run --config, as in examples/container/baton.yaml
listen:
  - web=tcp://%s
control: %s
drain-timeout: 7s
kill-grace: 3s
rlimit:
  - nofile=4096:8192
log-format: console
command: [%s, -f, %s]
%s`, r.addr, control, haproxy, cfg, strings.Join(extra, "\n"))
	file := filepath.Join(dir, "baton.yaml")
	writeConf(t, file, yaml)
	r.b = batontest.StartBatonArgs(t, append([]string{"run", "--config", file}, flags...), control, batontest.StartOptions{})
	return r
}

// configStatus is the part of the status these tests read.
type configStatus struct {
	Rlimits   []string `json:"rlimits"`
	Listeners []struct {
		Name string `json:"name"`
		Addr string `json:"addr"`
	} `json:"listeners"`
	Generations []struct {
		Gen       int        `json:"generation"`
		State     string     `json:"state"`
		DrainedAt *time.Time `json:"drain_started_at"`
		Deadline  *time.Time `json:"deadline"`
		Processes []struct {
			Pid    int `json:"pid"`
			Nofile struct {
				Soft uint64 `json:"soft"`
				Hard uint64 `json:"hard"`
			} `json:"nofile"`
		} `json:"processes"`
	} `json:"generations"`
}

func (r *configRun) status(t *testing.T) configStatus {
	t.Helper()
	raw, err := r.b.RawStatus()
	if err != nil {
		t.Fatal(err)
	}
	var st configStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// check asserts the listener, the rlimits in status and in /proc of every
// process, and that haproxy serves.
func (r *configRun) check(t *testing.T, rlimit string, soft, hard uint64) {
	t.Helper()
	st := r.status(t)
	t.Logf("status: listeners %+v, rlimits %v", st.Listeners, st.Rlimits)
	if len(st.Listeners) != 1 || st.Listeners[0].Name != "web" || st.Listeners[0].Addr != r.addr {
		t.Errorf("listeners %+v, want exactly web at %s", st.Listeners, r.addr)
	}
	if !slices.Equal(st.Rlimits, []string{rlimit}) {
		t.Errorf("rlimits %v, want [%s]", st.Rlimits, rlimit)
	}
	procs := 0
	for _, g := range st.Generations {
		for _, p := range g.Processes {
			procs++
			s, h, err := batontest.Nofile(p.Pid)
			if p.Nofile.Soft != soft || p.Nofile.Hard != hard || err != nil || s != fmt.Sprint(soft) || h != fmt.Sprint(hard) {
				t.Errorf("process %d: nofile %d/%d in status, %s/%s in /proc (%v); want %d/%d", p.Pid, p.Nofile.Soft, p.Nofile.Hard, s, h, err, soft, hard)
			}
		}
	}
	if procs == 0 {
		t.Errorf("status lists no process: %+v", st.Generations)
	}
	if res := batontest.HTTPGet(r.addr, "/", 5*time.Second); res.Err != nil || res.Status != 200 {
		t.Errorf("GET http://%s/: %d %v", r.addr, res.Status, res.Err)
	}
}

// drainWindow holds a request in flight, reloads, and returns the draining
// generation's deadline minus its drain start (the drain timeout in force);
// then lets the request finish, which must succeed.
func (r *configRun) drainWindow(t *testing.T) time.Duration {
	t.Helper()
	held := make(chan batontest.HTTPResult, 1)
	go func() { held <- batontest.HTTPGet(r.addr, "/slow", 20*time.Second) }()
	if err := r.slow.WaitSlow(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if res := r.b.CLI("reload"); res.Code != 0 {
		t.Fatalf("reload: exit %d: %s", res.Code, res.Stderr)
	}
	var window time.Duration
	for _, g := range r.status(t).Generations {
		if g.State == "draining" && g.Deadline != nil && g.DrainedAt != nil {
			window = g.Deadline.Sub(*g.DrainedAt)
		}
	}
	r.slow.Release()
	if res := <-held; res.Err != nil || res.Status != 200 {
		t.Errorf("the request held across the reload: %d %v", res.Status, res.Err)
	}
	return window
}

// stop runs `baton stop` and checks that baton exits 0.
func (r *configRun) stop(t *testing.T) {
	t.Helper()
	if res := r.b.CLI("stop"); res.Code != 0 {
		t.Errorf("baton stop: exit %d: %s", res.Code, res.Stderr)
	}
	if code, err := r.b.ExitCode(15 * time.Second); code != 0 || err != nil {
		t.Errorf("baton exit %d (%v), want 0", code, err)
	}
}

// TestConfigFileYAML guards README's "Config file": `baton run --config
// FILE` takes every option from YAML (the keys are the flag names, plus
// `command`), a flag on the command line wins over the file, and a file that
// cannot be used is a usage error (exit 2) naming the file, an unknown key
// (a typo) included.
func TestConfigFileYAML(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	bin := batontest.BatonBinary(t)

	t.Run("file-only", func(t *testing.T) {
		r := startConfigRun(t, haproxy, nil)
		r.check(t, "nofile=4096:8192", 4096, 8192)
		w := r.drainWindow(t)
		t.Logf("drain-timeout 7s from the file: the draining generation's deadline is %s after its drain began", w)
		if w != 7*time.Second {
			t.Errorf("drain window %s, want 7s (drain-timeout from the file)", w)
		}
		log := r.b.Log()
		first, _, _ := strings.Cut(log, "\n")
		if strings.HasPrefix(first, "{") || !strings.Contains(first, "\tINFO\t") {
			t.Errorf("log-format console from the file: first log line %q", first)
		}
		r.stop(t)
	})

	t.Run("flags-override-file", func(t *testing.T) {
		r := startConfigRun(t, haproxy, nil, "--drain-timeout", "3s", "--rlimit", "nofile=2048:4096", "--log-format", "json")
		r.check(t, "nofile=2048:4096", 2048, 4096)
		w := r.drainWindow(t)
		t.Logf("--drain-timeout 3s over the file's 7s: deadline %s after the drain began", w)
		if w != 3*time.Second {
			t.Errorf("drain window %s, want 3s (the flag wins)", w)
		}
		first, _, _ := strings.Cut(r.b.Log(), "\n")
		var line map[string]any
		if err := json.Unmarshal([]byte(first), &line); err != nil || line["msg"] == nil {
			t.Errorf("--log-format json over the file's console: first log line %q (%v)", first, err)
		}
		r.stop(t)
	})

	t.Run("unusable-files", func(t *testing.T) {
		dir := batontest.ShortTempDir(t)
		listen := fmt.Sprintf("tcp://127.0.0.1:%d", batontest.FreePort(t))
		ctl := filepath.Join(dir, "c.sock")
		cases := []struct {
			name, yaml string
			want       []string // in stderr, besides exit 2
		}{
			{"malformed", "listen: [" + listen + "\ncontrol: " + ctl + "\n", []string{"yaml: line"}},
			{"missing", "", []string{"does not exist"}},
			{"listen-not-a-list", "listen: " + listen + "\ncontrol: " + ctl + "\ncommand: [" + haproxy + ", -f, x]\n", []string{"listen"}},
			{"duration-not-a-duration", "listen: [" + listen + "]\ndrain-timeout: soon\ncontrol: " + ctl + "\ncommand: [" + haproxy + ", -f, x]\n", []string{"drain-timeout"}},
			{"unknown-key-typo", "lissten: [" + listen + "]\ncontrol: " + ctl + "\ncommand: [" + haproxy + ", -f, x]\n", []string{"unknown keys lissten"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				file := filepath.Join(dir, c.name+".yaml")
				if c.name != "missing" {
					writeConf(t, file, c.yaml)
				}
				res := batontest.RunCLIWith(batontest.RunOpts{Timeout: 20 * time.Second}, bin, "run", "--config", file)
				msg := strings.TrimSpace(res.Stderr)
				t.Logf("exit %d: %s", res.Code, msg)
				if res.Code != 2 {
					t.Errorf("exit %d, want 2 (usage)", res.Code)
				}
				want := append(c.want, file) // the message names the file
				for _, w := range want {
					if !strings.Contains(msg, w) {
						t.Errorf("stderr lacks %q", w)
					}
				}
				if _, err := os.Stat(ctl); !os.IsNotExist(err) {
					t.Errorf("control socket left behind: %v", err)
				}
			})
		}
	})
}
