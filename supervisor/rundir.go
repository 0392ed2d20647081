package supervisor

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// runMarker is the file baton writes into every run directory it creates.
// A regular file of baton's uid with this name marks the directory as a
// baton's; its content is the key of the generation markers (see
// markerValue). Nobody but baton's uid can read it.
const runMarker = ".baton-run"

// keyLen is the size of the marker key in bytes (hex in the file).
const keyLen = 32

// RunDir is baton's run directory (CONTROL.d): the generations' private
// directories and the last good config. baton creates it (0700) and
// removes it when it stops; it uses an existing one only if a baton made
// it (the marker file), so that a directory somebody else made (or one of
// the user's, `--control /etc/nginx/conf` next to `conf.d`) is never used
// nor removed.
type RunDir struct {
	Path    string
	key     []byte
	created bool // by this baton, in this start
	marked  bool // an unmarked leftover, marked in this start
}

// OpenRunDir creates the run directory at path, or opens the one a
// previous baton left (after a crash or an upgrade): a real directory (not
// a symbolic link) of baton's uid that no one else may enter (mode 0700)
// holding the marker file. With carryOver (an upgrade: the previous baton
// itself hands over), a directory without the marker (an older baton's) is
// accepted and marked. Without it, a directory without the marker is
// accepted and marked (see Marked) only if everything in it is what baton
// puts there (see leftoverShaped): one an older baton left when it crashed,
// or one a crash left between its creation and its marker. The caller
// holds the control lock, so no running baton uses the directory.
func OpenRunDir(path string, carryOver bool) (*RunDir, error) {
	rd := &RunDir{Path: path}
	err := os.Mkdir(path, 0o700)
	switch {
	case err == nil:
		rd.created = true
		if err := os.Chmod(path, 0o700); err != nil { // the umask may have taken bits away, never added
			return nil, errors.Join(fmt.Errorf("run directory: %w", err), os.Remove(path))
		}
		if rd.key, err = writeMarker(filepath.Join(path, runMarker)); err != nil {
			return nil, errors.Join(fmt.Errorf("run directory: %w", err), os.RemoveAll(path))
		}
		return rd, nil
	case !errors.Is(err, os.ErrExist):
		return nil, fmt.Errorf("run directory: %w", err)
	}
	if err := checkRunDir(path); err != nil {
		return nil, err
	}
	rd.key, err = readRunKey(filepath.Join(path, runMarker))
	if errors.Is(err, os.ErrNotExist) && (carryOver || leftoverShaped(path)) {
		rd.key, err = writeMarker(filepath.Join(path, runMarker))
		rd.marked = err == nil && !carryOver
	}
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: run directory %s exists but no baton created it (no %s inside): baton never uses nor removes a directory it did not create; choose another --control path, or remove it if it is a leftover (rm -r %s)",
			ErrUntrustedPath, path, runMarker, path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: run directory %s: %w; remove it if it is a leftover (rm -r %s), or choose another --control path", ErrUntrustedPath, path, err, path)
	}
	return rd, nil
}

// Marked reports that the directory had no marker and that this start
// marked it (a leftover of a crashed baton, which the caller reports).
func (r *RunDir) Marked() bool { return r.marked }

// leftoverShaped reports whether every entry of path is one baton makes in
// a run directory: generation directories (a positive number), last-good
// and last-good.new, each a real directory of baton's uid. Anything else
// (a user's file, a link) means the directory is not a baton's leftover.
func leftoverShaped(path string) bool {
	ents, err := os.ReadDir(path)
	if err != nil {
		return false
	}
	for _, e := range ents {
		name := e.Name()
		n, err := strconv.Atoi(name)
		gen := err == nil && n > 0 && strconv.Itoa(n) == name
		if !gen && name != "last-good" && name != "last-good.new" {
			return false
		}
		st, err := e.Info()
		if err != nil || !e.IsDir() || ownerOf(st) != os.Geteuid() {
			return false
		}
	}
	return true
}

// checkRunDir refuses an existing run directory that is not a real
// directory of baton's uid closed to everyone else.
func checkRunDir(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	euid := os.Geteuid()
	var bad string
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		bad = "is a symbolic link"
	case !st.IsDir():
		bad = "is not a directory"
	case ownerOf(st) != euid:
		bad = fmt.Sprintf("is owned by uid %d, not by baton's uid %d", ownerOf(st), euid)
	case st.Mode().Perm()&0o077 != 0:
		bad = fmt.Sprintf("has mode %04o (baton creates it 0700)", st.Mode().Perm())
	}
	if bad != "" {
		return fmt.Errorf("%w: run directory %s %s: baton never uses nor removes a directory it did not create; remove it if it is a leftover (rm -r %s), or choose another --control path",
			ErrUntrustedPath, path, bad, path)
	}
	return nil
}

// writeMarker creates the marker file with a new random key.
func writeMarker(path string) ([]byte, error) {
	key := make([]byte, keyLen)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("marker %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	_, err = f.Write([]byte(hex.EncodeToString(key) + "\n"))
	if err = errors.Join(err, f.Close()); err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("marker %s: %w", path, err)
	}
	return key, nil
}

// readRunKey reads the key from a marker file: a regular file of baton's
// uid with one name, opened without following a link.
func readRunKey(path string) ([]byte, error) {
	f, err := openOwnFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 2*keyLen+2))
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(string(trimNewline(data)))
	if err != nil || len(key) != keyLen {
		return nil, fmt.Errorf("marker %s: not a baton key", path)
	}
	return key, nil
}

func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		return b[:n-1]
	}
	return b
}

// openOwnFile opens path for reading if it is a regular file that baton's
// uid owns, that only it may write, and that has no other name; a symbolic
// link is not followed.
func openOwnFile(path string) (*os.File, error) { return openOwnedFile(path, os.Geteuid()) }

// openOwnedFile is openOwnFile for a file of uid owner (another process's
// baton: doctor).
func openOwnedFile(path string, owner int) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, os.ErrNotExist
	}
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link", path)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var bad string
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		bad = "is not a regular file"
	case st.Uid != uint32(owner):
		bad = fmt.Sprintf("is owned by uid %d, not by baton's uid %d", st.Uid, owner)
	case st.Mode&0o022 != 0:
		bad = fmt.Sprintf("is writable by others (mode %04o)", st.Mode&0o7777)
	case st.Nlink != 1:
		bad = fmt.Sprintf("has %d names (a hard link)", st.Nlink)
	}
	if bad != "" {
		unix.Close(fd)
		return nil, fmt.Errorf("%s %s", path, bad)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// genDir is the private directory of generation gen.
func (r *RunDir) genDir(gen lifecycle.Gen) string {
	return filepath.Join(r.Path, strconv.Itoa(int(gen)))
}

// Remove removes the run directory when baton stops, if it is still the
// one baton opened (same marker key): nothing else is ever removed.
func (r *RunDir) Remove() error {
	if _, err := os.Lstat(r.Path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := checkRunDir(r.Path); err != nil {
		return err
	}
	key, err := readRunKey(filepath.Join(r.Path, runMarker))
	if err != nil || !hmac.Equal(key, r.key) {
		return fmt.Errorf("run directory %s not removed: it is no longer the one baton created (marker: %v)", r.Path, err)
	}
	return os.RemoveAll(r.Path)
}

// Discard removes the run directory if this baton created it in this
// start (a start that failed leaves nothing behind); a previous baton's
// is kept for the next start.
func (r *RunDir) Discard() error {
	if !r.created {
		return nil
	}
	return r.Remove()
}

// mac is the marker of generation directory dir: only a holder of the
// key (baton's uid) can compute it.
func (r *RunDir) mac(dir string) string {
	h := hmac.New(sha256.New, r.key)
	h.Write([]byte("baton generation " + dir))
	return hex.EncodeToString(h.Sum(nil)[:16])
}
