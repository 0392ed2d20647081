package supervisor

import (
	"slices"
	"strings"
	"time"

	"github.com/batonproxy/baton/supervisor/lifecycle"
)

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
	// given (configdigest.go); empty for drivers without copies.
	ConfigDigest string `json:"config_digest,omitempty"`
	Error        string `json:"error,omitempty"`
}

// ReloadHistoryLen is how many finished reloads the history keeps.
const ReloadHistoryLen = 32

// reloadHistory is the last ReloadHistoryLen finished reloads, oldest
// first. The loop owns it.
type reloadHistory struct {
	recs []ReloadRecord
}

func (h *reloadHistory) add(r ReloadRecord) {
	if len(h.recs) == ReloadHistoryLen {
		h.recs = slices.Delete(h.recs, 0, 1)
	}
	h.recs = append(h.recs, r)
}

// list returns a copy, oldest first.
func (h *reloadHistory) list() []ReloadRecord {
	return append([]ReloadRecord{}, h.recs...)
}

// recordFinished adds the reload the machine just finished to the history.
// It runs on the loop after the step that finished it and before that
// step's actions: the requests it answers are still pending (their
// triggers), and its generation is not forgotten yet (its config digest).
func (s *Supervisor) recordFinished() {
	f := s.m.LastFinished()
	if f.Seq == 0 || f.Seq == s.finishedSeq {
		return
	}
	s.finishedSeq = f.Seq
	rec := ReloadRecord{
		Gen: int(f.Gen), At: f.At, Trigger: s.trigger(f), Requests: len(f.Reqs), Outcome: OutcomeOK,
		DurationMs: float64(f.Duration.Microseconds()) / 1000,
	}
	if rt := s.gens[f.Gen]; rt != nil {
		rec.ConfigDigest = rt.configDigest
	}
	if f.Err != nil {
		rec.Outcome = OutcomeFailed
		rec.Error = s.explain(f.Gen, f.Err).Error()
	}
	s.history.add(rec)
	if f.Kind != lifecycle.KindReplacement {
		s.lastReload = &rec
	}
	if f.Kind == lifecycle.KindReload { // not the first start, not a crash replacement
		s.metrics.reloadTook(f.Duration)
	}
}

// trigger names who asked for f: the triggers of its requests, in order.
func (s *Supervisor) trigger(f lifecycle.ReloadResult) Trigger {
	if f.Kind == lifecycle.KindReplacement {
		return TriggerCrash
	}
	var names []string
	for _, id := range f.Reqs {
		t := s.pending[id].trigger
		if t == "" {
			t = TriggerAPI
		}
		if !slices.Contains(names, string(t)) {
			names = append(names, string(t))
		}
	}
	if len(names) == 0 {
		return TriggerAPI
	}
	return Trigger(strings.Join(names, "+"))
}
