package supervisor

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"slices"
	"time"

	"github.com/batonproxy/baton/api"
	"github.com/batonproxy/baton/supervisor/lifecycle"
)

// configHash hashes files in the digest's format; add them in path order.
type configHash struct{ h hash.Hash }

func newConfigHash() configHash { return configHash{sha256.New()} }

func (c configHash) add(path string, data []byte) {
	fmt.Fprintf(c.h, "%s\x00%d\x00", path, len(data))
	c.h.Write(data)
}

func (c configHash) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// racyWindow: a file changed less than this long ago is read again at the
// next status request or scrape.
const racyWindow = 2 * time.Second

// diskDigestCache keeps the last digest of the config files on disk with
// the files' stamps: a status request or scrape reads a file again only
// when its stamp changed (one stat per file otherwise).
type diskDigestCache struct {
	files  []string
	stamps []fileStamp
	sum    string
}

// digest returns the digest of files (sorted) as they are on disk now.
func (c *diskDigestCache) digest(files []string) (string, error) {
	stamps := make([]fileStamp, len(files))
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		stamps[i] = stampOf(fi)
	}
	if c.sum != "" && slices.Equal(files, c.files) && slices.Equal(stamps, c.stamps) {
		return c.sum, nil
	}
	h := newConfigHash()
	for i, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		// Not cached (a zero stamp never matches): a file written between
		// the stat and the read, and a file written lately, whose next
		// write may leave the same size and times (file times are as coarse
		// as the kernel's tick): the "racy" case of git's index.
		fi, err := os.Stat(f)
		if err != nil || stampOf(fi) != stamps[i] || time.Since(stamps[i].mtime) < racyWindow || time.Since(stamps[i].ctime) < racyWindow {
			stamps[i] = fileStamp{}
		}
		h.add(f, data)
	}
	c.files, c.stamps, c.sum = files, stamps, h.sum()
	return c.sum, nil
}

// digestCopies is the digest of config copies (original path → copy)
// under their original paths; "" when one cannot be read.
func digestCopies(files map[string]string) string {
	origs := make([]string, 0, len(files))
	for orig := range files {
		origs = append(origs, orig)
	}
	slices.Sort(origs)
	h := newConfigHash()
	for _, orig := range origs {
		data, err := os.ReadFile(files[orig])
		if err != nil {
			return ""
		}
		h.add(orig, data)
	}
	return h.sum()
}

// gatherConfig completes the snapshot's config status with the digest of
// the files on disk; on the caller's goroutine, with gathering held.
func (s *Supervisor) gatherConfig(cs *api.ConfigStatus) {
	if cs == nil {
		return
	}
	d, err := s.diskDigest.digest(cs.Files)
	if err != nil {
		cs.OnDiskDiffers, cs.OnDiskError = true, err.Error()
		return
	}
	cs.OnDiskDigest, cs.OnDiskDiffers = d, d != cs.AppliedDigest
}

// configStatus is, on the loop, the applied config: the active
// generation's copy (nil when it has none).
func (s *Supervisor) configStatus() *api.ConfigStatus {
	for _, g := range s.m.Generations() {
		if g.State != lifecycle.Active {
			continue
		}
		rt := s.gens[g.Gen]
		if rt == nil || rt.configDigest == "" {
			return nil
		}
		files := make([]string, 0, len(rt.config))
		for orig := range rt.config {
			files = append(files, orig)
		}
		slices.Sort(files)
		return &api.ConfigStatus{Files: files, Gen: int(g.Gen), AppliedDigest: rt.configDigest}
	}
	return nil
}
