package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/proxyctl"
)

// syncPidFile writes the pid of active, a generation that just became
// active, into the pid file its configuration names, so that tools
// signalling the pid in that file (logrotate, `nginx -s reopen`) reach the
// generation that serves. Only sessions that implement proxyctl.PidFiler
// name such a file. A failure is logged and changes nothing else. Runs on
// the loop.
func (s *Supervisor) syncPidFile(active *genRuntime) {
	pf, ok := active.session.(proxyctl.PidFiler)
	if !ok {
		return
	}
	path, err := pf.PidFile()
	if err != nil {
		active.log.Warn("pid file not written", zap.Error(err))
	}
	if path == "" {
		if err == nil {
			s.removePidFile() // the configuration names none any more
		}
		return
	}
	pid := active.proc.Pid()
	if err := writePidFile(path, pid); err != nil {
		active.log.Warn("pid file not written", zap.String("path", path), zap.Error(err))
		return
	}
	if s.pidFile.Path != "" && s.pidFile.Path != path {
		s.removePidFile() // the configuration names another file now
	}
	s.pidFile = api.PidFileState{Path: path, Pid: pid}
	active.log.Debug("pid file written", zap.String("path", path))
}

// removePidFile removes the pid file baton wrote, if it still holds the pid
// baton wrote (someone else may own it by now).
func (s *Supervisor) removePidFile() {
	if s.pidFile.Path == "" {
		return
	}
	data, err := os.ReadFile(s.pidFile.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		s.log.Warn("pid file not removed", zap.String("path", s.pidFile.Path), zap.Error(err))
	case bytes.Equal(bytes.TrimSpace(data), []byte(strconv.Itoa(s.pidFile.Pid))):
		if err := os.Remove(s.pidFile.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("pid file not removed", zap.String("path", s.pidFile.Path), zap.Error(err))
		}
	}
	s.pidFile = api.PidFileState{}
}

// writePidFile replaces path with "PID\n", mode 0644, atomically: a temporary
// file in the same directory renamed over it, so a reader never sees it
// missing or half written.
func writePidFile(path string, pid int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".baton-*")
	if err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	_, err = tmp.WriteString(strconv.Itoa(pid) + "\n")
	err = errors.Join(err, tmp.Chmod(0o644), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}
