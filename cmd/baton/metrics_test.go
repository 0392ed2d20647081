package main

import (
	"net"
	"testing"
)

// --metrics without a host listens on the loopback address only; every
// interface takes an explicit 0.0.0.0 or [::].
func TestMetricsDefaultsToLoopback(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{":9100", "127.0.0.1:9100"},
		{"0.0.0.0:9100", "0.0.0.0:9100"},
		{"[::]:9100", "[::]:9100"},
		{"localhost:9100", "localhost:9100"},
		{"10.1.2.3:9100", "10.1.2.3:9100"},
		{"9100", ""},
		{":99999", ""},
	} {
		got, err := metricsAddr(tc.in)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("metricsAddr(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	ln, err := listenMetrics(":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if a := ln.Addr().(*net.TCPAddr); !a.IP.IsLoopback() {
		t.Errorf("--metrics :0 listens on %s, want a loopback address", a)
	}
}
