package proc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxCPUs is how many CPUs a unix.CPUSet holds.
const maxCPUs = len(unix.CPUSet{}) * 64

// ParseCPUList parses a CPU list as Linux writes them (cpuset(7), the
// Cpus_allowed_list of /proc/PID/status): comma-separated CPU numbers and
// ranges, "1" or "0-1,3". An empty list, a reversed range, a CPU given twice
// or a CPU number at or above maxCPUs is an error.
func ParseCPUList(s string) (unix.CPUSet, error) {
	var set unix.CPUSet
	if strings.TrimSpace(s) == "" {
		return set, errors.New("empty CPU list: want CPU numbers and ranges such as 1 or 0-1,3")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		loS, hiS, isRange := strings.Cut(part, "-")
		lo, err := parseCPU(loS, part)
		if err != nil {
			return set, err
		}
		hi := lo
		if isRange {
			if hi, err = parseCPU(hiS, part); err != nil {
				return set, err
			}
			if hi < lo {
				return set, fmt.Errorf("range %q: the first CPU is above the last", part)
			}
		}
		for cpu := lo; cpu <= hi; cpu++ {
			if set.IsSet(cpu) {
				return set, fmt.Errorf("CPU %d given twice", cpu)
			}
			set.Set(cpu)
		}
	}
	return set, nil
}

func parseCPU(s, part string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || strings.HasPrefix(strings.TrimSpace(s), "+") {
		return 0, fmt.Errorf("%q: want a CPU number or a range such as 0-3", part)
	}
	if n >= maxCPUs {
		return 0, fmt.Errorf("%q: CPU %d is above the highest CPU number Linux supports here (%d)", part, n, maxCPUs-1)
	}
	return n, nil
}

// FormatCPUList writes set as a CPU list ("0-1,3").
func FormatCPUList(set unix.CPUSet) string {
	var parts []string
	for cpu := 0; cpu < maxCPUs; cpu++ {
		if !set.IsSet(cpu) {
			continue
		}
		end := cpu
		for end+1 < maxCPUs && set.IsSet(end+1) {
			end++
		}
		if end == cpu {
			parts = append(parts, strconv.Itoa(cpu))
		} else {
			parts = append(parts, strconv.Itoa(cpu)+"-"+strconv.Itoa(end))
		}
		cpu = end
	}
	return strings.Join(parts, ",")
}
