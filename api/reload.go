package api

import "time"

// Trigger is what asked for a reload.
type Trigger string

// Triggers of a reload.
const (
	TriggerStart  Trigger = "start"  // baton's first generation
	TriggerAPI    Trigger = "api"    // baton reload, POST /v1/reload
	TriggerSignal Trigger = "sighup" // SIGHUP to baton
	TriggerWatch  Trigger = "watch"  // a --watch change
	TriggerCrash  Trigger = "crash"  // the replacement of a crashed active generation
)

// Outcomes of a reload.
const (
	OutcomeOK     = "ok"
	OutcomeFailed = "failed"
)

// ReloadRecord is one finished reload, first start or crash replacement.
type ReloadRecord struct {
	Gen int       `json:"generation"`
	At  time.Time `json:"at"` // when it finished
	// Trigger says who asked: requests of different triggers coalesced
	// into one reload are joined with "+", in arrival order ("api+watch").
	Trigger    Trigger `json:"trigger"`
	Requests   int     `json:"requests"` // requests it answered (0 for a crash replacement)
	Outcome    string  `json:"outcome"`  // ok, failed
	DurationMs float64 `json:"duration_ms"`
	// ConfigDigest is the SHA-256 of the config copy the generation was
	// given; empty for drivers without copies.
	ConfigDigest string `json:"config_digest,omitempty"`
	Error        string `json:"error,omitempty"`
}

// ReloadHistoryLen is how many finished reloads the history keeps.
const ReloadHistoryLen = 32

// ReloadsResponse is the body of GET /v1/reloads: the last
// ReloadHistoryLen finished reloads, first start and crash replacements,
// oldest first.
type ReloadsResponse struct {
	Reloads []ReloadRecord `json:"reloads"`
}

// ReloadResponse is what a successful reload reports: the body of a
// successful POST /v1/reload, and what the supervisor's Reload returns.
// DurationMs is from the request's arrival to its acknowledgement, in
// milliseconds to the microsecond.
type ReloadResponse struct {
	Generation int     `json:"generation"`
	Pid        int     `json:"pid"`
	DurationMs float64 `json:"duration_ms"`
}
