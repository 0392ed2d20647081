package supervisor

import (
	"fmt"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// SignalName is sig as baton logs and prints it: SIGUSR1, SIGWINCH (not the
// C library's description, "user defined signal 1"); "signal N" for a
// number without a name.
func SignalName(sig unix.Signal) string {
	if n := unix.SignalName(sig); n != "" {
		return n
	}
	return fmt.Sprintf("signal %d", int(sig))
}

// String is how the process ended: "exit status 1", or "killed by SIGKILL"
// (Code is then 128 + the signal's number).
func (st ExitStatus) String() string {
	switch {
	case st.Signal != 0:
		return "killed by " + SignalName(st.Signal)
	case st.Code == StatusUnknown:
		return "exit status unknown (a process baton adopted)"
	}
	return fmt.Sprintf("exit status %d", st.Code)
}

// exitFields are the log fields of how a generation's leader ended: status
// (the exit code, 128 + the signal's number when killed) and signal.
func exitFields(st *ExitStatus) []zap.Field {
	if st == nil {
		return nil
	}
	f := []zap.Field{zap.Int("status", st.Code)}
	if st.Signal != 0 {
		f = append(f, zap.String("signal", SignalName(st.Signal)))
	}
	return f
}
