package load

import (
	"slices"
	"sort"
	"time"
)

// Ack records that a reload acknowledged at time At switched serving to
// configuration version Version. Versions increase over time.
type Ack struct {
	At      time.Time
	Version int
}

// sortedAcks returns a copy of acks sorted by At.
func sortedAcks(acks []Ack) []Ack {
	s := slices.Clone(acks)
	slices.SortStableFunc(s, func(a, b Ack) int { return a.At.Compare(b.At) })
	return s
}

// before returns how many of the sorted acks have At strictly before t.
func before(acks []Ack, t time.Time) int {
	return sort.Search(len(acks), func(i int) bool { return !acks[i].At.Before(t) })
}

// Stale returns every OK sample whose connection was dialed after a reload
// was acknowledged (ConnStart after some ack's At) but whose answer, parsed
// from Gen by parse, has a version lower than that ack's Version. Such an
// answer came from an old generation on a connection that should only have
// reached the new one. Samples whose Gen does not parse are skipped. acks may
// be in any order. It runs in O((len(samples) + len(acks)) log len(acks)).
func Stale(samples []Sample, acks []Ack, parse func(gen string) (int, bool)) []Sample {
	sorted := sortedAcks(acks)
	// maxVer[i] is the highest version among the first i acks by time.
	maxVer := make([]int, len(sorted)+1)
	for i, a := range sorted {
		maxVer[i+1] = a.Version
		if i > 0 {
			maxVer[i+1] = max(maxVer[i], a.Version)
		}
	}
	var out []Sample
	for _, s := range samples {
		if s.Class != OK {
			continue
		}
		i := before(sorted, s.ConnStart)
		if i == 0 {
			continue
		}
		if v, ok := parse(s.Gen); ok && v < maxVer[i] {
			out = append(out, s)
		}
	}
	return out
}

// OldConnAnswers counts OK samples that started after a reload was
// acknowledged, on a connection dialed before that acknowledgement, and were
// answered by an older version. These are keep-alive requests still served
// by a pre-reload connection; they are informational, not errors. Samples
// whose Gen does not parse are skipped. acks may be in any order.
func OldConnAnswers(samples []Sample, acks []Ack, parse func(string) (int, bool)) int {
	sorted := sortedAcks(acks)
	n := 0
	for _, s := range samples {
		if s.Class != OK {
			continue
		}
		// Acks with ConnStart < At < Start.
		lo := sort.Search(len(sorted), func(i int) bool { return sorted[i].At.After(s.ConnStart) })
		hi := before(sorted, s.Start)
		if lo >= hi {
			continue
		}
		v, ok := parse(s.Gen)
		if ok && olderThanAny(v, sorted[lo:hi]) {
			n++
		}
	}
	return n
}

func olderThanAny(v int, acks []Ack) bool {
	// Versions increase with time, so the last ack is normally the
	// highest; scan backwards to stay correct if they do not.
	for i := len(acks) - 1; i >= 0; i-- {
		if v < acks[i].Version {
			return true
		}
	}
	return false
}
