package supervisor

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"time"

	"github.com/batonproxy/baton/api"
)

// historyLimit bounds the history file (lines kept).
const historyLimit = 200

// RecordListeners appends to the history file at path a record for every
// listener whose socket differs from the last one recorded for its address,
// pending until MarkListenersServed. It keeps the file to its last
// historyLimit records. It survives baton's restarts: that is what makes
// re-created sockets visible.
func RecordListeners(path string, ls *ListenerSet, pid int, now time.Time) error {
	old, err := readListenerHistory(path)
	if err != nil {
		return err
	}
	last := map[string]uint64{}
	for _, r := range old {
		last[r.Key] = r.Inode
	}
	recs := old
	for _, s := range ls.Sockets() {
		key := s.Spec().Key()
		if inode, ok := last[key]; ok && inode == s.Inode() {
			continue
		}
		recs = append(recs, api.ListenerRecord{At: now, BatonPid: pid, Addr: s.Addr(), Key: key, Inode: s.Inode(), Pending: true})
	}
	if len(recs) == len(old) {
		return nil
	}
	if len(recs) > historyLimit {
		recs = recs[len(recs)-historyLimit:]
	}
	return writeHistory(path, recs)
}

// MarkListenersServed clears Pending on the records baton pid wrote at or
// after since (its start: an earlier baton that had the same pid is not
// it): its first generation serves on those sockets. It reads only the
// file, not the listener set, so any goroutine may call it.
func MarkListenersServed(path string, pid int, since time.Time) error {
	recs, err := readListenerHistory(path)
	if err != nil {
		return err
	}
	changed := false
	for i := range recs {
		if recs[i].BatonPid == pid && recs[i].Pending && !recs[i].At.Before(since) {
			recs[i].Pending = false
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return writeHistory(path, recs)
}

// writeHistory replaces the history file with recs, one JSON line each.
func writeHistory(path string, recs []api.ListenerRecord) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return writeFileAtomic(path, buf.Bytes())
}

// historyFileLimit bounds what readListenerHistory reads: historyLimit
// records are a few tens of KiB.
const historyFileLimit = 1 << 20

// readListenerHistory reads a listener history file (none: empty): a
// regular file of baton's uid, not a symbolic link, at most
// historyFileLimit bytes; lines that are not records are skipped.
func readListenerHistory(path string) ([]api.ListenerRecord, error) {
	return ReadListenerHistoryOwnedBy(path, os.Geteuid())
}

// ReadListenerHistoryOwnedBy is readListenerHistory for the history of a
// baton running as uid owner (doctor reads a non-root baton's).
func ReadListenerHistoryOwnedBy(path string, owner int) ([]api.ListenerRecord, error) {
	data, err := readOwnedFile(path, owner, historyFileLimit)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []api.ListenerRecord
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, historyFileLimit)
	for sc.Scan() {
		var r api.ListenerRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			out = append(out, r)
		}
	}
	return out, sc.Err()
}
