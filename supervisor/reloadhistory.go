package supervisor

import (
	"slices"
	"strings"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// reloadHistory is the last api.ReloadHistoryLen finished reloads, oldest
// first. The loop owns it.
type reloadHistory struct {
	recs []api.ReloadRecord
}

func (h *reloadHistory) add(r api.ReloadRecord) {
	if len(h.recs) == api.ReloadHistoryLen {
		h.recs = slices.Delete(h.recs, 0, 1)
	}
	h.recs = append(h.recs, r)
}

// list returns a copy, oldest first.
func (h *reloadHistory) list() []api.ReloadRecord {
	return append([]api.ReloadRecord{}, h.recs...)
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
	rec := api.ReloadRecord{
		Gen: int(f.Gen), At: f.At, Trigger: s.trigger(f), Requests: len(f.Reqs), Outcome: api.OutcomeOK,
		DurationMs: float64(f.Duration.Microseconds()) / 1000,
	}
	if rt := s.gens[f.Gen]; rt != nil {
		rec.ConfigDigest = rt.configDigest
	}
	if f.Err != nil {
		rec.Outcome = api.OutcomeFailed
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
func (s *Supervisor) trigger(f lifecycle.ReloadResult) api.Trigger {
	if f.Kind == lifecycle.KindReplacement {
		return api.TriggerCrash
	}
	var names []string
	for _, id := range f.Reqs {
		t := s.pending[id].trigger
		if t == "" {
			t = api.TriggerAPI
		}
		if !slices.Contains(names, string(t)) {
			names = append(names, string(t))
		}
	}
	if len(names) == 0 {
		return api.TriggerAPI
	}
	return api.Trigger(strings.Join(names, "+"))
}
