package supervisor

import (
	"context"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/batonproxy/baton/api"
)

// Metrics are baton's Prometheus metrics. The loop records what happens
// (signals sent, reload durations); everything else is read at scrape time
// from the same snapshot `baton status` shows, so the two always agree.
type Metrics struct {
	Registry *prometheus.Registry
	version  string
	duration prometheus.Histogram
	signals  *prometheus.CounterVec
	status   func(context.Context) (api.Status, error)
}

// NewMetrics returns the metrics of one baton; version goes into
// baton_build_info. Give it to supervisor.New through Deps.
func NewMetrics(version string) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		version:  version,
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "baton_reload_duration_seconds",
			Help:    "Time from the start of a reload to its answer (switched, or failed); the first start and crash replacements are not reloads.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		signals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "baton_signals_total",
			Help: "Signals sent to generations, by kind (drain, stop, kill) and reason (reload, stop, drain_timeout, generation_cap, fast_stop, ready_timeout, kill_grace, abandoned).",
		}, []string{"kind", "reason"}),
	}
	m.Registry.MustRegister(m.duration, m.signals, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) attach(s *Supervisor) {
	m.status = s.Status
	m.Registry.MustRegister(m)
}

var (
	descBuild       = prometheus.NewDesc("baton_build_info", "baton's version and the Go version it was built with.", []string{"version", "goversion"}, nil)
	descReloads     = prometheus.NewDesc("baton_reloads_total", "Reloads by result (ok, failed); requests coalesced into one reload count once.", []string{"result"}, nil)
	descCrashes     = prometheus.NewDesc("baton_child_crashes_total", "Active generations that exited without being told to.", nil, nil)
	descConsecutive = prometheus.NewDesc("baton_consecutive_crashes", "Crashes of the active generation in a row (backoff grows with it).", nil, nil)
	descBackoff     = prometheus.NewDesc("baton_replacement_backoff_seconds", "Time until a crash replacement starts; 0 when none waits.", nil, nil)
	descGens        = prometheus.NewDesc("baton_generations", "Generations by state.", []string{"state"}, nil)
	descConns       = prometheus.NewDesc("baton_generation_connections", "ESTABLISHED TCP sockets held by a generation's processes.", []string{"generation", "state"}, nil)
	descFds         = prometheus.NewDesc("baton_generation_open_fds", "Open descriptors of a generation's processes.", []string{"generation", "state"}, nil)
	descNofile      = prometheus.NewDesc("baton_generation_nofile", "RLIMIT_NOFILE of a generation's leader, read from /proc.", []string{"generation", "limit"}, nil)
	descQueue       = prometheus.NewDesc("baton_listener_accept_queue", "Connections waiting in a listener's accept queue.", []string{"listener", "addr"}, nil)
	descBacklog     = prometheus.NewDesc("baton_listener_backlog", "A listener's accept queue limit.", []string{"listener", "addr"}, nil)
	descWatch       = prometheus.NewDesc("baton_watch_events_total", "Config watch outcomes: events seen, checks skipped because the digest did not change, reloads asked for, reloads that failed.", []string{"outcome"}, nil)
	descLastOK      = prometheus.NewDesc("baton_last_reload_success", "1 if the last reload (or the first start) succeeded, 0 if it failed; crash replacements are not reloads.", nil, nil)
	descLastAt      = prometheus.NewDesc("baton_last_reload_timestamp_seconds", "When the last reload (or the first start) finished, in seconds since the epoch.", nil, nil)
	descApplied     = prometheus.NewDesc("baton_config_applied_info", "1, labelled with the SHA-256 digest of the config the active generation runs (its copy).", []string{"digest"}, nil)
	descDiffers     = prometheus.NewDesc("baton_config_on_disk_differs", "1 if the config files on disk differ from the applied config (or cannot be read), 0 if they are the same.", nil, nil)
	descDraining    = prometheus.NewDesc("baton_draining_generations", "Generations told to drain and not gone yet (draining, or hard stopped or killed after their drain).", nil, nil)
	descDrainConns  = prometheus.NewDesc("baton_draining_connections", "ESTABLISHED TCP sockets held by the processes of the generations baton_draining_generations counts.", nil, nil)
	descDrainAge    = prometheus.NewDesc("baton_draining_oldest_seconds", "Time since the oldest generation baton_draining_generations counts was told to drain; 0 when none.", nil, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBuild, descReloads, descCrashes, descConsecutive, descBackoff, descGens, descConns, descFds, descNofile, descQueue, descBacklog, descWatch,
		descLastOK, descLastAt, descApplied, descDiffers, descDraining, descDrainConns, descDrainAge} {
		ch <- d
	}
}

// Collect implements prometheus.Collector from a status snapshot.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, m.version, runtime.Version())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := m.status(ctx)
	if err != nil {
		return
	}
	c := st.Counters
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(c.ReloadsOK), "ok")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(c.ReloadsFailed), "failed")
	ch <- prometheus.MustNewConstMetric(descCrashes, prometheus.CounterValue, float64(c.Crashes))
	ch <- prometheus.MustNewConstMetric(descConsecutive, prometheus.GaugeValue, float64(st.ConsecutiveCrashes))
	backoff := 0.0
	if st.RestartAt != nil {
		backoff = max(time.Until(*st.RestartAt).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(descBackoff, prometheus.GaugeValue, backoff)
	states := map[string]int{"checking": 0, "starting": 0, "active": 0, "draining": 0, "stopping": 0, "killed": 0}
	for _, g := range st.Generations {
		states[g.State]++
		gen := strconv.Itoa(g.Gen)
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(g.Connections), gen, g.State)
		ch <- prometheus.MustNewConstMetric(descFds, prometheus.GaugeValue, float64(g.OpenFds), gen, g.State)
		for _, p := range g.Processes {
			if p.Pid == g.Pid {
				ch <- prometheus.MustNewConstMetric(descNofile, prometheus.GaugeValue, float64(p.Nofile.Soft), gen, "soft")
				ch <- prometheus.MustNewConstMetric(descNofile, prometheus.GaugeValue, float64(p.Nofile.Hard), gen, "hard")
			}
		}
	}
	for state, n := range states {
		ch <- prometheus.MustNewConstMetric(descGens, prometheus.GaugeValue, float64(n), state)
	}
	collectReloadState(ch, st)
	collectDraining(ch, st)
	for _, l := range st.Listeners {
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(l.Queue), l.Name, l.Addr)
		ch <- prometheus.MustNewConstMetric(descBacklog, prometheus.GaugeValue, float64(l.Backlog), l.Name, l.Addr)
	}
	if w := st.Watch; w != nil {
		for outcome, n := range map[string]int{"event": w.Events, "unchanged": w.Unchanged, "reload": w.Reloads, "failed": w.Failed} {
			ch <- prometheus.MustNewConstMetric(descWatch, prometheus.CounterValue, float64(n), outcome)
		}
	}
}

// collectReloadState: the last reload's outcome and time, and the applied
// config, the gauges an alert on "the config is not applied" needs.
func collectReloadState(ch chan<- prometheus.Metric, st api.Status) {
	if r := st.LastReload; r != nil {
		ok := 0.0
		if r.Outcome == api.OutcomeOK {
			ok = 1
		}
		ch <- prometheus.MustNewConstMetric(descLastOK, prometheus.GaugeValue, ok)
		ch <- prometheus.MustNewConstMetric(descLastAt, prometheus.GaugeValue, float64(r.At.UnixNano())/1e9)
	}
	if c := st.Config; c != nil {
		ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, 1, c.AppliedDigest)
		differs := 0.0
		if c.OnDiskDiffers {
			differs = 1
		}
		ch <- prometheus.MustNewConstMetric(descDiffers, prometheus.GaugeValue, differs)
	}
}

// collectDraining: the generations told to drain that are still alive, and
// their connections.
func collectDraining(ch chan<- prometheus.Metric, st api.Status) {
	n, conns := 0, 0
	var oldest time.Time
	for _, g := range st.Generations {
		if g.DrainedAt == nil { // never told to drain: starting, active, or killed before it served
			continue
		}
		n++
		conns += g.Connections
		if oldest.IsZero() || g.DrainedAt.Before(oldest) {
			oldest = *g.DrainedAt
		}
	}
	age := 0.0
	if !oldest.IsZero() {
		age = max(time.Since(oldest).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(descDrainConns, prometheus.GaugeValue, float64(conns))
	ch <- prometheus.MustNewConstMetric(descDrainAge, prometheus.GaugeValue, age)
}

func (m *Metrics) signal(kind, reason string) {
	if m != nil {
		m.signals.WithLabelValues(kind, reason).Inc()
	}
}

func (m *Metrics) reloadTook(d time.Duration) {
	if m != nil {
		m.duration.Observe(d.Seconds())
	}
}
