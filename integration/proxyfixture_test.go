package integration

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
)

// proxyFixture is what a test of one behaviour over real HAProxy and nginx
// needs of each: how to start baton over it and write its config, how it
// rejects a bad line, and when its generations have settled. Tests run a
// subtest per fixture, named after it (haproxy, nginx).
type proxyFixture struct {
	name string // subtest name
	says string // whose words, in figures: "HAProxy's", "nginx's"

	// start runs baton over the proxy with config version 1.
	start func(t *testing.T, args []string, so batontest.StartOptions) *accProxy
	// write replaces the config with version v, plus a line the proxy
	// rejects when bogus is set; it returns the text written.
	write func(t *testing.T, p *accProxy, v int, bogus bool) string
	// target is the proxy as a reload storm runs it.
	target func(t *testing.T) proxyTarget
	// settled waits until only the active generation is left, with all its
	// processes, and returns the status then.
	settled func(t *testing.T, p *accProxy) batontest.Status

	bogusWord string // the word of the line the proxy rejects
	alert     string // the level tag of the proxy's rejection: [ALERT], [emerg]
	// rejection is what the rejection line holds, given where the bogus
	// line is (config path:line).
	rejection func(where string) []string
	roles     bool   // status labels the master and its workers (checked)
	ownNofile string // the config's own NOFILE setting, which the tests leave out
}

func proxyFixtures() []proxyFixture {
	return []proxyFixture{haproxyFixture(), nginxFixture()}
}

func haproxyFixture() proxyFixture {
	return proxyFixture{
		name: "haproxy", says: "HAProxy's",
		start: func(t *testing.T, args []string, so batontest.StartOptions) *accProxy {
			return startAccProxy(t, batontest.HAProxyOpts{}, args, so)
		},
		write: func(t *testing.T, p *accProxy, v int, bogus bool) string {
			if bogus {
				return p.write(t, v, "bogus_keyword on")
			}
			return p.write(t, v)
		},
		target: func(t *testing.T) proxyTarget { return haproxyTarget(t, nil, nil) },
		settled: func(t *testing.T, p *accProxy) batontest.Status {
			t.Helper()
			var st batontest.Status
			batontest.Eventually(t, 10*time.Second, func() error {
				st = p.status(t)
				if gen, _ := st.Active(); len(st.Generations) != 1 || st.Generations[0].Gen != gen {
					return fmt.Errorf("generations %+v, want only the active %d", st.Generations, gen)
				}
				return nil
			})
			return st
		},
		bogusWord: "bogus_keyword",
		alert:     "[ALERT]",
		ownNofile: "ulimit-n",
		rejection: func(where string) []string {
			return []string{"[ALERT]", "unknown keyword 'bogus_keyword'", "[" + where + "]"}
		},
	}
}

func nginxFixture() proxyFixture {
	return proxyFixture{
		name: "nginx", says: "nginx's",
		start: func(t *testing.T, args []string, so batontest.StartOptions) *accProxy {
			return startNginxAcc(t, func(port int) string { return nginxConf(t, port, 1, nil, nil) }, args, so)
		},
		write: func(t *testing.T, p *accProxy, v int, bogus bool) string {
			var http []string
			if bogus {
				http = []string{"bogus_directive on;"}
			}
			text := nginxConf(t, p.port, v, nil, http)
			writeConf(t, p.cfg, text)
			return text
		},
		target:    func(t *testing.T) proxyTarget { return nginxTarget(t, nil, nil) },
		settled:   waitNginxSettled,
		bogusWord: "bogus_directive",
		alert:     "[emerg]",
		ownNofile: "worker_rlimit_nofile",
		rejection: func(where string) []string {
			return []string{"[emerg]", `unknown directive "bogus_directive" in ` + where}
		},
		roles: true,
	}
}

// eachProxy runs test as a subtest per proxy fixture, named after it. The
// version matrix (BATON_MATRIX=1) runs one proxy's versions at a time, with
// its binary in BATON_HAPROXY or BATON_NGINX: there the other proxy's
// subtest is skipped.
func eachProxy(t *testing.T, test func(t *testing.T, f proxyFixture)) {
	for _, f := range proxyFixtures() {
		t.Run(f.name, func(t *testing.T) {
			if os.Getenv("BATON_MATRIX") == "1" && os.Getenv(batontest.ProxyEnv[f.name]) == "" {
				t.Skipf("the version matrix runs %s here: %s is not set", f.name, batontest.ProxyEnv[f.name])
			}
			test(t, f)
		})
	}
}
