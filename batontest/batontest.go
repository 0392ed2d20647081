// Package batontest holds helpers shared by baton's tests: building and
// running the baton binary, finding the proxies, and reading kernel facts
// (LISTEN sockets, fd counts, process trees, CPU ticks). It imports only
// fdpass (mechanism, no policy) and internal packages, so any test above
// fdpass may use it. What the bench needs as well (the proxies' configs,
// the status view, descendants, fd counts and limits) is in
// internal/testbed, which does not import testing; batontest offers it
// under the same names.
package batontest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/batonproxy/baton/fdpass"
	"github.com/batonproxy/baton/internal/proc"
	"github.com/batonproxy/baton/internal/testbed"
)

// ProxyEnv names the variables that select the proxy binaries the tests
// run (scripts/proxies builds the versions of the matrix): BATON_HAPROXY
// and BATON_NGINX hold a path; unset, the tests run the haproxy and nginx
// on PATH (Debian's).
var ProxyEnv = map[string]string{"haproxy": "BATON_HAPROXY", "nginx": "BATON_NGINX"}

// RequireBinary returns the path of a program the test needs: for haproxy
// and nginx, the one ProxyEnv selects. Missing, it skips the test, except
// under CI where it fails it: CI must run everything.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	if p := os.Getenv(ProxyEnv[name]); ProxyEnv[name] != "" && p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", ProxyEnv[name], p, err)
		}
		return p
	}
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found and CI is set: `make test` installs it", name)
	}
	t.Skipf("%s not installed (make test installs it)", name)
	return ""
}

var (
	buildMu    sync.Mutex
	buildCache = map[string]string{}
)

// ModuleRoot is the repository root (where go.mod is).
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// BatonBinary builds cmd/baton once per test process and returns its path
// (or $BATON_BINARY when set). It is built without -race unless
// BATON_RACE_BINARY=1: under the race runtime every exec of baton (the CLI,
// and the exec shim on each child start) costs tens of milliseconds of CPU,
// which distorts reload timing on a small machine. The race detector covers
// baton's code through the supervisor's in-process tests.
func BatonBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BATON_BINARY"); p != "" {
		return p
	}
	var flags []string
	if os.Getenv("BATON_RACE_BINARY") == "1" {
		flags = append(flags, "-race")
	}
	return BuildBinary(t, "./cmd/baton", flags...)
}

// BuildBinary builds the main package pkg (relative to the module root)
// once per test process and returns the binary's path.
func BuildBinary(t testing.TB, pkg string, flags ...string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	key := pkg + " " + strings.Join(flags, " ")
	if p, ok := buildCache[key]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "baton-bin")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	args := append(append([]string{"build", "-o", out}, flags...), pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = ModuleRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	buildCache[key] = out
	return out
}

// ShortTempDir is a t.TempDir-like directory with a short path, because
// unix socket paths are limited to 107 bytes.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ListenSockets returns the inodes of the TCP sockets in LISTEN state on
// port (IPv4 and IPv6), from the kernel's sock_diag.
func ListenSockets(port int) ([]uint64, error) {
	all, err := fdpass.ListeningTCP()
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, l := range all {
		if int(l.Addr.Port()) == port {
			out = append(out, l.Inode)
		}
	}
	return out, nil
}

// FdCount is the number of open descriptors of pid.
func FdCount(pid int) (int, error) { return testbed.FdCount(pid) }

// Descendants lists every live descendant of pid (children first).
func Descendants(pid int) []int { return proc.Descendants(pid) }

// Alive reports whether pid exists and is not a zombie.
func Alive(pid int) bool {
	st, err := proc.ReadStat(pid)
	return err == nil && st.State != 'Z'
}

// AllGone reports whether none of pids is alive.
func AllGone(pids []int) bool {
	for _, pid := range pids {
		if Alive(pid) {
			return false
		}
	}
	return true
}

// CPUTicks returns user+system clock ticks used by pid.
func CPUTicks(pid int) (uint64, error) { return proc.CPUTicks(pid) }

// Nofile reads the "Max open files" soft and hard limits of pid from
// /proc/PID/limits, as the text shows them.
func Nofile(pid int) (soft, hard string, err error) { return testbed.Nofile(pid) }

// Eventually polls cond every 10 ms until it returns nil or timeout passes;
// then it fails the test with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not after %s: %v", timeout, err)
		}
		timer := time.NewTimer(10 * time.Millisecond)
		<-timer.C
	}
}

// WriteFileAtomic replaces path with data through a rename, as editors and
// config management do.
func WriteFileAtomic(path string, data []byte) error { return testbed.WriteFileAtomic(path, data) }

// ProxyVersion is the version a haproxy or nginx binary reports with -v
// ("2.6.12", "1.31.4"), as numbers; nil when it cannot be read.
func ProxyVersion(bin string) []int {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	s := string(out)
	for _, marker := range []string{"nginx/", "version "} {
		if i := strings.Index(s, marker); i >= 0 {
			s = s[i+len(marker):]
			break
		}
	}
	words := strings.FieldsFunc(s, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	if len(words) == 0 {
		return nil
	}
	var v []int
	for _, f := range strings.SplitN(words[0], ".", 4) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil
		}
		v = append(v, n)
	}
	return v
}

// VersionAtLeast reports whether v is want or later.
func VersionAtLeast(v []int, want ...int) bool {
	for i, w := range want {
		if i >= len(v) || v[i] != w {
			return i < len(v) && v[i] > w
		}
	}
	return true
}
