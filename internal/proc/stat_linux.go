package proc

import (
	"bytes"
	"errors"
	"strconv"
)

// Stat is what baton reads of /proc/PID/stat.
type Stat struct {
	State      byte   // R, S, D, Z, T, ...
	Comm       string // the command name, without its parentheses
	PPid       int    // the parent's pid
	Pgrp       int    // the process group
	CPUTicks   uint64 // user+system clock ticks used
	StartTicks uint64 // clock ticks after boot: with the pid, the process's identity
}

// statSize bounds what ReadStat reads of a stat file; the fields it parses
// come well before it.
const statSize = 1024

// ReadStat reads pid's stat with one read(2).
func ReadStat(pid int) (Stat, error) {
	var buf [statSize]byte
	n, err := readFile("/proc/"+strconv.Itoa(pid)+"/stat", buf[:])
	if err != nil {
		return Stat{}, err
	}
	return parseStat(buf[:n])
}

// parseStat parses a stat line. The command name is in parentheses and may
// contain spaces and parentheses: the fields start after the last ')'.
func parseStat(b []byte) (Stat, error) {
	open, i := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || i < open {
		return Stat{}, errors.New("bad /proc stat")
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 20 || len(f[0]) != 1 {
		return Stat{}, errors.New("short /proc stat")
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgrp, err2 := strconv.Atoi(string(f[2]))
	utime, err3 := strconv.ParseUint(string(f[11]), 10, 64)
	stime, err4 := strconv.ParseUint(string(f[12]), 10, 64)
	start, err5 := strconv.ParseUint(string(f[19]), 10, 64)
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		return Stat{}, err
	}
	return Stat{State: f[0][0], Comm: string(b[open+1 : i]), PPid: ppid, Pgrp: pgrp, CPUTicks: utime + stime, StartTicks: start}, nil
}

// ParentPid returns pid's parent pid; 0 when unknown.
func ParentPid(pid int) int {
	st, err := ReadStat(pid)
	if err != nil {
		return 0
	}
	return st.PPid
}

// StartTicks is the start time of pid in clock ticks since boot, which tells
// a process from a later one with the same pid.
func StartTicks(pid int) (uint64, error) {
	st, err := ReadStat(pid)
	return st.StartTicks, err
}

// CPUTicks returns user+system clock ticks pid has used.
func CPUTicks(pid int) (uint64, error) {
	st, err := ReadStat(pid)
	return st.CPUTicks, err
}
