package supervisor

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/internal/proc"
)

// The user's pid file is replaced whole, mode 0644, "PID\n"; at exit it
// is removed only while it still holds the pid baton wrote.
func TestPidFileWriteAndRemove(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nginx.pid")
	if err := os.WriteFile(path, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writePidFile(path, 4242); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil || string(data) != "4242\n" {
		t.Fatalf("pid file %q, %v; want \"4242\\n\"", data, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d entries in the pid file's directory, want 1 (no temporary file left)", len(ents))
	}

	s := &Supervisor{log: zap.NewNop(), pidFile: api.PidFileState{Path: path, Pid: 4242}}
	if err := os.WriteFile(path, []byte("777\n"), 0o644); err != nil { // someone else's now
		t.Fatal(err)
	}
	s.removePidFile()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("a pid file holding another pid was removed: %v", err)
	}
	s.pidFile = api.PidFileState{Path: path, Pid: 777}
	s.removePidFile()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("baton's own pid file not removed: %v", err)
	}
	if err := writePidFile(filepath.Join(dir, "missing", "x.pid"), 1); err == nil {
		t.Errorf("write into a missing directory: no error")
	}
}

// A command line in an error can be pasted into a shell.
func TestChildErrorQuotesArgv(t *testing.T) {
	e := &childError{Argv: []string{"/usr/sbin/nginx", "-c", "/etc/nginx/nginx.conf", "-g", "pid /x; daemon off;", "it's", ""}, Status: proc.ExitStatus{Code: 1}}
	want := `/usr/sbin/nginx -c /etc/nginx/nginx.conf -g 'pid /x; daemon off;' 'it'\''s' '': exit status 1`
	if got := e.Error(); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
