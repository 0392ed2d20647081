package testbed

import "os"

// WriteFileAtomic replaces path with data through a rename, as editors and
// config management do.
func WriteFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
