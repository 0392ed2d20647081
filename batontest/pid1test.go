package batontest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/proc"
)

// StartBatonArgs runs `baton ARGS...` exactly as given: unlike StartBaton it
// adds no --control or log flags, so that a --config file can give them.
// control is the control socket the arguments name (in the file or on the
// command line); Status, CLI and WaitActive use it. Cleanup stops baton
// (fast) and kills, by pid, anything it left. opt.Shell is not supported.
func StartBatonArgs(t testing.TB, args []string, control string, opt StartOptions) *Baton {
	t.Helper()
	b := newBaton(t, control)
	b.Cmd = exec.Command(b.Bin, args...)
	b.launch()
	t.Cleanup(b.cleanup)
	if !opt.NoWait {
		b.WaitActive(30 * time.Second)
	}
	return b
}

func newBaton(t testing.TB, control string) *Baton {
	b := &Baton{t: t, Bin: BatonBinary(t), Dir: ShortTempDir(t), exited: make(chan struct{}), seen: map[int]bool{}}
	b.Control = control
	if b.Control == "" {
		b.Control = filepath.Join(b.Dir, "b.sock")
	}
	b.LogPath = filepath.Join(b.Dir, "baton.log")
	return b
}

// launch starts b.Cmd in a process group of its own with its output in
// b.LogPath, and waits for it in the background.
func (b *Baton) launch() {
	b.t.Helper()
	logf, err := os.Create(b.LogPath)
	if err != nil {
		b.t.Fatal(err)
	}
	b.Cmd.Stdout, b.Cmd.Stderr = logf, logf
	b.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.Cmd.Start(); err != nil {
		logf.Close()
		b.t.Fatal(err)
	}
	go func() {
		b.waitErr = b.Cmd.Wait()
		logf.Close()
		close(b.exited)
	}()
}

// RawStatus returns the control API's status as JSON, every field included
// (Status keeps only what most tests look at).
func (b *Baton) RawStatus() ([]byte, error) {
	return b.Get("/v1/status")
}

// Get returns the control API's answer to GET path (200 only).
func (b *Baton) Get(path string) ([]byte, error) {
	resp, err := b.httpClient().Get("http://baton" + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return body, nil
}

// NSBaton is a `baton run` started as PID 1 of a new PID namespace, as in a
// container: `unshare --pid --fork --mount-proc --kill-child BATON run ...`.
// The control socket and the listeners are reachable from the test (same
// filesystem and network namespace). The embedded Baton's Cmd is the
// unshare process, whose exit status is baton's (ExitCode); unshare does not
// forward signals, so signal baton with SignalInit. Cleanup SIGKILLs the
// namespace's PID 1 (by its host pid), which ends every process of the
// namespace.
type NSBaton struct {
	*Baton
	// InitPid is baton's host pid: PID 1 of the namespace, the init.
	InitPid int
	// NS names the namespace as /proc/PID/ns/pid reads ("pid:[N]").
	NS string
}

// StartBatonPID1 runs `unshare --pid --fork --mount-proc --kill-child BATON
// run -c DIR/b.sock --log-format console --log-level debug ARGS...` and, unless
// opt.NoWait, waits until a generation is active. It needs root (or user
// namespaces) and util-linux's unshare, which it requires (RequireBinary).
func StartBatonPID1(t testing.TB, args []string, opt StartOptions) *NSBaton {
	t.Helper()
	control := filepath.Join(ShortTempDir(t), "b.sock")
	full := append([]string{"run", "-c", control, "--log-format", "console", "--log-level", "debug"}, args...)
	return StartBatonPID1Args(t, full, control, opt)
}

// StartBatonPID1Args is StartBatonPID1 with baton's arguments as given
// (`unshare ... BATON ARGS...`, e.g. "run", "--config", FILE, ...); control
// is the control socket they name.
func StartBatonPID1Args(t testing.TB, args []string, control string, opt StartOptions) *NSBaton {
	t.Helper()
	unshare := RequireBinary(t, "unshare")
	b := newBaton(t, control)
	full := append([]string{"--pid", "--fork", "--mount-proc", "--kill-child", b.Bin}, args...)
	b.Cmd = exec.Command(unshare, full...)
	b.launch()
	nb := &NSBaton{Baton: b}
	t.Cleanup(nb.cleanup)
	own, _ := os.Readlink("/proc/self/ns/pid")
	_, found := PollUntil(10*time.Second, 5*time.Millisecond, func() bool {
		for _, c := range proc.Children(b.Cmd.Process.Pid) {
			ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c))
			if err != nil || ns == own {
				continue
			}
			if ids, _ := NSPids(c); len(ids) > 1 && ids[len(ids)-1] == 1 {
				nb.InitPid, nb.NS = c, ns
				return true
			}
		}
		return false
	})
	if !found {
		t.Fatalf("unshare (pid %d) started no PID 1 in a new namespace within 10 s\n%s", b.Cmd.Process.Pid, b.LogTail(20))
	}
	if !opt.NoWait {
		b.WaitActive(30 * time.Second)
	}
	return nb
}

// SignalInit sends sig to baton, PID 1 of the namespace, by its host pid.
func (nb *NSBaton) SignalInit(sig syscall.Signal) error {
	if !nb.InNamespace(nb.InitPid) {
		return fmt.Errorf("pid %d is no longer the namespace's init", nb.InitPid)
	}
	return syscall.Kill(nb.InitPid, sig)
}

// InNamespace reports whether host pid pid is a process of the namespace.
func (nb *NSBaton) InNamespace(pid int) bool {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	return err == nil && ns == nb.NS
}

// NSProc is one process of the namespace, seen from the host.
type NSProc struct {
	HostPid int
	NSPid   int    // its pid inside the namespace (the last NSpid field)
	PPid    int    // host pid of its parent
	State   string // from /proc/PID/stat: R, S, Z, ...
	Comm    string
}

// Procs lists every process of the namespace, from a scan of the host's
// /proc (a process is in it when its /proc/PID/ns/pid is the namespace's).
func (nb *NSBaton) Procs() []NSProc {
	ents, _ := os.ReadDir("/proc")
	var out []NSProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !nb.InNamespace(pid) {
			continue
		}
		p, ok := ReadProc(pid)
		if !ok {
			continue
		}
		ids, _ := NSPids(pid)
		if len(ids) > 0 {
			p.NSPid = ids[len(ids)-1]
		}
		out = append(out, p)
	}
	return out
}

// HostPid maps a pid inside the namespace (as baton's status shows it) to
// the host pid; 0 if no such process.
func (nb *NSBaton) HostPid(nsPid int) int {
	for _, p := range nb.Procs() {
		if p.NSPid == nsPid {
			return p.HostPid
		}
	}
	return 0
}

// ReadProc reads pid's state, parent and command name from /proc/PID/stat.
func ReadProc(pid int) (NSProc, bool) {
	st, err := proc.ReadStat(pid)
	if err != nil {
		return NSProc{}, false
	}
	return NSProc{HostPid: pid, PPid: st.PPid, State: string(st.State), Comm: st.Comm}, true
}

// NSPids returns the NSpid line of /proc/PID/status: pid's id in each PID
// namespace it belongs to, outermost first.
func NSPids(pid int) ([]int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "NSpid:")
		if !ok {
			continue
		}
		var ids []int
		for _, f := range strings.Fields(rest) {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("NSpid %q: %w", rest, err)
			}
			ids = append(ids, n)
		}
		return ids, nil
	}
	return nil, errors.New("no NSpid line")
}

// cleanup ends the namespace: SIGKILL to its PID 1 (the kernel then kills
// every other process of the namespace), or, when the init is unknown, to
// unshare (--kill-child passes the SIGKILL on). Both by pid.
func (nb *NSBaton) cleanup() {
	select {
	case <-nb.exited:
	default:
		if nb.InitPid > 0 && nb.InNamespace(nb.InitPid) {
			_ = syscall.Kill(nb.InitPid, syscall.SIGKILL)
		} else {
			_ = nb.Cmd.Process.Kill()
		}
		select {
		case <-nb.exited:
		case <-time.After(15 * time.Second):
			_ = nb.Cmd.Process.Kill()
			<-nb.exited
		}
	}
	if nb.t.Failed() {
		nb.t.Logf("baton (PID 1) log tail:\n%s", nb.LogTail(60))
	}
}
