package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// writeFileAtomic replaces path with data (mode 0600): it writes a new
// file PATH.tmp, created with O_EXCL|O_NOFOLLOW (a stale one is unlinked
// first; a symbolic link there is never followed), syncs it and renames it
// over path. On any failure (a full disk) the temporary file is removed
// and path is left as it was.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := createExclusive(tmp)
	if errors.Is(err, os.ErrExist) {
		// Left by a baton that died while writing: in baton's own
		// directory, so baton's; unlink it (a link is not followed).
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", tmp, rerr)
		}
		f, err = createExclusive(tmp)
	}
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func createExclusive(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EEXIST) {
		return nil, os.ErrExist
	}
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// readOwnFile reads a file baton wrote (see openOwnFile), refusing one
// larger than limit bytes.
func readOwnFile(path string, limit int64) ([]byte, error) {
	return readOwnedFile(path, os.Geteuid(), limit)
}

// readOwnedFile is readOwnFile for a file of uid owner (openOwnedFile).
func readOwnedFile(path string, owner int, limit int64) ([]byte, error) {
	f, err := openOwnedFile(path, owner)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}
