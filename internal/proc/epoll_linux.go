package proc

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// EpollInodes returns the inodes of every file pid has registered in any of
// its epoll sets, from the "tfd: ... ino:HEX" lines of
// /proc/PID/fdinfo/<eventpoll fd>. A listening socket in that set is one the
// process accepts on.
func EpollInodes(pid int) map[uint64]bool {
	out := map[uint64]bool{}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return out
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(info), "\n") {
			if !strings.HasPrefix(line, "tfd:") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if hex, ok := strings.CutPrefix(f, "ino:"); ok {
					if n, err := strconv.ParseUint(hex, 16, 64); err == nil {
						out[n] = true
					}
				}
			}
		}
	}
	return out
}
