package supervisor

import (
	"strings"

	"go.uber.org/zap/zapcore"
)

// outputLevel is the log level of one line of a generation's output, from
// the severity tag the proxy put at its head:
//
//   - HAProxy: "[ALERT]    (1234) : ...", "[WARNING]", "[NOTICE]";
//   - nginx's error log: "2026/12/05 12:00:00 [emerg] 1234#1234: ...", and
//     before its log is open "nginx: [emerg] ...".
//
// emerg, alert and crit are errors; warning and warn warnings; notice and
// info information; debug debugging. A line without a tag at its head (a
// tag further on is text, not a severity) is information. The tag is
// returned in lower case ("" without one).
func outputLevel(line string) (zapcore.Level, string) {
	tag, ok := severityTag(line)
	if !ok {
		return zapcore.InfoLevel, ""
	}
	tag = strings.ToLower(tag)
	switch tag {
	case "emerg", "alert", "crit":
		return zapcore.ErrorLevel, tag
	case "warning", "warn":
		return zapcore.WarnLevel, tag
	case "debug":
		return zapcore.DebugLevel, tag
	}
	return zapcore.InfoLevel, tag
}

// severityTag returns the word in the first "[...]" of line when only a
// timestamp ("2026/12/05 12:00:00 ") or "nginx: " comes before it.
func severityTag(line string) (string, bool) {
	head := strings.TrimPrefix(line, "nginx: ")
	open := strings.IndexByte(head, '[')
	if open < 0 || open > 32 {
		return "", false
	}
	for _, c := range head[:open] {
		if !(c >= '0' && c <= '9' || c == '/' || c == ':' || c == ' ' || c == '-' || c == '.') {
			return "", false
		}
	}
	end := strings.IndexByte(head[open:], ']')
	if end < 2 || end > 10 {
		return "", false
	}
	return head[open+1 : open+end], true
}
