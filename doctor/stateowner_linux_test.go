package doctor

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/procfs"
)

const nobody = 65534

// A baton running as another uid than doctor's (doctor as root, baton
// not): its listener history is read, not refused as "owned by uid 65534"
// (its owner is its lock file's, the baton being gone), and a running
// baton's files are expected to be its effective uid's.
func TestRunReadsNonRootBatonHistory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another uid")
	}
	o := hostOptions(t)
	ctl := o.ControlPaths[0]
	rec := `{"at":"2026-01-02T03:04:05Z","baton_pid":1,"addr":"127.0.0.1:80","key":"tcp://127.0.0.1:80","inode":7}` + "\n"
	for name, data := range map[string]string{".lock": "", ".listeners": rec} {
		must(t, os.WriteFile(ctl+name, []byte(data), 0o600))
		must(t, os.Chown(ctl+name, nobody, nobody))
	}
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range r.Notes {
		if strings.Contains(n, ".listeners") {
			t.Errorf("history refused: %s", n)
		}
	}

	sleep := exec.Command("sleep", "30")
	sleep.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	must(t, sleep.Start())
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		t.Fatal(err)
	}
	if got := stateOwner(fs, sleep.Process.Pid, filepath.Join(t.TempDir(), "none.sock")); got != nobody {
		t.Errorf("owner of a baton running as uid %d: %d", nobody, got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
