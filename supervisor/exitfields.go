package supervisor

import (
	"go.uber.org/zap"

	"github.com/batonproxy/baton/internal/proc"
)

// exitFields are the log fields of how a generation's leader ended: status
// (the exit code, 128 + the signal's number when killed) and signal.
func exitFields(st *proc.ExitStatus) []zap.Field {
	if st == nil {
		return nil
	}
	f := []zap.Field{zap.Int("status", st.Code)}
	if st.Signal != 0 {
		f = append(f, zap.String("signal", proc.SignalName(st.Signal)))
	}
	return f
}
