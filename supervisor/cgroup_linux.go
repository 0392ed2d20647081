package supervisor

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// cgroupTree is baton's cgroup v2 subtree: BASE/baton-ID, where BASE is
// baton's own cgroup and ID its tracking ID, with a child gen-N per
// generation started in it (CLONE_INTO_CGROUP, so even the exec shim runs
// there from its first instruction). No controller is enabled anywhere in
// it: it only groups processes, which none of them can leave without
// privileges, daemonized or not. The loop owns it.
type cgroupTree struct {
	id    string
	off   error    // why the tree is not used (nil: usable as far as known)
	dir   string   // BASE/baton-ID, once created or adopted
	swept []string // subtrees of gone batons removed when this one was made
}

// cgroupName is the subtree's name for a tracking ID.
const cgroupName = "baton-"

// The first Linux with CLONE_INTO_CGROUP.
const cgroupKernelMajor, cgroupKernelMinor = 5, 7

// errCgroupDisabled is why a tree configured off is not used.
var errCgroupDisabled = errors.New("disabled by --no-cgroup")

func newCgroupTree(id string, disabled bool) *cgroupTree {
	t := &cgroupTree{id: id}
	if disabled {
		t.off = errCgroupDisabled
	}
	return t
}

// genDir returns where gen's cgroup is (or would be).
func (t *cgroupTree) genDir(gen lifecycle.Gen) string {
	return filepath.Join(t.dir, "gen-"+strconv.Itoa(int(gen)))
}

// create makes gen's cgroup (and the subtree, on first use) and returns its
// directory and a descriptor of it for CLONE_INTO_CGROUP, owned by the
// caller. first reports that this call decided whether cgroups are used.
func (t *cgroupTree) create(gen lifecycle.Gen) (dir string, fd int, first bool, err error) {
	if t.off != nil {
		return "", -1, false, t.off
	}
	if t.dir == "" {
		first = true
		if err := t.makeSubtree(); err != nil {
			t.off = err
			return "", -1, true, err
		}
	}
	dir = t.genDir(gen)
	err = unix.Mkdir(dir, 0o755)
	if errors.Is(err, unix.ENOENT) {
		// The subtree went (another baton swept it while it was empty):
		// it is made again.
		if err = unix.Mkdir(t.dir, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
			err = unix.Mkdir(dir, 0o755)
		}
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return "", -1, first, fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	fd, err = unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", -1, first, fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	return dir, fd, first, nil
}

func (t *cgroupTree) makeSubtree() error {
	if err := cgroupUsable(); err != nil {
		return err
	}
	base, err := ownCgroup()
	if err != nil {
		return err
	}
	t.swept = sweepCgroups(base)
	dir := filepath.Join(base, cgroupName+t.id)
	if err := unix.Mkdir(dir, 0o755); err != nil {
		// The ID holds this baton's pid and start time: an existing
		// directory is nobody's to take over.
		return fmt.Errorf("create cgroup %s: %w", dir, err)
	}
	t.dir = dir
	return nil
}

// sweepCgroups removes, below base, the subtrees of batons that are gone
// (the pid and start time of the ID name no live process) and in which no
// process runs: what a baton killed and never restarted left. A populated
// one is kept (a restarted baton adopts it; its processes are reported by
// it). It returns what it removed.
func sweepCgroups(base string) []string {
	ents, err := os.ReadDir(base)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		id, ok := strings.CutPrefix(e.Name(), cgroupName)
		if !ok || !e.IsDir() || !validTrackID(id) {
			continue
		}
		f := strings.Split(id, "-")
		pid, _ := strconv.Atoi(f[0])
		if ticks, err := proc.StartTicks(pid); err == nil && strconv.FormatUint(ticks, 10) == f[1] {
			continue // its baton (or the one it was handed to: same ID) may live
		}
		dir := filepath.Join(base, e.Name())
		if populated, err := cgroupPopulated(dir); err != nil || populated {
			continue
		}
		gens, _ := os.ReadDir(dir)
		for _, g := range gens {
			if g.IsDir() && strings.HasPrefix(g.Name(), "gen-") {
				_ = unix.Rmdir(filepath.Join(dir, g.Name()))
			}
		}
		if unix.Rmdir(dir) == nil {
			out = append(out, dir)
		}
	}
	return out
}

// adopt takes over the subtree a previous baton created (path from the
// handover or the state file, id its tracking ID), after checking that it is
// exactly BASE/baton-ID below baton's own cgroup, a directory of a cgroup
// v2 file system. Nothing else is trusted: a path elsewhere is refused.
func (t *cgroupTree) adopt(path, id string) error {
	if t.off != nil {
		return t.off
	}
	if !validTrackID(id) {
		return fmt.Errorf("tracking ID %q: not PID-STARTTIME-RANDOM", id)
	}
	if err := cgroupUsable(); err != nil {
		return err
	}
	base, err := ownCgroup()
	if err != nil {
		return err
	}
	if want := filepath.Join(base, cgroupName+id); path != want {
		return fmt.Errorf("cgroup %q is not %s", path, want)
	}
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fmt.Errorf("cgroup %s: %w", path, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return fmt.Errorf("cgroup %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || sfs.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("%s is no cgroup v2 directory", path)
	}
	t.id, t.dir = id, path
	return nil
}

// adopted returns gen's cgroup in an adopted subtree, "" when it has none.
func (t *cgroupTree) adopted(gen lifecycle.Gen) string {
	if t.dir == "" {
		return ""
	}
	var st unix.Stat_t
	if dir := t.genDir(gen); unix.Lstat(dir, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return dir
	}
	return ""
}

// remove deletes gen's cgroup once it is empty.
func (t *cgroupTree) remove(dir string) error {
	if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}

// leftovers lists the generation cgroups still in the subtree (at exit,
// after every generation was forgotten: remnants of generations that were
// not adopted).
func (t *cgroupTree) leftovers() []string {
	if t.dir == "" {
		return nil
	}
	ents, _ := os.ReadDir(t.dir)
	var out []string
	for _, e := range ents {
		if e.IsDir() && strings.HasPrefix(e.Name(), "gen-") {
			out = append(out, filepath.Join(t.dir, e.Name()))
		}
	}
	return out
}

// close removes the subtree (at exit, not at a handover: the next baton
// adopts it). It fails while a generation's cgroup is left in it.
func (t *cgroupTree) close() error {
	if t.dir == "" {
		return nil
	}
	if err := unix.Rmdir(t.dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", t.dir, err)
	}
	t.dir = ""
	return nil
}

// cgroupPopulated reads "populated" of the cgroup dir's cgroup.events: 0
// once its last process has exited. cgroup.procs stops listing an exiting
// process a moment earlier, and the cgroup cannot be removed before.
func cgroupPopulated(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "populated "); ok {
			return v != "0", nil
		}
	}
	return false, fmt.Errorf("%s/cgroup.events: no populated line", dir)
}

// errNoCgroupKill means the kernel has no cgroup.kill (before 5.14).
var errNoCgroupKill = errors.New("no cgroup.kill")

// cgroupKill SIGKILLs every process of the cgroup dir at once.
func cgroupKill(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, "cgroup.kill"), os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return errNoCgroupKill
	}
	if err != nil {
		return err
	}
	_, err = f.WriteString("1")
	return errors.Join(err, f.Close())
}

// cgroupUsable returns why baton cannot track generations with cgroup v2
// here (nil when it can): no cgroup2 mount holding its cgroup, a
// read-only one, no write access to its cgroup, or a kernel without
// CLONE_INTO_CGROUP.
func cgroupUsable() error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	if v := kernelVersion(unix.ByteSliceToString(u.Release[:])); v[0] < cgroupKernelMajor || v[0] == cgroupKernelMajor && v[1] < cgroupKernelMinor {
		return fmt.Errorf("kernel %d.%d has no CLONE_INTO_CGROUP (Linux 5.7)", v[0], v[1])
	}
	base, err := ownCgroup()
	if err != nil {
		return err
	}
	if err := unix.Access(filepath.Join(base, "cgroup.procs"), unix.W_OK); err != nil {
		return fmt.Errorf("cgroup %s: not writable: %w", base, err)
	}
	return nil
}

// kernelVersion is the major and minor number of a kernel release string.
func kernelVersion(release string) [2]int {
	var v [2]int
	for i, p := range strings.SplitN(release, ".", 3) {
		if i > 1 {
			break
		}
		end := strings.IndexFunc(p, func(r rune) bool { return r < '0' || r > '9' })
		if end >= 0 {
			p = p[:end]
		}
		v[i], _ = strconv.Atoi(p)
	}
	return v
}

// ownCgroup is baton's own cgroup v2 directory ("0::PATH" in
// /proc/self/cgroup, below the cgroup2 mount that holds it).
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return cgroupPath(p)
		}
	}
	return "", errors.New("no cgroup v2 in /proc/self/cgroup")
}

// cgroupPath maps a cgroup v2 path as /proc/PID/cgroup shows it to its
// directory, through the writable cgroup2 mounts of /proc/self/mountinfo.
func cgroupPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") || strings.Contains(p+"/", "/../") {
		return "", fmt.Errorf("cgroup %q is outside this cgroup namespace", p)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	readOnly := false
	for sc.Scan() {
		m, ok := parseMountinfo(sc.Text())
		if !ok || m.fstype != "cgroup2" {
			continue
		}
		rel, ok := strings.CutPrefix(p, strings.TrimSuffix(m.root, "/"))
		if !ok || rel != "" && !strings.HasPrefix(rel, "/") {
			continue
		}
		if m.readOnly {
			readOnly = true
			continue
		}
		return filepath.Join(m.point, rel), nil
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if readOnly {
		return "", fmt.Errorf("cgroup2 holding %s is mounted read-only", p)
	}
	return "", fmt.Errorf("no cgroup2 mount holds %s", p)
}

// mountEntry is what cgroupPath needs of a mountinfo line.
type mountEntry struct {
	root, point, fstype string
	readOnly            bool
}

// parseMountinfo reads "ID PARENT MAJ:MIN ROOT POINT OPTS [OPTIONAL...] -
// FSTYPE SOURCE SUPEROPTS" (proc(5)).
func parseMountinfo(line string) (mountEntry, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	f, g := strings.Fields(pre), strings.Fields(post)
	if !ok || len(f) < 6 || len(g) < 1 {
		return mountEntry{}, false
	}
	ro := false
	for _, o := range strings.Split(f[5], ",") {
		ro = ro || o == "ro"
	}
	return mountEntry{root: unescapeMount(f[3]), point: unescapeMount(f[4]), fstype: g[0], readOnly: ro}, true
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
