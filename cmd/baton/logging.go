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

// newLogger builds baton's logger, to stderr: console lines when stderr is
// a terminal (a person reads them), JSON otherwise (a log pipeline does);
// format "json" or "console" chooses. A log line that cannot be written
// (stderr closed, a pipe whose reader went away) is dropped: logging never
// stops baton.
//
// Levels are for alerting rules: incidents at WARN and ERROR, with the
// error's words and no stack trace. Only a programming error (DPanic and
// above) carries one.
func newLogger(format, level string, tty bool) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	enc, err := logEncoder(format, tty)
	if err != nil {
		return nil, err
	}
	sink := lossySink{os.Stderr}
	return zap.New(zapcore.NewCore(enc, sink, zap.NewAtomicLevelAt(lvl)),
		zap.AddStacktrace(zapcore.DPanicLevel), zap.ErrorOutput(sink)), nil
}

// logEncoder is the encoder for --log-format; "" chooses by tty. Neither
// records the caller's source position: a line says what happened in its
// message and fields.
func logEncoder(format string, tty bool) (zapcore.Encoder, error) {
	if format == "" {
		format = "json"
		if tty {
			format = "console"
		}
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	ec.CallerKey = zapcore.OmitKey
	switch format {
	case "json":
		return zapcore.NewJSONEncoder(ec), nil
	case "console":
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		ec.EncodeDuration = zapcore.StringDurationEncoder // "4.001s" for people; JSON keeps seconds
		return zapcore.NewConsoleEncoder(ec), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or console", format)
}

// isTerminal reports whether fd is a terminal.
func isTerminal(fd int) bool {
	_, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	return err == nil
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
