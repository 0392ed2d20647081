package proc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// maxLogLine bounds one line of a generation's output as baton logs it:
// the rest of a longer line is dropped, and the logged line ends with a
// marker saying how many bytes were (cutMarker). Lines after it are read
// as usual.
const maxLogLine = 64 << 10

// cutMarker ends a line of which cut bytes were dropped.
func cutMarker(cut int) string {
	return fmt.Sprintf(" [baton: %d more bytes of this line dropped]", cut)
}

// readLines reads r to its end and calls onLine with each line, without its
// "\n" (or "\r\n"), in order. A line longer than limit bytes is passed cut
// to its first limit bytes, with cut the number of bytes dropped (0
// otherwise). A last line without a newline is passed too. Memory is
// bounded by limit plus the read buffer, and time is linear in what r yields, whatever the
// line lengths.
func readLines(r io.Reader, limit int, onLine func(line []byte, cut int)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	cut := 0
	for {
		frag, err := br.ReadSlice('\n')
		ended := len(frag) > 0 && frag[len(frag)-1] == '\n'
		if ended {
			frag = frag[:len(frag)-1]
		}
		take := min(len(frag), limit-len(line))
		line = append(line, frag[:take]...)
		cut += len(frag) - take
		if ended || (err != nil && !errors.Is(err, bufio.ErrBufferFull) && (len(line) > 0 || cut > 0)) {
			if ended && cut == 0 && len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			onLine(line, cut)
			line, cut = line[:0], 0
			if cap(line) > 1<<20 {
				line = nil // do not keep a huge buffer for short lines
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
