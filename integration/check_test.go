package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/fdpass"
)

// checkCase is one `baton check` run: the files it writes into the test's
// directory (name → text), its arguments before `--`, and what it must
// answer: the exit status and, when refused, the file:line named.
type checkCase struct {
	name  string
	files map[string]string
	args  []string
	code  int
	where string // "FILE:LINE" (FILE relative to the directory); "" for none
	want  string // another substring of the output
}

// checkTookBound is the most a `baton check` may take in these tests.
const checkTookBound = 5 * time.Second

// TestCheckRefusesWithoutStarting guards `baton check`: the reload's config
// check alone. On real HAProxy and nginx, an address --listen does not
// cover, a directive baton refuses and a syntax error are each refused with
// file:line and exit 1, a good config exits 0; none of them leaves a
// process or a LISTEN socket behind, and the temporary directory of the
// config copies is gone.
func TestCheckRefusesWithoutStarting(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	nginx := batontest.RequireBinary(t, "nginx")
	bin := batontest.BatonBinary(t)
	p1, p2 := batontest.FreePort(t), batontest.FreePort(t)
	l1 := fmt.Sprintf("tcp://127.0.0.1:%d", p1)

	hcfg := func(extra string) string {
		return batontest.HAProxyConfig(p1, 1, nil, nil) + extra
	}
	hsecond := fmt.Sprintf("\nfrontend fe2\n    bind 127.0.0.1:%d\n    http-request return status 200\n", p2)
	hif := fmt.Sprintf("\nfrontend fe2\n.if defined(BATON_CHECK_TEST)\n    bind 127.0.0.1:%d\n.endif\n    http-request return status 200\n", p2)
	hbad := "\nfrontend fe2\n    http-request retrun status 200\n"
	main := func(extraMain string) string {
		return nginxConfText(p1, extraMain)
	}
	haproxyCases := []checkCase{
		{name: "uncovered bind", files: map[string]string{"h.cfg": hcfg(hsecond)}, args: []string{"-l", l1}, code: 1,
			where: "h.cfg:" + strconv.Itoa(lineOfText(hcfg(hsecond), fmt.Sprintf("bind 127.0.0.1:%d", p2))), want: "not handed over by baton"},
		{name: "bind inside .if", files: map[string]string{"h.cfg": hcfg(hif)}, code: 1,
			where: "h.cfg:" + strconv.Itoa(lineOfText(hcfg(hif), fmt.Sprintf("bind 127.0.0.1:%d", p2))), want: ".if block"},
		{name: "syntax error", files: map[string]string{"h.cfg": hcfg(hbad)}, code: 1,
			where: "h.cfg:" + strconv.Itoa(lineOfText(hcfg(hbad), "retrun")), want: "[ALERT]"},
		{name: "good", files: map[string]string{"h.cfg": hcfg(hsecond)}, code: 0, want: "ran `" + haproxy + " -c -f "},
		{name: "good with --listen", files: map[string]string{"h.cfg": hcfg(hsecond)}, args: []string{"-l", l1, "-l", fmt.Sprintf("tcp://127.0.0.1:%d", p2)}, code: 0, want: "config accepted"},
	}
	nginxCases := []checkCase{
		{name: "uncovered listen", files: map[string]string{"n.conf": main(""), "conf.d/a.conf": nginxServer(p2, "")}, args: []string{"-l", l1}, code: 1,
			where: "conf.d/a.conf:1", want: "not handed over by baton"},
		{name: "pid in an include", files: map[string]string{"n.conf": main("include conf.d/p.main;"), "conf.d/p.main": "pid /tmp/baton-check-test.pid;\n"}, code: 1,
			where: "conf.d/p.main:1", want: "pid directive outside the main config file"},
		{name: "reuseport", files: map[string]string{"n.conf": main(""), "conf.d/a.conf": nginxServer(p2, " reuseport")}, code: 1,
			where: "conf.d/a.conf:1", want: "reuseport"},
		{name: "syntax error", files: map[string]string{"n.conf": main(""), "conf.d/a.conf": "server { listne 127.0.0.1:1; }\n"}, code: 1,
			where: "conf.d/a.conf:1", want: `unknown directive "listne"`},
		{name: "good", files: map[string]string{"n.conf": main(""), "conf.d/a.conf": nginxServer(p2, "")}, code: 0, want: " -T` instead"},
	}
	for _, c := range haproxyCases {
		t.Run("haproxy/"+c.name, func(t *testing.T) {
			runCheckCase(t, bin, c, p1, p2, func(dir string) []string { return []string{haproxy, "-f", filepath.Join(dir, "h.cfg")} })
		})
	}
	for _, c := range nginxCases {
		t.Run("nginx/"+c.name, func(t *testing.T) {
			runCheckCase(t, bin, c, p1, p2, func(dir string) []string { return []string{nginx, "-e", "stderr", "-c", filepath.Join(dir, "n.conf")} })
		})
	}
}

// nginxConfText is a main nginx config serving on 127.0.0.1:port that
// includes conf.d/*.conf inside http; extraMain goes to the main context.
func nginxConfText(port int, extraMain string) string {
	return fmt.Sprintf("worker_processes 1;\nerror_log stderr warn;\n%s\nevents { worker_connections 64; }\nhttp {\n    access_log off;\n    include conf.d/*.conf;\n%s}\n",
		extraMain, nginxServer(port, ""))
}

// nginxServer is a server block on 127.0.0.1:port, on one line, the listen
// with params.
func nginxServer(port int, params string) string {
	return fmt.Sprintf("server { listen 127.0.0.1:%d%s; return 200; }\n", port, params)
}

// lineOfText is the 1-based number of the first line of text containing sub
// (0: none).
func lineOfText(text, sub string) int {
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			return i + 1
		}
	}
	return 0
}

// runCheckCase writes c's files, runs `baton check ARGS -- cmd(dir)` with
// TMPDIR of its own, and asserts its answer, that it took under 1 s, and
// that no process naming dir and no LISTEN socket on the test's ports was
// there after it that was not there before.
func runCheckCase(t *testing.T, bin string, c checkCase, p1, p2 int, cmd func(dir string) []string) {
	dir := batontest.ShortTempDir(t)
	for name, text := range c.files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	procsBefore, listenBefore := procsNaming(dir), listenOn(t, p1, p2)
	args := append(append([]string{"check", "--log-format", "console"}, c.args...), "--")
	args = append(args, cmd(dir)...)
	var out, errb bytes.Buffer
	run := exec.Command(bin, args...)
	run.Env = append(os.Environ(), "TMPDIR="+tmp)
	run.Stdout, run.Stderr = &out, &errb
	start := time.Now()
	err := run.Run()
	took := time.Since(start)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("baton check: %v", err)
	}
	procsAfter, listenAfter := procsNaming(dir), listenOn(t, p1, p2)
	text := out.String() + errb.String()
	t.Logf("baton check %s: exit %d in %.1f ms; processes naming the directory before/after %d/%d; LISTEN sockets on the ports before/after %d/%d\n%s",
		c.name, code, float64(took.Microseconds())/1000, len(procsBefore), len(procsAfter), len(listenBefore), len(listenAfter), text)
	if code != c.code {
		t.Errorf("exit %d, want %d", code, c.code)
	}
	if c.where != "" && !strings.Contains(text, filepath.Join(dir, c.where)) {
		t.Errorf("output names no %s", filepath.Join(dir, c.where))
	}
	if c.want != "" && !strings.Contains(text, c.want) {
		t.Errorf("output has no %q", c.want)
	}
	// The figure is logged above (under 1 s on a quiet machine); the bound
	// only catches a check that waits for a timeout instead of the
	// proxy's answer, since a timed bound near the figure fails on a
	// loaded machine.
	if took >= checkTookBound {
		t.Errorf("baton check took %s, want under %s", took, checkTookBound)
	}
	if len(procsAfter) != 0 {
		t.Errorf("processes naming %s left after baton check: %v", dir, procsAfter)
	}
	for _, ino := range listenAfter {
		if !slices.Contains(listenBefore, ino) {
			t.Errorf("a LISTEN socket (inode %d) on port %d or %d appeared", ino, p1, p2)
		}
	}
	if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
		t.Errorf("baton check left %d entries in its TMPDIR (err %v)", len(ents), err)
	}
}

// procsNaming lists the pids whose command line names dir.
func procsNaming(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(cmdline, []byte(dir)) {
			out = append(out, pid)
		}
	}
	return out
}

// listenOn is the inodes of the LISTEN sockets on the ports.
func listenOn(t *testing.T, ports ...int) []uint64 {
	t.Helper()
	all, err := fdpass.ListeningTCP()
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, l := range all {
		if slices.Contains(ports, int(l.Addr.Port())) {
			out = append(out, l.Inode)
		}
	}
	return out
}

// TestCheckAgreesWithReload guards that `baton check` and a reload share
// their check: against a running baton (--listen for one address), each
// broken config is refused by both, naming the same file:line, the reload
// leaving the generation that serves; `baton check` meanwhile leaves
// baton's one LISTEN socket the only one (nginx -T skips an address in
// use).
func TestCheckAgreesWithReload(t *testing.T) {
	haproxy := batontest.RequireBinary(t, "haproxy")
	nginx := batontest.RequireBinary(t, "nginx")
	t.Run("haproxy", func(t *testing.T) {
		p1, p2 := batontest.FreePort(t), batontest.FreePort(t)
		good := batontest.HAProxyConfig(p1, 1, nil, nil)
		uncovered := good + fmt.Sprintf("\nfrontend fe2\n    bind 127.0.0.1:%d\n    http-request return status 200\n", p2)
		syntax := good + "\nfrontend fe2\n    http-request retrun status 200\n"
		agree(t, p1, "h.cfg", good, func(dir string) []string { return []string{haproxy, "-f", filepath.Join(dir, "h.cfg")} }, []agreeCase{
			{"uncovered bind", map[string]string{"h.cfg": uncovered}, "h.cfg:" + strconv.Itoa(lineOfText(uncovered, fmt.Sprintf(":%d", p2)))},
			{"syntax error", map[string]string{"h.cfg": syntax}, "h.cfg:" + strconv.Itoa(lineOfText(syntax, "retrun"))},
		})
	})
	t.Run("nginx", func(t *testing.T) {
		p1, p2 := batontest.FreePort(t), batontest.FreePort(t)
		good := nginxConfText(p1, "")
		agree(t, p1, "n.conf", good, func(dir string) []string { return []string{nginx, "-e", "stderr", "-c", filepath.Join(dir, "n.conf")} }, []agreeCase{
			{"uncovered listen", map[string]string{"conf.d/a.conf": nginxServer(p2, "")}, "conf.d/a.conf:1"},
			{"pid in an include", map[string]string{"n.conf": nginxConfText(p1, "include conf.d/p.main;"), "conf.d/p.main": "pid /tmp/baton-check-test.pid;\n"}, "conf.d/p.main:1"},
			{"reuseport", map[string]string{"n.conf": strings.Replace(good, fmt.Sprintf("%d;", p1), fmt.Sprintf("%d reuseport;", p1), 1)}, "n.conf:" + strconv.Itoa(lineOfText(good, fmt.Sprintf(":%d", p1)))},
			{"syntax error", map[string]string{"conf.d/a.conf": "server { listne 127.0.0.1:1; }\n"}, "conf.d/a.conf:1"},
		})
	})
}

// agreeCase is a broken config: files written over the good one, and the
// file:line (relative to the directory) both answers must name.
type agreeCase struct {
	name  string
	files map[string]string
	where string
}

// agree starts baton on the good config (main file name) with --listen for
// port, then for each case writes its files, runs `baton check` with the
// same options and `baton reload`, and restores the good config.
func agree(t *testing.T, port int, main, good string, cmd func(dir string) []string, cases []agreeCase) {
	bin := batontest.BatonBinary(t)
	dir := batontest.ShortTempDir(t)
	if err := os.Mkdir(filepath.Join(dir, "conf.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(files map[string]string) {
		t.Helper()
		for name, text := range files {
			if err := batontest.WriteFileAtomic(filepath.Join(dir, name), []byte(text)); err != nil {
				t.Fatal(err)
			}
		}
	}
	restore := func(files map[string]string) {
		t.Helper()
		for name := range files {
			if name != main {
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
		}
		write(map[string]string{main: good})
	}
	write(map[string]string{main: good})
	listen := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	b := batontest.StartBaton(t, append([]string{"-l", listen, "--"}, cmd(dir)...), batontest.StartOptions{})
	for _, c := range cases {
		st, err := b.Status()
		if err != nil {
			t.Fatal(err)
		}
		gen, _ := st.Active()
		write(c.files)
		sockets := listenOn(t, port)
		check := batontest.RunCLIWith(batontest.RunOpts{}, bin, append([]string{"check", "--log-format", "console", "-l", listen, "--"}, cmd(dir)...)...)
		after := listenOn(t, port)
		reload := b.CLI("reload")
		st, err = b.Status()
		if err != nil {
			t.Fatal(err)
		}
		agen, _ := st.Active()
		want := filepath.Join(dir, c.where)
		t.Logf("%s: baton check exit %d in %.1f ms, baton reload exit %d in %.1f ms; LISTEN sockets on the port before/after the check %d/%d; active generation %d -> %d",
			c.name, check.Code, ms(check.Took), reload.Code, ms(reload.Took), len(sockets), len(after), gen, agen)
		if check.Code != 1 || !strings.Contains(check.Stderr, want) {
			t.Errorf("%s: baton check exit %d, want 1 naming %s:\n%s%s", c.name, check.Code, want, check.Stdout, check.Stderr)
		}
		if reload.Code != 1 || !strings.Contains(reload.Stderr, want) {
			t.Errorf("%s: baton reload exit %d, want 1 naming %s:\n%s%s", c.name, reload.Code, want, reload.Stdout, reload.Stderr)
		}
		if agen != gen {
			t.Errorf("%s: the refused reload changed the active generation %d -> %d", c.name, gen, agen)
		}
		if len(sockets) != 1 || !slices.Equal(sockets, after) {
			t.Errorf("%s: LISTEN sockets on port %d before the check %v, after %v: want baton's one, unchanged", c.name, port, sockets, after)
		}
		restore(c.files)
	}
	if res := b.CLI("reload"); res.Code != 0 {
		t.Errorf("reload of the good config after the cases: exit %d: %s", res.Code, res.Stderr)
	}
}
