package supervisor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// handoverFrame is b as sendHandover frames the state: its length, then b.
func handoverFrame(b []byte) []byte {
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(b)))
	return append(n[:], b...)
}

// FuzzHandoverDecode feeds the upgrade handover's state decoder (the part
// of ReceiveHandover before the descriptors) arbitrary bytes, and what it
// accepts to what a new baton does next with it: the descriptor index
// check, the listener set (without descriptors) and the lifecycle machine's
// Restore. Nothing may panic; an accepted state re-encodes to a state that
// decodes the same. Seeds (testdata/fuzz/FuzzHandoverDecode): the upgrade
// handover and the state file of a supervisor with two generations and a
// TCP and a unix listener, as written by collectHandover.
func FuzzHandoverDecode(f *testing.F) {
	f.Add(handoverFrame([]byte(`{"baton_pid":1,"num_fds":1,"listeners":[{"spec":"tcp://127.0.0.1:8080","inode":7,"users":[1],"fd":0}],"control_fd":-1,"lock_fd":-1,"init_fd":-1,"metrics_fd":-1}`)))
	f.Add(handoverFrame([]byte(`{"num_fds":2,"gens":[{"generation":3,"pid":9,"pidfd":1,"output":1}]}`)))
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := readHandoverState(bytes.NewReader(data))
		if err != nil {
			return
		}
		if h.NumFds < 0 || h.NumFds > maxHandoverFds {
			t.Fatalf("accepted %d descriptors", h.NumFds)
		}
		idxErr := h.checkFdIndexes()
		b1, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("an accepted state does not re-encode: %v", err)
		}
		h2, err := readHandoverState(bytes.NewReader(handoverFrame(b1)))
		if err != nil {
			t.Fatalf("the re-encoded state is refused: %v\n%s", err, b1)
		}
		if b2, _ := json.Marshal(h2); !bytes.Equal(b1, b2) {
			t.Fatalf("re-encoding changed the state:\n%s\n%s", b1, b2)
		}
		if (h2.checkFdIndexes() == nil) != (idxErr == nil) {
			t.Fatalf("descriptor indexes judged differently after re-encoding: %v", idxErr)
		}
		_, _ = lifecycle.Restore(lifecycle.DefaultConfig(), h.Machine, time.Unix(1_000_000_000, 0))
		if ls, err := AdoptListeners(h, nil); err == nil {
			if err := ls.CloseAll(); err != nil {
				t.Fatalf("close a listener set adopted without descriptors: %v", err)
			}
		}
	})
}
