package doctor

import (
	"slices"
	"sort"
	"time"
)

// Severity ranks a finding. Only Warning and Critical fail a run.
type Severity string

// Severities, from least to most urgent.
const (
	Info     Severity = "info"
	Warning  Severity = "warning"
	Critical Severity = "critical"
)

func (s Severity) rank() int {
	switch s {
	case Critical:
		return 2
	case Warning:
		return 1
	}
	return 0
}

// Finding is one condition a check found.
type Finding struct {
	Check    string   `json:"check"`
	Severity Severity `json:"severity"`
	// Subject is what the finding is about: "127.0.0.1:8080",
	// "pid 1234 haproxy", a config file, "host".
	Subject string `json:"subject"`
	Saw     string `json:"saw"`
	Why     string `json:"why"`
	Fix     string `json:"fix"`
	// Ports and Pids are the ports (TCP; UDP for the udp- checks) and
	// processes the finding involves (none for host-wide findings); --port
	// and --pid select on them.
	Ports []int          `json:"ports,omitempty"`
	Pids  []int          `json:"pids,omitempty"`
	Data  map[string]any `json:"data,omitempty"`
}

// Report is the result of one run.
type Report struct {
	Findings []Finding `json:"findings"`
	// Checked names every check that ran.
	Checked []string `json:"checked"`
	// Notes say what could not be read (the checks that depend on it saw
	// less than the whole host).
	Notes  []string      `json:"notes,omitempty"`
	Host   HostSummary   `json:"host"`
	Took   time.Duration `json:"-"`
	TookMs float64       `json:"took_ms"`
}

// HostSummary is the host-wide facts a report was made from.
type HostSummary struct {
	Somaxconn       int      `json:"somaxconn"`
	MaxSynBacklog   int      `json:"tcp_max_syn_backlog"`
	Syncookies      int      `json:"tcp_syncookies"`
	MaxTWBuckets    int      `json:"tcp_max_tw_buckets"`
	TimeWait        int      `json:"time_wait"`
	ListenOverflows uint64   `json:"listen_overflows"`
	ListenDrops     uint64   `json:"listen_drops"`
	Listeners       int      `json:"listening_sockets"`
	UDPSockets      int      `json:"udp_sockets"` // bound, unconnected
	Processes       int      `json:"processes"`
	Batons          []string `json:"batons"`
}

// Failing reports whether any finding is a warning or critical.
func (r Report) Failing() bool {
	for _, f := range r.Findings {
		if f.Severity.rank() > 0 {
			return true
		}
	}
	return false
}

// Count returns the number of findings of severity s.
func (r Report) Count(s Severity) int {
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

// Options tune a run; zero values take the defaults below.
type Options struct {
	// NofileLow: a proxy's soft NOFILE below it is a warning (4096);
	// NofileCritical: at or below it, critical (1024, the usual default a proxy inherits).
	NofileLow, NofileCritical uint64
	// FdUsage: open descriptors above this share of the soft NOFILE are a
	// warning (0.8); at 95 % critical.
	FdUsage float64
	// TimeWaitRatio: TIME_WAIT sockets above this share of
	// tcp_max_tw_buckets are a warning (0.8); at 100 % critical.
	TimeWaitRatio float64
	// QueueRatio: a listener whose accept queue is above this share of its
	// backlog is a warning (0.5); a full queue is critical.
	QueueRatio float64
	// OldAfter is how long an old proxy process may keep listening beside a
	// newer one, or a baton generation may drain, before it is reported
	// (10m).
	OldAfter time.Duration
	// ChurnWindow: listener re-creations older than this are history, not
	// findings (24h).
	ChurnWindow time.Duration
	// DropsInterval separates the two readings of the listen overflow and
	// drop counters (200ms).
	DropsInterval time.Duration
	// ControlPaths are the baton control sockets to query. Empty: those of
	// the `baton run` processes found on the host.
	ControlPaths []string
	// StatusTimeout bounds each control-socket request (2s).
	StatusTimeout time.Duration
	// Ports and Pids, when set, keep only the findings that involve one of
	// them, and the host-wide ones.
	Ports []int
	Pids  []int
}

// Defaults.
const (
	DefaultNofileLow      = 4096
	DefaultNofileCritical = 1024
	DefaultFdUsage        = 0.8
	DefaultTimeWaitRatio  = 0.8
	DefaultQueueRatio     = 0.5
	DefaultOldAfter       = 10 * time.Minute
	DefaultChurnWindow    = 24 * time.Hour
	DefaultDropsInterval  = 200 * time.Millisecond
	DefaultStatusTimeout  = 2 * time.Second
)

// WithDefaults fills the zero fields.
func (o Options) WithDefaults() Options {
	if o.NofileLow == 0 {
		o.NofileLow = DefaultNofileLow
	}
	if o.NofileCritical == 0 {
		o.NofileCritical = DefaultNofileCritical
	}
	if o.FdUsage == 0 {
		o.FdUsage = DefaultFdUsage
	}
	if o.TimeWaitRatio == 0 {
		o.TimeWaitRatio = DefaultTimeWaitRatio
	}
	if o.QueueRatio == 0 {
		o.QueueRatio = DefaultQueueRatio
	}
	if o.OldAfter == 0 {
		o.OldAfter = DefaultOldAfter
	}
	if o.ChurnWindow == 0 {
		o.ChurnWindow = DefaultChurnWindow
	}
	if o.DropsInterval == 0 {
		o.DropsInterval = DefaultDropsInterval
	}
	if o.StatusTimeout == 0 {
		o.StatusTimeout = DefaultStatusTimeout
	}
	return o
}

// selected reports whether f is in the scope of the Ports and Pids options:
// no scope, a host-wide finding, or one that involves a selected port or pid.
func (o Options) selected(f Finding) bool {
	if len(o.Ports) == 0 && len(o.Pids) == 0 {
		return true
	}
	if len(f.Ports) == 0 && len(f.Pids) == 0 {
		return true
	}
	for _, p := range f.Ports {
		if slices.Contains(o.Ports, p) {
			return true
		}
	}
	for _, p := range f.Pids {
		if slices.Contains(o.Pids, p) {
			return true
		}
	}
	return false
}

// sortFindings orders findings by severity (critical first), then check and
// subject, so that reports are stable.
func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Severity.rank() != b.Severity.rank() {
			return a.Severity.rank() > b.Severity.rank()
		}
		if a.Check != b.Check {
			return a.Check < b.Check
		}
		return a.Subject < b.Subject
	})
}
