package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/batontest"
	"github.com/batonproxy/baton/bench/load"
)

// stormOpts is one reload storm: reloads requested every interval under
// load from 16 clients, until at least reloads requests were made and at
// least minGens distinct generations acknowledged (requests that arrive
// during a reload are coalesced into the next one, so on a busy machine
// there are fewer generations than requests), for at most maxTime.
type stormOpts struct {
	target        proxyTarget // default: haproxy
	mode          load.Mode
	reloads       int
	minGens       int
	maxTime       time.Duration
	interval      time.Duration
	extraGlobal   []string
	extraDefaults []string
	rate          float64 // total requests/s cap, 0 = as fast as possible
}

// stormResult is what a storm measured.
type stormResult struct {
	load           *load.Result
	acks           []load.Ack
	requests       int
	stormTime      time.Duration
	gens           map[int]bool // distinct generations the reloads reported
	reloadErrors   []string
	latencies      []time.Duration // `baton reload` wall time
	listenSamples  int
	listenBad      []string // samples without exactly one LISTEN socket (or another inode)
	fdBefore       int
	fdAfter        int
	stale          []load.Sample
	oldConnAnswers int
	leftovers      []int // old-generation pids alive 10 s after the run
}

func parseGen(s string) (int, bool) {
	n, err := strconv.Atoi(s)
	return n, err == nil
}

// proxyTarget is what a storm runs under baton: a config per version and the
// command line.
type proxyTarget struct {
	name      string
	config    func(port, version int) string
	command   func(cfgPath string) []string
	batonArgs []string
}

func haproxyTarget(t *testing.T, extraGlobal, extraDefaults []string) proxyTarget {
	bin := batontest.RequireBinary(t, "haproxy")
	return proxyTarget{
		name:    "haproxy",
		config:  func(port, v int) string { return batontest.HAProxyConfig(port, v, extraGlobal, extraDefaults) },
		command: func(cfg string) []string { return []string{bin, "-f", cfg} },
	}
}

func nginxTarget(t *testing.T, extraMain, extraHTTP []string) proxyTarget {
	bin := batontest.RequireBinary(t, "nginx")
	return proxyTarget{
		name:    "nginx",
		config:  func(port, v int) string { return batontest.NginxConfig(port, v, extraMain, extraHTTP) },
		command: func(cfg string) []string { return []string{bin, "-e", "stderr", "-c", cfg} },
	}
}

// activatedTarget is examples/activated, a socket-activated server: READY=1
// on NOTIFY_SOCKET, drain on SIGTERM, its config checked by -check.
func activatedTarget(t *testing.T) proxyTarget {
	bin := batontest.BuildBinary(t, "./examples/activated")
	return proxyTarget{
		name:      "activated",
		config:    func(_, v int) string { return fmt.Sprintf("version=%d\ntext=storm\n", v) },
		command:   func(cfg string) []string { return []string{bin, "-config", cfg} },
		batonArgs: []string{"--proxy", "generic"},
	}
}

// runStorm starts baton supervising the target, runs the load and the
// reload storm, and collects everything the acceptance criteria look at.
func runStorm(t *testing.T, o stormOpts) stormResult {
	if o.target.name == "" {
		o.target = haproxyTarget(t, o.extraGlobal, o.extraDefaults)
	}
	port := batontest.FreePort(t)
	cfgDir := batontest.ShortTempDir(t)
	cfg := filepath.Join(cfgDir, "proxy.conf")
	write := func(v int) error {
		return batontest.WriteFileAtomic(cfg, []byte(o.target.config(port, v)))
	}
	if err := write(1); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-l", fmt.Sprintf("tcp://127.0.0.1:%d", port), "--drain-timeout", "30s"}, o.target.batonArgs...)
	if o.target.name == "activated" {
		args = append(args, "--check-command", o.target.command(cfg)[0]+" -check -config "+cfg)
	}
	args = append(append(args, "--"), o.target.command(cfg)...)
	b := batontest.StartBaton(t, args, batontest.StartOptions{})
	st, _ := b.Status()
	inode := st.Listeners[0].Inode
	var r stormResult
	r.fdBefore = stableFdCount(t, b.Pid())
	r.gens = map[int]bool{}

	lr := startLoad(t, fmt.Sprintf("127.0.0.1:%d", port), o.mode, 16, o.maxTime+time.Minute, o.rate)
	samplerStop, samplerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(samplerDone)
		sampleListen(port, inode, samplerStop, &r)
	}()
	warmup := time.NewTimer(time.Second)
	<-warmup.C
	storm(t, b, o, write, &r)
	tail := time.NewTimer(2 * time.Second) // load on after the last reload
	<-tail.C
	r.load = lr.stop(t)
	close(samplerStop)
	<-samplerDone
	r.stale = load.Stale(r.load.Samples, r.acks, parseGen)
	r.oldConnAnswers = load.OldConnAnswers(r.load.Samples, r.acks, parseGen)
	r.leftovers = oldGenerationsLeft(t, b, 10*time.Second)
	r.fdAfter = stableFdCount(t, b.Pid())
	return r
}

// storm requests reloads, one every o.interval, each after writing a config
// whose answers name its version. Requests overlap when a reload takes
// longer than the interval; baton coalesces them.
func storm(t *testing.T, b *batontest.Baton, o stormOpts, write func(int) error, r *stormResult) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	deadline := time.Now().Add(o.maxTime)
	enough := func(i int) bool {
		mu.Lock()
		defer mu.Unlock()
		return i >= o.reloads && len(r.gens) >= o.minGens
	}
	for i := 0; !enough(i) && time.Now().Before(deadline); i++ {
		<-tick.C
		v := i + 2
		if err := write(v); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := b.CLI("reload", "--json")
			at := time.Now()
			mu.Lock()
			defer mu.Unlock()
			r.requests++
			if res.Code != 0 {
				r.reloadErrors = append(r.reloadErrors, fmt.Sprintf("v%d: exit %d: %s", v, res.Code, res.Stderr))
				return
			}
			var out struct {
				Generation int `json:"generation"`
			}
			_ = json.Unmarshal([]byte(res.Stdout), &out)
			r.gens[out.Generation] = true
			r.acks = append(r.acks, load.Ack{At: at, Version: v})
			r.latencies = append(r.latencies, res.Took)
		}()
	}
	wg.Wait()
	r.stormTime = time.Since(deadline.Add(-o.maxTime))
}

// sampleListen checks every 20 ms that the port has exactly one LISTEN
// socket, and that it is baton's (same inode).
func sampleListen(port int, inode uint64, done <-chan struct{}, r *stormResult) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		socks, err := batontest.ListenSockets(port)
		r.listenSamples++
		if err != nil || len(socks) != 1 || socks[0] != inode {
			r.listenBad = append(r.listenBad, fmt.Sprintf("%s: %v %v", time.Now().Format("15:04:05.000"), socks, err))
		}
	}
}

// stableFdCount reads pid's fd count until three reads 50 ms apart agree.
func stableFdCount(t *testing.T, pid int) int {
	t.Helper()
	last, same := -1, 0
	for i := 0; i < 100; i++ {
		n, err := batontest.FdCount(pid)
		if err != nil {
			t.Fatal(err)
		}
		if n == last {
			same++
			if same == 2 {
				return n
			}
		} else {
			last, same = n, 0
		}
		timer := time.NewTimer(50 * time.Millisecond)
		<-timer.C
	}
	t.Fatalf("fd count of %d never settled", pid)
	return 0
}

// oldGenerationsLeft waits up to timeout for every process baton started
// that is not part of the active generation to be gone, and returns those
// still alive then.
func oldGenerationsLeft(t *testing.T, b *batontest.Baton, timeout time.Duration) []int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := b.Status()
		if err != nil {
			t.Fatal(err)
		}
		current := map[int]bool{}
		for _, g := range st.Generations {
			if g.State == "active" {
				for _, p := range g.Processes {
					current[p.Pid] = true
				}
			}
		}
		var left []int
		for _, p := range batontest.Descendants(b.Pid()) {
			if !current[p] && batontest.Alive(p) {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		timer := time.NewTimer(100 * time.Millisecond)
		<-timer.C
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

// report logs the figures of a storm.
func (r stormResult) report(t *testing.T, name string) {
	t.Logf("%s: load: %s", name, r.load.Summary())
	t.Logf("%s: %d reload requests in %s, %d acknowledged, %d failed; %d distinct generations; `baton reload` p50 %s p99 %s",
		name, r.requests, r.stormTime.Round(time.Millisecond), len(r.acks), len(r.reloadErrors), len(r.gens),
		percentile(r.latencies, 50).Round(time.Millisecond), percentile(r.latencies, 99).Round(time.Millisecond))
	t.Logf("%s: LISTEN samples %d, bad %d; baton fds before %d after %d; stale %d; keep-alive answers from older generations on pre-reload connections %d; leftovers %v",
		name, r.listenSamples, len(r.listenBad), r.fdBefore, r.fdAfter, len(r.stale), r.oldConnAnswers, r.leftovers)
	compatFigure(t, "%d reloads acknowledged, %d generations; %d requests, %d failed, %d stale; reload p50 %s; %d/%d LISTEN samples with one socket; baton fds %d→%d",
		len(r.acks), len(r.gens), r.load.Total, r.load.Failed, len(r.stale), percentile(r.latencies, 50).Round(time.Millisecond),
		r.listenSamples-len(r.listenBad), r.listenSamples, r.fdBefore, r.fdAfter)
}

// matrixStorm fills in a storm's size: at least 100 reloads and
// generations, or 50 when the version matrix runs (BATON_MATRIX=1), which
// repeats every storm for every proxy version.
func matrixStorm(o stormOpts) stormOpts {
	o.reloads, o.minGens = 110, 100
	if os.Getenv("BATON_MATRIX") == "1" {
		o.reloads, o.minGens = 55, 50
	}
	return o
}

// compatFigure logs one figure of a check for docs/compat.md: the version
// matrix (scripts/matrix) collects the lines that start with "compat: ".
func compatFigure(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Logf("compat: "+format, args...)
}

// check asserts the acceptance criteria shared by every storm of o.
func (r stormResult) check(t *testing.T, o stormOpts, wantZeroFailed bool) {
	t.Helper()
	if len(r.reloadErrors) > 0 {
		t.Errorf("%d reloads failed, first: %s", len(r.reloadErrors), r.reloadErrors[0])
	}
	if len(r.acks) < o.minGens || len(r.gens) < o.minGens {
		t.Errorf("%d reloads acknowledged, %d generations: want at least %d of each", len(r.acks), len(r.gens), o.minGens)
	}
	if len(r.listenBad) > 0 {
		t.Errorf("%d of %d samples did not show exactly baton's one LISTEN socket, first: %s", len(r.listenBad), r.listenSamples, r.listenBad[0])
	}
	if len(r.stale) > 0 {
		t.Errorf("%d answers from an older generation on connections made after the reload was acknowledged, first: %v", len(r.stale), r.stale[0])
	}
	if len(r.leftovers) > 0 {
		t.Errorf("old-generation processes alive 10 s after the run: %v", r.leftovers)
	}
	if r.fdBefore != r.fdAfter {
		t.Errorf("baton's fd count went from %d to %d", r.fdBefore, r.fdAfter)
	}
	if wantZeroFailed && r.load.Failed > 0 {
		t.Errorf("%d failed requests: %v", r.load.Failed, r.load.Failures(5))
	}
}
