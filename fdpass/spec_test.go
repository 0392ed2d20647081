package fdpass_test

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/batonproxy/baton/fdpass"
)

var long107 = "/" + strings.Repeat("a", 106) // the longest unix path sun_path holds

var validSpecs = []struct {
	in   string
	want fdpass.Spec
	key  string
	str  string // String(), when checked exactly
}{
	{
		in:   "tcp://127.0.0.1:8080",
		want: fdpass.Spec{Name: "tcp_127.0.0.1_8080", Scheme: fdpass.TCP, Addr: "127.0.0.1:8080"},
		key:  "stream:127.0.0.1:8080",
		str:  "tcp_127.0.0.1_8080=tcp://127.0.0.1:8080",
	},
	{
		in:   "tcp://:80",
		want: fdpass.Spec{Name: "tcp_0.0.0.0_80", Scheme: fdpass.TCP, Addr: "0.0.0.0:80"},
		key:  "stream:0.0.0.0:80",
	},
	{
		in:   "tcp://127.0.0.1:80/", // a bare trailing slash is tolerated
		want: fdpass.Spec{Name: "tcp_127.0.0.1_80", Scheme: fdpass.TCP, Addr: "127.0.0.1:80"},
	},
	{
		in:   "tcp://[::1]:8080",
		want: fdpass.Spec{Name: "tcp___1_8080", Scheme: fdpass.TCP, Addr: "[::1]:8080"},
		key:  "stream:[::1]:8080",
	},
	{
		in:   "tcp4://127.0.0.1:0",
		want: fdpass.Spec{Name: "tcp4_127.0.0.1_0", Scheme: fdpass.TCP4, Addr: "127.0.0.1:0"},
		key:  "stream:127.0.0.1:0",
	},
	{
		in:   "tcp6://[::1]:443",
		want: fdpass.Spec{Name: "tcp6___1_443", Scheme: fdpass.TCP6, Addr: "[::1]:443"},
		key:  "stream:[::1]:443",
		str:  "tcp6___1_443=tcp6://[::1]:443",
	},
	{
		in:   "tcp6://:443",
		want: fdpass.Spec{Name: "tcp6____443", Scheme: fdpass.TCP6, Addr: "[::]:443"},
	},
	{
		in:   "tcp6://[2001:db8::10]:65535",
		want: fdpass.Spec{Name: "tcp6_2001_db8__10_65535", Scheme: fdpass.TCP6, Addr: "[2001:db8::10]:65535"},
	},
	{
		in:   "udp://127.0.0.1:5353",
		want: fdpass.Spec{Name: "udp_127.0.0.1_5353", Scheme: fdpass.UDP, Addr: "127.0.0.1:5353"},
		key:  "dgram:127.0.0.1:5353",
	},
	{
		in:   "udp4://10.0.0.1:53",
		want: fdpass.Spec{Name: "udp4_10.0.0.1_53", Scheme: fdpass.UDP4, Addr: "10.0.0.1:53"},
		key:  "dgram:10.0.0.1:53",
	},
	{
		in:   "udp6://[::1]:53?v6only=1&freebind=1",
		want: fdpass.Spec{Name: "udp6___1_53", Scheme: fdpass.UDP6, Addr: "[::1]:53", V6Only: true, FreeBind: true},
		key:  "dgram:[::1]:53",
		str:  "udp6___1_53=udp6://[::1]:53?v6only=1&freebind=1",
	},
	{
		in:   "unix:///run/app.sock",
		want: fdpass.Spec{Name: "unix__run_app.sock", Scheme: fdpass.Unix, Addr: "/run/app.sock"},
		key:  "unix:/run/app.sock",
		str:  "unix__run_app.sock=unix:///run/app.sock",
	},
	{
		in:   "unix:///run/app.sock?mode=0660",
		want: fdpass.Spec{Name: "unix__run_app.sock", Scheme: fdpass.Unix, Addr: "/run/app.sock", Mode: 0o660},
		key:  "unix:/run/app.sock",
		str:  "unix__run_app.sock=unix:///run/app.sock?mode=0660",
	},
	{
		in:   "unix:///run/app.sock?mode=600", // octal without the leading 0
		want: fdpass.Spec{Name: "unix__run_app.sock", Scheme: fdpass.Unix, Addr: "/run/app.sock", Mode: 0o600},
	},
	{
		in:   "unix:///run/app.sock?backlog=128",
		want: fdpass.Spec{Name: "unix__run_app.sock", Scheme: fdpass.Unix, Addr: "/run/app.sock", Backlog: 128},
	},
	{
		in:   "long=unix://" + long107,
		want: fdpass.Spec{Name: "long", Scheme: fdpass.Unix, Addr: long107},
	},
	{
		in:   "web=tcp://127.0.0.1:8080",
		want: fdpass.Spec{Name: "web", Scheme: fdpass.TCP, Addr: "127.0.0.1:8080"},
		key:  "stream:127.0.0.1:8080",
		str:  "web=tcp://127.0.0.1:8080",
	},
	{
		in:   "A.b-c_9=udp://127.0.0.1:1",
		want: fdpass.Spec{Name: "A.b-c_9", Scheme: fdpass.UDP, Addr: "127.0.0.1:1"},
	},
	{
		in:   strings.Repeat("n", 64) + "=tcp://127.0.0.1:1",
		want: fdpass.Spec{Name: strings.Repeat("n", 64), Scheme: fdpass.TCP, Addr: "127.0.0.1:1"},
	},
	{
		in:   "web=tcp6://[::1]:443?backlog=1024",
		want: fdpass.Spec{Name: "web", Scheme: fdpass.TCP6, Addr: "[::1]:443", Backlog: 1024},
		str:  "web=tcp6://[::1]:443?backlog=1024",
	},
	{
		in:   "tcp://127.0.0.1:80?backlog=1",
		want: fdpass.Spec{Name: "tcp_127.0.0.1_80", Scheme: fdpass.TCP, Addr: "127.0.0.1:80", Backlog: 1},
	},
	{
		in:   "tcp://127.0.0.1:80?backlog=1048576",
		want: fdpass.Spec{Name: "tcp_127.0.0.1_80", Scheme: fdpass.TCP, Addr: "127.0.0.1:80", Backlog: 1 << 20},
	},
	{
		in:   "tcp6://[::]:80?v6only=true",
		want: fdpass.Spec{Name: "tcp6____80", Scheme: fdpass.TCP6, Addr: "[::]:80", V6Only: true},
	},
	{
		in:   "tcp6://[::]:80?v6only=0",
		want: fdpass.Spec{Name: "tcp6____80", Scheme: fdpass.TCP6, Addr: "[::]:80"},
	},
	{
		in:   "tcp://192.0.2.7:80?freebind=yes",
		want: fdpass.Spec{Name: "tcp_192.0.2.7_80", Scheme: fdpass.TCP, Addr: "192.0.2.7:80", FreeBind: true},
		str:  "tcp_192.0.2.7_80=tcp://192.0.2.7:80?freebind=1",
	},
	{
		in:   "tcp4://127.0.0.1:80?freebind=off",
		want: fdpass.Spec{Name: "tcp4_127.0.0.1_80", Scheme: fdpass.TCP4, Addr: "127.0.0.1:80"},
	},
	{
		in:   "tcp://127.0.0.1:80?defer_accept=5",
		want: fdpass.Spec{Name: "tcp_127.0.0.1_80", Scheme: fdpass.TCP, Addr: "127.0.0.1:80", DeferAccept: 5},
		str:  "tcp_127.0.0.1_80=tcp://127.0.0.1:80?defer_accept=5",
	},
	{
		in:   "tcp://127.0.0.1:80?defer_accept=0",
		want: fdpass.Spec{Name: "tcp_127.0.0.1_80", Scheme: fdpass.TCP, Addr: "127.0.0.1:80"},
	},
	{
		in: "all=tcp6://[::1]:443?defer_accept=30&freebind=on&v6only=yes&backlog=10",
		want: fdpass.Spec{Name: "all", Scheme: fdpass.TCP6, Addr: "[::1]:443",
			Backlog: 10, V6Only: true, FreeBind: true, DeferAccept: 30},
		str: "all=tcp6://[::1]:443?backlog=10&v6only=1&freebind=1&defer_accept=30",
	},
}

func TestParseSpecValid(t *testing.T) {
	for _, tc := range validSpecs {
		t.Run(tc.in, func(t *testing.T) {
			sp, err := fdpass.ParseSpec(tc.in)
			if err != nil {
				t.Fatalf("ParseSpec: %v", err)
			}
			if sp != tc.want {
				t.Fatalf("ParseSpec = %+v, want %+v", sp, tc.want)
			}
			if tc.key != "" && sp.Key() != tc.key {
				t.Errorf("Key() = %q, want %q", sp.Key(), tc.key)
			}
			if tc.str != "" && sp.String() != tc.str {
				t.Errorf("String() = %q, want %q", sp.String(), tc.str)
			}
			checkRoundTrip(t, sp)
		})
	}
}

// checkRoundTrip: ParseSpec(sp.String()) == sp, and String is stable.
func checkRoundTrip(t *testing.T, sp fdpass.Spec) {
	t.Helper()
	again, err := fdpass.ParseSpec(sp.String())
	if err != nil {
		t.Fatalf("ParseSpec(String() = %q): %v", sp.String(), err)
	}
	if again != sp {
		t.Fatalf("round trip through %q: got %+v, want %+v", sp.String(), again, sp)
	}
	if again.String() != sp.String() || again.Key() != sp.Key() {
		t.Fatalf("String/Key not stable: %q/%q then %q/%q", sp.String(), sp.Key(), again.String(), again.Key())
	}
}

func TestSpecIsStream(t *testing.T) {
	for scheme, stream := range map[string]bool{
		"tcp://127.0.0.1:1": true, "tcp4://127.0.0.1:1": true, "tcp6://[::1]:1": true,
		"unix:///x.sock":    true,
		"udp://127.0.0.1:1": false, "udp4://127.0.0.1:1": false, "udp6://[::1]:1": false,
	} {
		if got := mustSpec(t, scheme).IsStream(); got != stream {
			t.Errorf("%s: IsStream() = %v, want %v", scheme, got, stream)
		}
	}
}

// Key names the bound address only: options, names and tcp/tcp4 do not
// change it; the port, the transport and the path do.
func TestSpecKey(t *testing.T) {
	same := [][2]string{
		{"tcp://127.0.0.1:80", "tcp4://127.0.0.1:80"},
		{"tcp://127.0.0.1:80", "web=tcp://127.0.0.1:80?backlog=5&defer_accept=1"},
		{"tcp6://[::1]:80?v6only=1", "tcp://[::1]:80"},
		{"udp://127.0.0.1:53", "udp4://127.0.0.1:53?freebind=1"},
		{"unix:///a.sock", "x=unix:///a.sock?mode=0600"},
	}
	for _, p := range same {
		if a, b := mustSpec(t, p[0]).Key(), mustSpec(t, p[1]).Key(); a != b {
			t.Errorf("Key(%s) = %q, Key(%s) = %q: want equal", p[0], a, p[1], b)
		}
	}
	differ := [][2]string{
		{"tcp://127.0.0.1:80", "tcp://127.0.0.1:81"},
		{"tcp://127.0.0.1:80", "udp://127.0.0.1:80"},
		{"tcp://127.0.0.1:80", "tcp://127.0.0.2:80"},
		{"tcp://0.0.0.0:80", "tcp6://[::]:80"},
		{"unix:///a.sock", "unix:///b.sock"},
	}
	for _, p := range differ {
		if a, b := mustSpec(t, p[0]).Key(), mustSpec(t, p[1]).Key(); a == b {
			t.Errorf("Key(%s) = Key(%s) = %q: want different", p[0], p[1], a)
		}
	}
}

var badSpecs = []struct {
	in      string
	problem string // the message must contain this
}{
	{"", "want [NAME=]SCHEME://ADDRESS"},
	{"127.0.0.1:8080", "want [NAME=]SCHEME://ADDRESS"},
	{"//127.0.0.1:8080", "want [NAME=]SCHEME://ADDRESS"},
	{"tcp:127.0.0.1:8080", "want [NAME=]SCHEME://ADDRESS"},
	{"web=127.0.0.1:8080", "want [NAME=]SCHEME://ADDRESS"},
	{"http://127.0.0.1:80", `unknown scheme "http"`},
	{"sctp://127.0.0.1:80", `unknown scheme "sctp"`},
	{"tcp://localhost:80", `host "localhost": want an IP address`},
	{"tcp6://[fe80::1%25eth0]:80", "want an IP address"},
	{"tcp://127.0.0.1", "want HOST:PORT"},
	{"tcp://::1:80", "want HOST:PORT"},
	{"tcp://127.0.0.1:65536", `port "65536": want 0-65535`},
	{"tcp://127.0.0.1:99999999999999999999", "want 0-65535"},
	{"tcp://127.0.0.1:80/x", "nothing after it but ?OPTIONS"},
	{"tcp://u@127.0.0.1:80", "nothing after it but ?OPTIONS"},
	{"tcp://127.0.0.1:80#f", "nothing after it but ?OPTIONS"},
	{"tcp4://[::1]:80", "tcp4 needs an IPv4 address, got ::1"},
	{"udp4://[::1]:80", "udp4 needs an IPv4 address"},
	{"tcp6://127.0.0.1:80", "tcp6 needs an IPv6 address, got 127.0.0.1"},
	{"udp6://127.0.0.1:80", "udp6 needs an IPv6 address"},
	{"tcp://127.0.0.1:80?mode=0660", `option "mode" does not apply to tcp listeners`},
	{"udp://127.0.0.1:80?mode=0660", `option "mode" does not apply to udp listeners`},
	{"tcp4://127.0.0.1:80?v6only=1", `option "v6only" does not apply to tcp4 listeners`},
	{"tcp://[::1]:80?v6only=1", `option "v6only" does not apply to tcp listeners`},
	{"unix:///a.sock?v6only=1", `option "v6only" does not apply to unix listeners`},
	{"udp://127.0.0.1:53?backlog=10", `option "backlog" does not apply to udp listeners`},
	{"udp6://[::1]:53?backlog=10", `option "backlog" does not apply to udp6 listeners`},
	{"udp://127.0.0.1:53?defer_accept=1", `option "defer_accept" does not apply to udp listeners`},
	{"unix:///a.sock?defer_accept=1", `option "defer_accept" does not apply to unix listeners`},
	{"unix:///a.sock?freebind=1", `option "freebind" does not apply to unix listeners`},
	{"tcp://127.0.0.1:80?reuseport=1", `option "reuseport" does not apply`},
	{"tcp://127.0.0.1:80?backlog=1&backlog=2", "option backlog given 2 times"},
	{"unix:///a.sock?mode=0600&mode=0600", "option mode given 2 times"},
	{"tcp://127.0.0.1:80?backlog=0", `option backlog="0": want an integer from 1 to 1048576`},
	{"tcp://127.0.0.1:80?backlog=1048577", "want an integer from 1 to 1048576"},
	{"tcp://127.0.0.1:80?backlog=many", "want an integer from 1 to 1048576"},
	{"tcp://127.0.0.1:80?backlog", `option backlog=""`},
	{"unix:///a.sock?mode=0888", "octal mode up to 0777"},
	{"unix:///a.sock?mode=01777", "octal mode up to 0777"},
	{"tcp6://[::1]:80?v6only=maybe", "want 1 or 0"},
	{"tcp://127.0.0.1:80?freebind=2", "want 1 or 0"},
	{"tcp://127.0.0.1:80?defer_accept=3601", "want an integer from 0 to 3600"},
	{"tcp://127.0.0.1:80?defer_accept=-1", "want an integer from 0 to 3600"},
	{"=tcp://127.0.0.1:80", `name "" must be 1-64 of [A-Za-z0-9_.-]`},
	{"we b=tcp://127.0.0.1:80", `name "we b" must be`},
	{"web/1=tcp://127.0.0.1:80", `name "web/1" must be`},
	{"é=tcp://127.0.0.1:80", "must be 1-64 of"},
	{strings.Repeat("n", 65) + "=tcp://127.0.0.1:80", "must be 1-64 of"},
	{"unix://run/app.sock", "unix needs an absolute path"},
	{"unix://./app.sock", "unix needs an absolute path"},
	{"unix:app.sock", "want [NAME=]SCHEME://ADDRESS"},
	{"unix://" + long107 + "b", "unix path is 108 bytes, the limit is 107"},
	{"unix://" + long107 + long107, "the limit is 107"},
}

func TestParseSpecErrors(t *testing.T) {
	for _, tc := range badSpecs {
		t.Run(tc.in, func(t *testing.T) {
			sp, err := fdpass.ParseSpec(tc.in)
			if err == nil {
				t.Fatalf("ParseSpec accepted it: %+v", sp)
			}
			if !errors.Is(err, fdpass.ErrBadSpec) {
				t.Errorf("error %q does not wrap ErrBadSpec", err)
			}
			if !strings.Contains(err.Error(), tc.problem) {
				t.Errorf("error %q does not say %q", err, tc.problem)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tc.in)) {
				t.Errorf("error %q does not quote the spec", err)
			}
			if sp != (fdpass.Spec{}) {
				t.Errorf("ParseSpec returned %+v with its error, want the zero Spec", sp)
			}
		})
	}
}

// FuzzParseSpec: ParseSpec never panics, every error wraps ErrBadSpec, and
// every accepted spec has a name and round-trips through String.
//
//	go test -run '^$' -fuzz FuzzParseSpec ./fdpass/
func FuzzParseSpec(f *testing.F) {
	for _, tc := range validSpecs {
		f.Add(tc.in)
	}
	for _, tc := range badSpecs {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sp, err := fdpass.ParseSpec(in)
		if err != nil {
			if !errors.Is(err, fdpass.ErrBadSpec) {
				t.Fatalf("ParseSpec(%q): error %q does not wrap ErrBadSpec", in, err)
			}
			return
		}
		if sp.Name == "" || sp.Addr == "" {
			t.Fatalf("ParseSpec(%q) = %+v: empty name or address", in, sp)
		}
		if strings.Contains(sp.Name, ":") {
			t.Fatalf("ParseSpec(%q): name %q contains ':', the LISTEN_FDNAMES separator", in, sp.Name)
		}
		if sp.Scheme == fdpass.Unix && (!strings.HasPrefix(sp.Addr, "/") || len(sp.Addr) > 107) {
			t.Fatalf("ParseSpec(%q): unix path %q not absolute or too long", in, sp.Addr)
		}
		if sp.Mode&^os.ModePerm != 0 {
			t.Fatalf("ParseSpec(%q): mode %v has more than permission bits", in, sp.Mode)
		}
		checkRoundTrip(t, sp)
	})
}

// The default name derived from any address is one ParseSpec accepts (it
// goes into LISTEN_FDNAMES), so String() round-trips even for unix paths with
// odd bytes or long ones. Found by FuzzParseSpec.
func TestDefaultNameIsValid(t *testing.T) {
	for _, in := range []string{
		"unix:///tmp/a b.sock",
		"unix:///tmp/app+1.sock",
		"unix:///run/" + strings.Repeat("x", 60) + ".sock",
	} {
		t.Run(in, func(t *testing.T) {
			checkRoundTrip(t, mustSpec(t, in))
		})
	}
}

// String escapes unix paths the way ParseSpec decodes them: a path with '?',
// '#' or '%' (given as %3F, %23, %25) round-trips; a NUL (%00), which the
// kernel would cut the path at, is refused. Found by FuzzParseSpec.
func TestUnixPathRoundTrip(t *testing.T) {
	for _, in := range []string{
		"x=unix:///tmp/a%3Fb.sock",
		"x=unix:///tmp/a%23b.sock",
		"x=unix:///tmp/a%2541.sock",
	} {
		t.Run(in, func(t *testing.T) {
			checkRoundTrip(t, mustSpec(t, in))
		})
	}
	if sp, err := fdpass.ParseSpec("x=unix:///tmp/a%00b.sock"); err == nil {
		t.Errorf("a unix path with a NUL byte was accepted: %q", sp.Addr)
	}
}

// A malformed option string is an error, not silently dropped (url.Query
// would ignore "backlog=5;x=1" and give the default backlog).
func TestMalformedOptionsRefused(t *testing.T) {
	for _, in := range []string{
		"tcp://127.0.0.1:80?backlog=5;x=1",
		"tcp://127.0.0.1:80?backlog=%zz",
		"unix:///a.sock?mode=0600;",
	} {
		if sp, err := fdpass.ParseSpec(in); err == nil {
			t.Errorf("ParseSpec(%q) accepted it as %q", in, sp)
		}
	}
}
