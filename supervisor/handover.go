package supervisor

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// Handover is the state one baton hands to the next: at an upgrade (with
// descriptors, over a socketpair) and in the state file a restarted baton
// adopts after a crash (without them). Fields named *Fd are indexes into
// the descriptors sent after the JSON, -1 for none.
type Handover struct {
	BatonPid  int                    `json:"baton_pid"`
	Machine   lifecycle.MachineState `json:"machine"`
	Listeners []ListenerHandover     `json:"listeners"`
	Gens      []GenHandover          `json:"gens"`
	LastGood  map[string]string      `json:"last_good,omitempty"`
	Watch     *api.WatchStatus       `json:"watch,omitempty"`
	PidFile   api.PidFileState       `json:"pid_file"`
	ControlFd int                    `json:"control_fd"`
	LockFd    int                    `json:"lock_fd"`
	InitFd    int                    `json:"init_fd"`
	MetricsFd int                    `json:"metrics_fd"`
	NumFds    int                    `json:"num_fds"`
	Tracking  *trackingHandover      `json:"tracking,omitempty"`
	// Reloads is the reload history, LastReload the last reload or first
	// start: carried over at an upgrade, not kept in the state file.
	Reloads    []api.ReloadRecord `json:"reloads,omitempty"`
	LastReload *api.ReloadRecord  `json:"last_reload,omitempty"`

	// procs is how Recover found each generation's processes (never sent
	// or saved): RecoverListeners takes sockets back from all of them.
	procs map[lifecycle.Gen]proc.GenProcs
}

// ListenerHandover is one socket of the listener set.
type ListenerHandover struct {
	Spec    string          `json:"spec"`
	Inode   uint64          `json:"inode"`
	Removed bool            `json:"removed,omitempty"`
	Users   []lifecycle.Gen `json:"users"`
	Fd      int             `json:"fd"`
	Where   string          `json:"where,omitempty"` // file:line of its config declaration
	// Steered says the address is a steered UDP group (steered.go): this
	// record is its anchor, and records with MemberOf set follow it.
	Steered bool `json:"steered,omitempty"`
	// MemberOf, when set, makes the record the member of that generation
	// in the steered group of the record before it with the same Spec.
	MemberOf lifecycle.Gen `json:"member_of,omitempty"`
}

// GenHandover is one live generation's runtime.
type GenHandover struct {
	Gen        lifecycle.Gen     `json:"generation"`
	Pid        int               `json:"pid"`
	StartTicks uint64            `json:"start_ticks"`
	Dir        string            `json:"dir"`
	Digest     string            `json:"digest,omitempty"`
	Config     map[string]string `json:"config,omitempty"`
	Pidfd      int               `json:"pidfd"`
	Output     int               `json:"output"`
}

// handoverLimit bounds the JSON a receiver accepts.
const handoverLimit = 16 << 20

// maxHandoverFds bounds the descriptors a handover may announce.
const maxHandoverFds = 1 << 16

// sendHandover writes h and its descriptors (borrowed) on c, then waits for
// the receiver's "ready PID" line and returns PID.
func sendHandover(c *net.UnixConn, h Handover, fds []int, timeout time.Duration) (int, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	h.NumFds = len(fds)
	data, err := json.Marshal(h)
	if err != nil {
		return 0, err
	}
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(data)))
	if _, err := c.Write(append(n[:], data...)); err != nil {
		return 0, fmt.Errorf("send state: %w", err)
	}
	for _, b := range fdpass.Batches(len(fds)) {
		if err := fdpass.Send(c, []byte{byte(b[1] - b[0])}, fds[b[0]:b[1]]); err != nil {
			return 0, fmt.Errorf("send descriptors: %w", err)
		}
	}
	line, err := bufio.NewReader(io.LimitReader(c, 64)).ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("wait for the new baton: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "ready "))
	if err != nil || !strings.HasPrefix(line, "ready ") {
		return 0, fmt.Errorf("new baton said %q", line)
	}
	return pid, nil
}

// ReceiveHandover reads what sendHandover wrote. The caller owns the
// returned descriptors; on error none are returned. Reply with
// AckHandover once the new baton serves.
func ReceiveHandover(c *net.UnixConn, timeout time.Duration) (Handover, []int, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	h, err := readHandoverState(c)
	if err != nil {
		return h, nil, err
	}
	var fds []int
	buf := make([]byte, 1)
	for len(fds) < h.NumFds {
		_, got, err := fdpass.Recv(c, buf, fdpass.MaxBatch)
		fds = append(fds, got...)
		if err == nil && len(got) == 0 {
			err = errors.New("no descriptors in a batch")
		}
		if err != nil {
			closeFds(fds)
			return h, nil, fmt.Errorf("receive descriptors (%d of %d): %w", len(fds), h.NumFds, err)
		}
	}
	if len(fds) != h.NumFds {
		closeFds(fds)
		return h, nil, fmt.Errorf("received %d descriptors, expected %d", len(fds), h.NumFds)
	}
	if err := h.checkFdIndexes(); err != nil {
		closeFds(fds)
		return h, nil, fmt.Errorf("decode state: %w", err)
	}
	_ = c.SetDeadline(time.Time{})
	return h, fds, nil
}

// readHandoverState reads the state sendHandover writes first: its length
// (4 bytes, little-endian, at most handoverLimit), then that much JSON.
// Memory grows with the bytes that arrive, not with the length announced;
// nothing past the state is read (the descriptors follow it). The count of
// descriptors announced must be within maxHandoverFds.
func readHandoverState(r io.Reader) (Handover, error) {
	var h Handover
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return h, fmt.Errorf("read state: %w", err)
	}
	size := binary.LittleEndian.Uint32(n[:])
	if size > handoverLimit {
		return h, fmt.Errorf("state of %d bytes: too large", size)
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(size)))
	if err == nil && len(data) < int(size) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return h, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(data, &h); err != nil {
		return h, fmt.Errorf("decode state: %w", err)
	}
	if h.NumFds < 0 || h.NumFds > maxHandoverFds {
		return h, fmt.Errorf("decode state: %d descriptors announced, at most %d", h.NumFds, maxHandoverFds)
	}
	return h, nil
}

// checkFdIndexes: every descriptor index of h is -1 (none) or names one of
// its NumFds descriptors, and none is named twice.
func (h *Handover) checkFdIndexes() error {
	used := map[int]string{}
	check := func(i int, what string) error {
		switch {
		case i == -1:
			return nil
		case i < 0 || i >= h.NumFds:
			return fmt.Errorf("%s: descriptor %d of %d", what, i, h.NumFds)
		case used[i] != "":
			return fmt.Errorf("%s: descriptor %d is also %s's", what, i, used[i])
		}
		used[i] = what
		return nil
	}
	var errs []error
	for _, l := range h.Listeners {
		errs = append(errs, check(l.Fd, "listener "+l.Spec))
	}
	for _, g := range h.Gens {
		gen := strconv.Itoa(int(g.Gen))
		errs = append(errs, check(g.Pidfd, "pidfd of generation "+gen), check(g.Output, "output of generation "+gen))
	}
	errs = append(errs, check(h.ControlFd, "control socket"), check(h.LockFd, "lock"), check(h.InitFd, "init pipe"), check(h.MetricsFd, "metrics socket"))
	return errors.Join(errs...)
}

// AckHandover tells the old baton the new one serves.
func AckHandover(c *net.UnixConn, pid int) error {
	_, err := fmt.Fprintf(c, "ready %d\n", pid)
	return err
}

func closeFds(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// fdAt returns fds[i] and marks it taken (-1); -1 when i is out of range.
func fdAt(fds []int, i int) int {
	if i < 0 || i >= len(fds) {
		return -1
	}
	fd := fds[i]
	fds[i] = -1
	return fd
}
