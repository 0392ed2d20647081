package proc

import (
	"os"
	"testing"
)

// The command name may hold spaces and parentheses: the fields are read
// after the last ')'.
func TestParseStat(t *testing.T) {
	line := "4242 (a b) (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 123456 1000 100 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{State: 'S', Comm: "a b) (c)", PPid: 17, Pgrp: 4242, CPUTicks: 12, StartTicks: 123456}
	if st != want {
		t.Errorf("parseStat = %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "4242 no parens", "4242 (x) S 1 2"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestParentPidOfSelf(t *testing.T) {
	if got := ParentPid(os.Getpid()); got != os.Getppid() {
		t.Errorf("ParentPid(self) = %d, want %d", got, os.Getppid())
	}
	if got := ParentPid(-1); got != 0 {
		t.Errorf("ParentPid(-1) = %d, want 0", got)
	}
}
