package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// newLogger builds baton's logger: JSON (the default, for log pipelines) or
// console, to stderr. A log line that cannot be written (stderr closed, a
// pipe whose reader went away) is dropped: logging never stops baton.
func newLogger(format, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var enc zapcore.Encoder
	opts := []zap.Option{zap.AddCaller()}
	switch format {
	case "json":
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "ts"
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		enc = zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
		opts = append(opts, zap.Development())
	default:
		return nil, fmt.Errorf("--log-format %q: want json or console", format)
	}
	sink := lossySink{os.Stderr}
	opts = append(opts, zap.ErrorOutput(sink))
	return zap.New(zapcore.NewCore(enc, sink, zap.NewAtomicLevelAt(lvl)), opts...), nil
}

// lossySink writes log lines to w and reports every write as done: zap
// would otherwise report a failed write on its error output (stderr again)
// for each line.
type lossySink struct{ w io.Writer }

func (s lossySink) Write(p []byte) (int, error) {
	_, _ = s.w.Write(p)
	return len(p), nil
}

// Sync does nothing: stderr is a pipe or a terminal more often than a file,
// where fsync fails anyway.
func (lossySink) Sync() error { return nil }

// survivePipeClose makes a write to a stdout or stderr whose reader went
// away (`baton run … 2>&1 | head`) fail with EPIPE instead of killing baton
// with SIGPIPE. The Go runtime raises SIGPIPE for such writes on fds 1 and 2
// only while nobody is notified of it. The signal is caught, not ignored,
// so children still start with its default action.
func survivePipeClose() {
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
}
