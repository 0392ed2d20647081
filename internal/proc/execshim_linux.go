package proc

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// ExecShimArg is argv[1] of the exec shim: baton re-executes itself
// (/proc/self/exe) with this word, applies the limits of the JSON spec in
// argv[2], and execs the real program, whose pid is then the one baton
// started. This is the only portable way to set rlimits between fork and
// exec in Go (and Go restores its original soft NOFILE in children unless the
// process set it itself — the 1024 incident).
const ExecShimArg = "__baton_exec"

// shimSpec is what the shim applies before exec.
type shimSpec struct {
	Path      string   `json:"path"`
	Argv      []string `json:"argv"`
	Rlimits   []Rlimit `json:"rlimits"`
	ListenPID bool     `json:"listen_pid,omitempty"` // set LISTEN_PID to our own pid
}

// IsExecShim reports whether args (os.Args) ask for the exec shim.
func IsExecShim(args []string) bool {
	return len(args) == 3 && args[1] == ExecShimArg
}

// RunExecShim applies the spec in args[2] and execs; it returns only on
// failure. The caller (cmd/baton, or a test binary's TestMain) prints the
// error and exits 127.
func RunExecShim(args []string) error {
	var sp shimSpec
	if err := json.Unmarshal([]byte(args[2]), &sp); err != nil {
		return fmt.Errorf("baton exec shim: bad spec: %w", err)
	}
	for _, r := range sp.Rlimits {
		// syscall.Setrlimit, not unix: it also tells the Go runtime not to
		// restore its original NOFILE on exec.
		if err := syscall.Setrlimit(r.Resource, &syscall.Rlimit{Cur: r.Soft, Max: r.Max}); err != nil {
			return fmt.Errorf("baton exec shim: setrlimit %s: %w", r, err)
		}
	}
	env := os.Environ()
	if sp.ListenPID {
		env = append(env, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	}
	err := syscall.Exec(sp.Path, sp.Argv, env)
	return fmt.Errorf("baton exec shim: exec %s: %w", sp.Path, err)
}
