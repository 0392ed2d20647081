package api

import (
	"math"
	"time"
)

// Status is the supervisor's state, as `baton status` shows it: the
// answer of GET /v1/status.
type Status struct {
	Pid         int              `json:"pid"`
	Proxy       string           `json:"proxy"`
	Command     []string         `json:"command"`
	StartedAt   time.Time        `json:"started_at"`
	Stopping    bool             `json:"stopping"`
	Rlimits     []string         `json:"rlimits"`
	Listeners   []ListenerStatus `json:"listeners"`
	Generations []GenStatus      `json:"generations"`
	// LastReload is the last reload or the first start (trigger "start"),
	// crash replacements left out; Reloads the history, oldest first.
	LastReload *ReloadRecord  `json:"last_reload,omitempty"`
	Reloads    []ReloadRecord `json:"reloads"`
	// Config is the applied config and whether the files on disk differ;
	// nil when the active generation has no config copy (the generic
	// driver) or none is active.
	Config   *ConfigStatus `json:"config,omitempty"`
	Counters Counters      `json:"counters"`
	// ConsecutiveCrashes counts crashes of the active generation in a row;
	// RestartAt is set while a replacement waits out its backoff.
	ConsecutiveCrashes int        `json:"consecutive_crashes"`
	RestartAt          *time.Time `json:"restart_at,omitempty"`
	// Watch is the config watch's state, when --watch is set.
	Watch *WatchStatus `json:"watch,omitempty"`
}

// Counters are totals since baton started. The first start and crash
// replacements are not reloads.
type Counters struct {
	ReloadsOK     int `json:"reloads_ok"`
	ReloadsFailed int `json:"reloads_failed"`
	Crashes       int `json:"crashes"`
	HardStops     int `json:"hard_stops"`
	Kills         int `json:"kills"`
}

// ListenerStatus is one listening socket baton holds. For TCP listeners,
// Queue is the accept queue now (connections the kernel completed that no
// generation accepted yet) and Backlog its limit, from sock_diag.
type ListenerStatus struct {
	Name    string `json:"name"`
	Spec    string `json:"spec"`
	Addr    string `json:"addr"`
	Inode   uint64 `json:"inode"`
	Queue   uint32 `json:"accept_queue"`
	Backlog uint32 `json:"backlog"`
	// Where is the file:line of the active configuration that declares it
	// (baton run without --listen).
	Where string `json:"where,omitempty"`
}

// GenStatus is one generation.
type GenStatus struct {
	Gen         int        `json:"generation"`
	State       string     `json:"state"`
	Pid         int        `json:"pid"`
	Replacement bool       `json:"replacement,omitempty"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	ReadyAt     *time.Time `json:"ready_at,omitempty"`
	DrainedAt   *time.Time `json:"drain_started_at,omitempty"`
	// Deadline is when the generation is escalated: killed when not ready
	// (starting), hard stopped (draining), SIGKILLed (stopping).
	Deadline       *time.Time `json:"deadline,omitempty"`
	DeadlineAction string     `json:"deadline_action,omitempty"`
	// Connections counts the ESTABLISHED TCP sockets its processes hold;
	// OpenFds their open descriptors.
	Connections int          `json:"connections"`
	OpenFds     int          `json:"open_fds"`
	Processes   []ProcStatus `json:"processes"`
	// ForeignListeners are listening sockets it bound itself (addresses
	// missing from --listen).
	ForeignListeners []ForeignListener `json:"foreign_listeners,omitempty"`
}

// ProcStatus is one process of a generation, with limits read back from
// /proc/PID/limits. Role is what the driver calls it: master or worker
// (HAProxy, nginx; nginx's other processes by their title, "cache
// manager"), leader or child (generic).
type ProcStatus struct {
	Pid         int    `json:"pid"`
	Role        string `json:"role"`
	Nofile      Limit  `json:"nofile"`
	OpenFds     int    `json:"open_fds"`
	Connections int    `json:"connections"`
}

// Limit is one row of /proc/PID/limits; Unlimited for "unlimited".
type Limit struct {
	Soft uint64 `json:"soft"`
	Hard uint64 `json:"hard"`
}

// Unlimited is RLIM_INFINITY, a Limit's "unlimited".
const Unlimited = math.MaxUint64

// ForeignListener is a TCP socket in LISTEN state that a generation bound
// itself (an address missing from --listen): a second socket for that address
// appears with every generation, exactly what baton exists to prevent.
type ForeignListener struct {
	Addr    string `json:"addr"`
	Inode   uint64 `json:"inode"`
	Pid     int    `json:"pid"`
	Adopted bool   `json:"adopted"` // baton took it over (--adopt-listeners)
}

// ConfigStatus is the applied configuration (the active generation's
// config copy) and how the files on disk compare with it, over the same
// files: HAProxy's -f files, nginx's main file (files it includes are read
// in place and not covered). Digests are SHA-256, in hex, over each file's
// path, length and content, in path order.
type ConfigStatus struct {
	Files         []string `json:"files"`
	Gen           int      `json:"applied_generation"`
	AppliedDigest string   `json:"applied_digest"`
	OnDiskDigest  string   `json:"on_disk_digest,omitempty"`
	// OnDiskDiffers is true when the files on disk are not what the
	// active generation runs (or one cannot be read: OnDiskError says why).
	OnDiskDiffers bool   `json:"on_disk_differs"`
	OnDiskError   string `json:"on_disk_error,omitempty"`
}

// WatchStatus is what the config watch saw and did.
type WatchStatus struct {
	Paths []string `json:"paths"`
	// Applied is the digest of the watched files as of the last reload that
	// succeeded (whoever asked for it); Attempted the last one a watch event
	// reloaded for.
	Applied     string     `json:"applied_digest"`
	Attempted   string     `json:"attempted_digest"`
	Events      int        `json:"events"`
	Unchanged   int        `json:"unchanged"` // checks that found nothing new
	Reloads     int        `json:"reloads"`   // reloads the watch asked for
	Failed      int        `json:"failed"`    // of which failed
	LastEventAt *time.Time `json:"last_event_at,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Waiting     string     `json:"waiting,omitempty"` // why a change is not applied yet
}
