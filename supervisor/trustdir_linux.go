package supervisor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// ErrUntrustedPath means baton refused a path another user could write:
// the control directory (where the lock, the state and history files and
// the run directory live), the lock file or the run directory.
var ErrUntrustedPath = errors.New("untrusted path")

// CheckControlDir verifies that only baton's own uid (the effective one)
// can change what is in dir, the directory of the control socket: dir must
// be a directory owned by baton's uid and not group- or world-writable,
// and every directory above it owned by root or by baton's uid and, when
// others may write it, sticky (as /tmp is: nobody can then rename or
// remove an entry they do not own). Symbolic links are resolved first: it
// returns the directory's real path, which the caller uses from then on,
// so that a link nobody checked cannot be re-pointed later.
func CheckControlDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("control directory %s: %w", dir, err)
	}
	euid := os.Geteuid()
	st, err := os.Lstat(real)
	if err != nil {
		return "", fmt.Errorf("control directory %s: %w", real, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%w: control directory %s is not a directory", ErrUntrustedPath, real)
	}
	if uid := ownerOf(st); uid != euid {
		return "", fmt.Errorf("%w: control directory %s is owned by uid %d, not by baton's uid %d: that user could replace baton's lock, state file and run directory there; fix: chown %d %s && chmod go-w %s, or choose another --control directory",
			ErrUntrustedPath, real, uid, euid, euid, real, real)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return "", fmt.Errorf("%w: control directory %s is group- or world-writable (mode %04o): another user could replace baton's lock, state file and run directory there; fix: chmod go-w %s, or choose another --control directory",
			ErrUntrustedPath, real, st.Mode().Perm(), real)
	}
	for p := filepath.Dir(real); ; p = filepath.Dir(p) {
		if err := checkAncestor(p, euid); err != nil {
			return "", err
		}
		if p == "/" {
			break
		}
	}
	return real, nil
}

// checkAncestor checks one directory above the control directory: whoever
// can write it can rename the control directory away and put their own in
// its place.
func checkAncestor(p string, euid int) error {
	st, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("directory %s above the control directory: %w", p, err)
	}
	uid := ownerOf(st)
	if uid != 0 && uid != euid {
		return fmt.Errorf("%w: directory %s above the control directory is owned by uid %d (neither root nor baton's uid %d), who could move the control directory away; fix: chown root %s, or choose another --control directory",
			ErrUntrustedPath, p, uid, euid, p)
	}
	if st.Mode().Perm()&0o022 != 0 && st.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("%w: directory %s above the control directory is group- or world-writable without the sticky bit (mode %04o): another user could move the control directory away; fix: chmod go-w %s (or chmod +t %s), or choose another --control directory",
			ErrUntrustedPath, p, st.Mode().Perm(), p, p)
	}
	return nil
}

// ownerOf is the uid owning the file st describes.
func ownerOf(st os.FileInfo) int {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return int(sys.Uid)
	}
	return -1
}
