package fdpass_test

import (
	"reflect"
	"testing"

	"github.com/batonproxy/baton/fdpass"
)

func TestNginxEnv(t *testing.T) {
	if fdpass.FirstInheritedFd != 3 {
		t.Errorf("FirstInheritedFd = %d, want 3 (SD_LISTEN_FDS_START)", fdpass.FirstInheritedFd)
	}
	// nginx rejects a number without a ';' or ':' after it (notes B1).
	for n, want := range map[int]string{
		1: "NGINX=3;",
		2: "NGINX=3;4;",
		5: "NGINX=3;4;5;6;7;",
	} {
		if got := fdpass.NginxEnv(n); got != want {
			t.Errorf("NginxEnv(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestListenFdsEnv(t *testing.T) {
	for _, tc := range []struct {
		names []string
		want  []string
	}{
		{[]string{"web"}, []string{"LISTEN_FDS=1", "LISTEN_FDNAMES=web"}},
		{[]string{"web", "tcp_127.0.0.1_443", "unix__run_a.sock"},
			[]string{"LISTEN_FDS=3", "LISTEN_FDNAMES=web:tcp_127.0.0.1_443:unix__run_a.sock"}},
	} {
		if got := fdpass.ListenFdsEnv(tc.names); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ListenFdsEnv(%q) = %q, want %q", tc.names, got, tc.want)
		}
	}
}
