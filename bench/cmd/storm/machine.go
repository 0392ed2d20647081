package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine describes where the bench ran.
type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemoryMB  int    `json:"memory_mb"`
	Kernel    string `json:"kernel"`
	OS        string `json:"os"`
	Go        string `json:"go"`
	HAProxy   string `json:"haproxy"`
	Nginx     string `json:"nginx"`
	Baton     string `json:"baton"`
	Nofile    string `json:"nofile_bench"`
	LoadStart string `json:"loadavg_start"`
	LoadEnd   string `json:"loadavg_end"`
	// OtherCPU is the CPU time the machine spent on processes that were
	// not the bench's (other people's work, and the -sf method's daemons,
	// which init reaps) during the run, in seconds and in percent of all
	// the CPUs' time.
	OtherCPUS   float64 `json:"other_cpu_s"`
	OtherCPUPct float64 `json:"other_cpu_pct"`
}

func describeMachine(ctx context.Context, e *env) machine {
	m := machine{
		CPUs:      runtime.NumCPU(),
		CPUModel:  cpuModel(),
		MemoryMB:  memTotalMB(),
		Kernel:    strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		OS:        osName(),
		Go:        runtime.Version(),
		HAProxy:   firstLine(commandOutput(ctx, e.haproxy, "-v")),
		Nginx:     firstLine(commandOutput(ctx, e.nginx, "-v")),
		Baton:     firstLine(commandOutput(ctx, e.baton, "version")),
		Nofile:    hostNofile(),
		LoadStart: loadAvg(),
	}
	return m
}

func (m machine) oneLine() string {
	return fmt.Sprintf("%d × %s, %d MB, Linux %s, %s, %s, %s; load %s", m.CPUs, m.CPUModel, m.MemoryMB, m.Kernel, m.Go, m.HAProxy, m.Nginx, m.LoadStart)
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(l)
}

func commandOutput(ctx context.Context, argv ...string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return string(out)
}

func cpuModel() string {
	for _, line := range strings.Split(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func memTotalMB() int {
	for _, line := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb / 1024
		}
	}
	return 0
}

func osName() string {
	for _, line := range strings.Split(readFile("/etc/os-release"), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return "Linux"
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	f := strings.Fields(readFile("/proc/loadavg"))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// cpuSnap is the machine's busy and total CPU time and the bench's own
// (with every child it has waited for, which reaped theirs), in ticks.
type cpuSnap struct{ busy, total, self uint64 }

func snapCPU() cpuSnap {
	var c cpuSnap
	line, _, _ := strings.Cut(readFile("/proc/stat"), "\n")
	for i, f := range strings.Fields(line) {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil || i == 0 {
			continue
		}
		c.total += v
		if i != 4 && i != 5 { // idle, iowait
			c.busy += v
		}
	}
	self := readFile("/proc/self/stat")
	st := strings.Fields(self[strings.LastIndexByte(self, ')')+1:])
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		if i < len(st) {
			v, _ := strconv.ParseUint(st[i], 10, 64)
			c.self += v
		}
	}
	return c
}

// otherCPU is the CPU time between a and b that the bench did not use.
func otherCPU(a, b cpuSnap) (seconds, pct float64) {
	busy := float64(b.busy-a.busy) - float64(b.self-a.self)
	busy = max(busy, 0)
	seconds = busy * clockTick.Seconds()
	if b.total > a.total {
		pct = busy / float64(b.total-a.total) * 100
	}
	return round1(seconds), round1(pct)
}
