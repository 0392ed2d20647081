package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/batonproxy/baton/internal/testbed"
)

// scaleReport holds the scale scenarios.
type scaleReport struct {
	// Reloads: many reloads of a child that is ready at once (baton's own
	// cost per reload); Activated: reloads of examples/activated.
	Reloads   *reloadScale   `json:"reloads,omitempty"`
	Activated *reloadScale   `json:"reloads_activated,omitempty"`
	Listeners *listenerScale `json:"listeners,omitempty"`
	Draining  *drainScale    `json:"draining,omitempty"`
}

// reloadScale is baton's memory and fds across many reloads.
type reloadScale struct {
	Child   string  `json:"child"`
	Reloads int     `json:"reloads"`
	Errors  int     `json:"errors"`
	TotalS  float64 `json:"total_s"`
	// Reload is each reload's time through the control API.
	Reload  durStats      `json:"reload"`
	Start   footprint     `json:"baton_start"`
	End     footprint     `json:"baton_end"`
	PeakRSS int           `json:"baton_peak_rss_kb"`
	Samples []scaleSample `json:"samples"`
}

// scaleSample is baton after Reloads reloads.
type scaleSample struct {
	Reloads int `json:"reloads"`
	RSSKB   int `json:"rss_kb"`
	Fds     int `json:"fds"`
}

func (b *bench) scaleFamily(ctx context.Context) {
	steps := []struct {
		id string
		f  func(context.Context) error
	}{
		{"scale/reloads", b.scaleSleepReloads},
		{"scale/reloads-activated", b.scaleActivatedReloads},
		{"scale/listeners", b.scaleListeners},
		{"scale/draining", b.scaleDraining},
	}
	for _, s := range steps {
		if !b.want(s.id) || ctx.Err() != nil {
			continue
		}
		if err := s.f(ctx); err != nil && ctx.Err() == nil {
			b.fail(s.id, err)
		}
	}
}

// scaleSleepReloads: /bin/sleep under the generic driver, ready 1 ms
// after its start, drained by SIGTERM. A reload then costs what baton
// itself does (start through the exec shim, readiness, drain, reap), so
// the plan's 10,000 reloads fit in minutes; examples/activated costs two
// Go program start-ups per reload and gets its own, shorter run.
func (b *bench) scaleSleepReloads(ctx context.Context) error {
	bm := &batonMethod{e: b.e, id: "scale-sleep", kind: activatedConfig, noCheck: true, idle: true,
		extra: []string{"--proxy", "generic", "--ready-after", "1ms"},
		cmd:   func(string) []string { return []string{b.sleep, "3600"} }}
	rs, err := b.reloadScale(ctx, bm, b.plan.ScaleReloads, b.plan.ScaleSampleEvery)
	if rs != nil {
		rs.Child = "`sleep 3600`, `--proxy generic --ready-after 1ms`"
		b.rep.Scale.Reloads = rs
	}
	return err
}

func (b *bench) scaleActivatedReloads(ctx context.Context) error {
	bm := newBatonGeneric(b.e)
	bm.id, bm.noCheck = "scale-activated", true
	every := max(b.plan.ActivatedReloads/10, 1)
	rs, err := b.reloadScale(ctx, bm, b.plan.ActivatedReloads, every)
	if rs != nil {
		rs.Child = "examples/activated (sd_notify READY=1), no config check"
		b.rep.Scale.Activated = rs
	}
	return err
}

// reloadScale starts bm, reloads it n times through the control API and
// samples baton's RSS and fd count every `every` reloads.
func (b *bench) reloadScale(ctx context.Context, bm *batonMethod, n, every int) (*reloadScale, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := bm.Start(ctx, port); err != nil {
		return nil, errors.Join(err, bm.Stop())
	}
	defer func() {
		if err := bm.Stop(); err != nil {
			b.fail("scale/"+bm.id, err)
		}
	}()
	rs := &reloadScale{}
	sample := func(i int) error {
		bm.settle(ctx, 5*time.Second)
		u, err := footprintOf(bm.Pid())
		if err != nil {
			return err
		}
		rs.Samples = append(rs.Samples, scaleSample{Reloads: i, RSSKB: u.RSSKB, Fds: u.Fds})
		rs.PeakRSS = max(rs.PeakRSS, u.RSSKB)
		rs.End = u
		return nil
	}
	if err := sample(0); err != nil {
		return nil, err
	}
	rs.Start = rs.End
	begin := time.Now()
	var took []time.Duration
	for i := 1; i <= n && ctx.Err() == nil; i++ {
		t0 := time.Now()
		if _, err := bm.reloadAPI(ctx); err != nil {
			rs.Errors++
			if rs.Errors > 10 {
				return rs, fmt.Errorf("more than 10 failed reloads, last: %w", err)
			}
			continue
		}
		took = append(took, time.Since(t0))
		rs.Reloads++
		if i%every == 0 || i == n {
			if err := sample(i); err != nil {
				return rs, err
			}
		}
		if i%1000 == 0 {
			b.logf("scale/%s: %d reloads, baton RSS %d kB, %d fds", bm.id, i, rs.End.RSSKB, rs.End.Fds)
		}
	}
	rs.TotalS = time.Since(begin).Seconds()
	rs.Reload = summarize(took)
	b.logf("scale/%s: %d reloads in %.1f s (p50 %.1f ms); baton RSS %d -> %d kB (peak %d), fds %d -> %d",
		bm.id, rs.Reloads, rs.TotalS, rs.Reload.P50, rs.Start.RSSKB, rs.End.RSSKB, rs.PeakRSS, rs.Start.Fds, rs.End.Fds)
	return rs, nil
}

// listenerScale is one generation handed many listeners.
type listenerScale struct {
	Listeners int `json:"listeners"`
	// NofileBaton and NofileWorker are "soft/hard" of baton and of the
	// HAProxy worker, from /proc/PID/limits.
	NofileBaton  string `json:"nofile_baton"`
	NofileWorker string `json:"nofile_worker"`
	// ActiveMs: from exec of `baton run` to an active generation;
	// ServingMs: to the first answer on the first listener.
	ActiveMs  float64   `json:"first_active_ms"`
	ServingMs float64   `json:"first_answer_ms"`
	Reload    durStats  `json:"reload"`
	Server    durStats  `json:"reload_server"`
	Answering int       `json:"ports_answering_new_version"`
	Baton     footprint `json:"baton"`
}

// scaleListeners: baton + HAProxy with one frontend of N `bind` lines.
func (b *bench) scaleListeners(ctx context.Context) error {
	ports, err := freePorts(b.plan.Listeners)
	if err != nil {
		return err
	}
	bm := newBatonHAProxy(b.e)
	bm.id, bm.ports = "scale-listeners", ports
	bm.render = func(v int) string { return manyBinds(ports, v) }
	begin := time.Now()
	if err := bm.Start(ctx, ports[0]); err != nil {
		return errors.Join(err, bm.Stop())
	}
	ls := &listenerScale{Listeners: len(ports), ActiveMs: ms(bm.activeAfter), ServingMs: ms(time.Since(begin))}
	b.rep.Scale.Listeners = ls
	defer func() {
		if err := bm.Stop(); err != nil {
			b.fail("scale/listeners", err)
		}
	}()
	var took, server []time.Duration
	for v := 2; v <= 4; v++ {
		t0 := time.Now()
		info, err := bm.Reload(ctx, v)
		if err != nil {
			return err
		}
		took, server = append(took, time.Since(t0)), append(server, info.Server)
	}
	ls.Reload, ls.Server = summarize(took), summarize(server)
	ls.Answering = answering(ctx, ports, "4")
	ls.Baton, _ = footprintOf(bm.Pid())
	ls.NofileBaton = nofile(bm.Pid())
	if st, err := bm.status(ctx); err == nil {
		for _, g := range st.Generations {
			for _, p := range g.Processes {
				if g.State == "active" && p.Pid != g.Pid {
					ls.NofileWorker = nofile(p.Pid)
				}
			}
		}
	}
	b.logf("scale/listeners: %d listeners: active after %.0f ms, serving after %.0f ms; reload p50 %.0f ms; %d ports answer; baton %d fds, RSS %d kB",
		ls.Listeners, ls.ActiveMs, ls.ServingMs, ls.Reload.P50, ls.Answering, ls.Baton.Fds, ls.Baton.RSSKB)
	return nil
}

// manyBinds is the bench's HAProxy config with a bind line per port.
func manyBinds(ports []int, version int) string {
	cfg := renderConfig(haproxyConfig, ports[0], version)
	var binds strings.Builder
	for _, p := range ports {
		binds.WriteString("    bind " + addr(p) + "\n")
	}
	return strings.Replace(cfg, "    bind "+addr(ports[0])+"\n", binds.String(), 1)
}

// answering counts the ports that answer with version, 8 at a time.
func answering(ctx context.Context, ports []int, version string) int {
	var mu sync.Mutex
	n := 0
	work := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for p := range work {
				if gen, err := probe(ctx, addr(p)); err == nil && gen == version {
					mu.Lock()
					n++
					mu.Unlock()
				}
			}
		})
	}
	for _, p := range ports {
		work <- p
	}
	close(work)
	wg.Wait()
	return n
}

// nofile is "soft/hard" of pid's NOFILE.
func nofile(pid int) string {
	soft, hard, err := testbed.Nofile(pid)
	if err != nil {
		return "?"
	}
	return soft + "/" + hard
}

// hostNofile is the bench's own NOFILE hard limit (the Go runtime raised
// the soft one to it).
func hostNofile() string { return nofile(os.Getpid()) }
