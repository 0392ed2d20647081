package doctor

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bounded runs f and fails the test if it has not returned within 5 s (an
// unbounded read of a FIFO nobody writes never returns).
func bounded(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: still reading after 5 s", what)
	}
}

func mkfifo(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "haproxy.cfg")
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// doctor reads only regular files, bounded, at paths other processes name:
// /dev/zero, a FIFO nobody writes, a directory, a symlink to /dev/zero and
// an oversized file are refused at once, saying what they are; a symlink to
// a regular file is read (the proxies follow symlinks).
func TestReadRegularRefuses(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.cfg")
	if err := os.WriteFile(big, make([]byte, 2048), 0o600); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.cfg")
	if err := os.WriteFile(good, []byte("global\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := func(target string) string {
		p := filepath.Join(dir, filepath.Base(target)+".link")
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		path string
		want error
		says string
	}{
		{"/dev/zero", errNotRegular, "a character device"},
		{mkfifo(t), errNotRegular, "a FIFO"},
		{dir, errNotRegular, "a directory"},
		{link("/dev/zero"), errNotRegular, "a character device"},
		{big, errTooLarge, "2048 bytes"},
		{link(good), nil, ""},
	}
	for _, tc := range tests {
		var data []byte
		var err error
		bounded(t, tc.path, func() { data, err = readRegular(tc.path, 1024) })
		if !errors.Is(err, tc.want) || (err != nil && !strings.Contains(err.Error(), tc.says)) {
			t.Errorf("readRegular(%s): %v, want %v saying %q", tc.path, err, tc.want, tc.says)
		}
		if tc.want == nil && string(data) != "global\n" {
			t.Errorf("readRegular(%s) = %q", tc.path, data)
		}
	}
	if _, err := readRegular(filepath.Join(dir, "missing"), 1024); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// startFakeProxy starts the test binary named name (a symlink, so that its
// comm is name) with args, until the test ends; it returns its pid.
func startFakeProxy(t *testing.T, name string, args ...string) int {
	t.Helper()
	return startFakeProxyWith(t, name, nil, args...)
}

// startFakeProxyWith is startFakeProxy with files as the child's
// descriptors 3, 4, ...
func startFakeProxyWith(t *testing.T, name string, files []*os.File, args ...string) int {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), fakeProxyEnv+"=1", "GORACE=atexit_sleep_ms=0")
	cmd.ExtraFiles = files
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// A process of any user named haproxy whose command line names /dev/zero
// or a FIFO as its configuration: doctor (root) does not read either (an
// unbounded read of /dev/zero exhausts memory, of the FIFO never returns),
// notes why, and finishes its run.
func TestRunSkipsDevZeroAndFIFOConfigs(t *testing.T) {
	fifo := mkfifo(t)
	zero := startFakeProxy(t, "haproxy", "-f", "/dev/zero")
	pipe := startFakeProxy(t, "haproxy", "-f", fifo)
	var r Report
	var err error
	start := time.Now()
	bounded(t, "doctor run", func() { r, err = Run(context.Background(), hostOptions(t)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("run in %v", time.Since(start))
	for _, want := range []string{
		"haproxy pid " + itoa(zero) + ": configuration not checked: /dev/zero: not a regular file (a character device): not read",
		"haproxy pid " + itoa(pipe) + ": configuration not checked: " + fifo + ": not a regular file (a FIFO): not read",
	} {
		found := false
		for _, n := range r.Notes {
			found = found || n == want
		}
		if !found {
			t.Errorf("no note %q; notes:\n%s", want, strings.Join(r.Notes, "\n"))
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
