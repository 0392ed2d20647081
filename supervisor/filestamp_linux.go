package supervisor

import (
	"os"
	"syscall"
	"time"
)

// fileStamp is what says a file was not rewritten since it was read.
type fileStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime time.Time
}

func stampOf(fi os.FileInfo) fileStamp {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return fileStamp{size: fi.Size(), mtime: fi.ModTime()}
	}
	return fileStamp{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: fi.ModTime(), ctime: time.Unix(st.Ctim.Sec, st.Ctim.Nsec)}
}
