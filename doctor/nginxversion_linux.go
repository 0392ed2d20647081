package doctor

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
)

// nginxVersionMarker precedes the version in nginx's `-v` message, a
// string literal every nginx binary carries.
var nginxVersionMarker = []byte("nginx version: nginx/")

// maxExeScan bounds how much of an executable nginxExeVersion reads.
const maxExeScan = 64 << 20

// nginxExeVersion reads the version of the first of pids whose executable
// is nginx, from the executable itself (/proc/PID/exe, read, never run);
// "" when none says.
func nginxExeVersion(pids []int) string {
	for _, pid := range pids {
		if v := exeVersion(fmt.Sprintf("/proc/%d/exe", pid)); v != "" {
			return v
		}
	}
	return ""
}

func exeVersion(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	r := bufio.NewReaderSize(io.LimitReader(f, maxExeScan), 1<<20)
	var carry []byte
	buf := make([]byte, 1<<20)
	for {
		n, err := r.Read(buf)
		chunk := append(carry, buf[:n]...)
		if i := bytes.Index(chunk, nginxVersionMarker); i >= 0 {
			rest := chunk[i+len(nginxVersionMarker):]
			end := 0
			for end < len(rest) && end < 16 && (rest[end] == '.' || rest[end] >= '0' && rest[end] <= '9') {
				end++
			}
			if end > 0 && end < len(rest) {
				return string(rest[:end])
			}
		}
		if err != nil {
			return ""
		}
		keep := min(len(chunk), len(nginxVersionMarker)+16)
		carry = append([]byte(nil), chunk[len(chunk)-keep:]...)
	}
}
