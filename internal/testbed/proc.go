package testbed

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/batonproxy/baton/internal/proc"
)

// Descendants lists every live descendant of pid (children first).
func Descendants(pid int) []int { return proc.Descendants(pid) }

// FdCount is the number of open descriptors of pid.
func FdCount(pid int) (int, error) {
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/fd")
	return len(ents), err
}

// Nofile reads the "Max open files" soft and hard limits of pid from
// /proc/PID/limits, as the text shows them.
func Nofile(pid int) (soft, hard string, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Max open files") {
			f := strings.Fields(line[len("Max open files"):])
			if len(f) >= 2 {
				return f[0], f[1], nil
			}
		}
	}
	return "", "", errors.New("no Max open files row")
}
