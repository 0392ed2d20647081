package supervisor

import (
	"testing"

	"go.uber.org/zap/zapcore"
)

// Proxy output keeps the proxy's own severity, so that an alerting rule on
// baton's log sees an HAProxy [ALERT] or an nginx [emerg] as an ERROR.
func TestProxyOutputLevel(t *testing.T) {
	tests := []struct {
		line string
		want zapcore.Level
	}{
		{"[ALERT]    (12984) : config : parsing [/etc/haproxy/haproxy.cfg:16] : unknown keyword 'bogus'", zapcore.ErrorLevel},
		{"[EMERG]    (1) : something", zapcore.ErrorLevel},
		{"[WARNING]  (12950) : Exiting Master process...", zapcore.WarnLevel},
		{"[NOTICE]   (12886) : New worker (12889) forked", zapcore.InfoLevel},
		{"2026/12/05 12:00:00 [emerg] 1234#1234: unknown directive \"bogus\" in /etc/nginx/nginx.conf:7", zapcore.ErrorLevel},
		{"nginx: [emerg] unknown directive \"bogus\" in /etc/nginx/nginx.conf:7", zapcore.ErrorLevel},
		{"2026/12/05 12:00:00 [alert] 10#10: worker process 11 exited on signal 9", zapcore.ErrorLevel},
		{"2026/12/05 12:00:00 [crit] 10#10: open() failed", zapcore.ErrorLevel},
		{"2026/12/05 12:00:00 [warn] 10#10: 2000 worker_connections exceed open file resource limit: 1024", zapcore.WarnLevel},
		{"2026/12/05 12:00:00 [notice] 10#10: signal process started", zapcore.InfoLevel},
		{"2026/12/05 12:00:00 [info] 10#10: client closed connection", zapcore.InfoLevel},
		{"2026/12/05 12:00:00 [debug] 10#10: epoll add event", zapcore.DebugLevel},
		{"listening on 127.0.0.1:8080", zapcore.InfoLevel},
		{"request failed [alert] in text", zapcore.InfoLevel},
		{"[haproxy.main()] something", zapcore.InfoLevel},
		{"", zapcore.InfoLevel},
		{"[", zapcore.InfoLevel},
	}
	for _, tc := range tests {
		if got, _ := outputLevel(tc.line); got != tc.want {
			t.Errorf("outputLevel(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}
