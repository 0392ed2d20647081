package proxyctl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHAProxyBindForms reads every supported bind form into specs, with the
// file:line that declares each.
func TestHAProxyBindForms(t *testing.T) {
	cfg := strings.Join([]string{
		"global", // 1
		"    stats socket /run/haproxy.sock mode 600", // 2: not a listener
		"    unix-bind prefix /run/hap/",              // 3
		"frontend a",                                  // 4
		"    bind 127.0.0.1:8080",                     // 5
		"    bind :8081",                              // 6
		"    bind *:8082 # a comment",                 // 7
		"    bind [::]:8083",                          // 8
		"    bind ipv4@:8084,ipv6@:8084 v6only",       // 9
		"    bind ::1:8085 v4v6 backlog 100",          // 10
		".if defined(X)",                              // 11
		"    bind :8086-8088 freebind",                // 12
		".endif",                                      // 13
		"listen b",                                    // 14
		"    bind unix@/run/b.sock mode 660",          // 15
		"    bind /run/c.sock",                        // 16
		"    bind unix@rel.sock",                      // 17
		"    bind \"${ADDR}\"",                        // 18
		"    bind ${HOST-10.0.0.1}:9000",              // 19
		"backend be",                                  // 20
		"    bind 127.0.0.1:1",                        // 21: not a listener section
		"peers p",                                     // 22
		"    bind 127.0.0.1:1024",                     // 23
	}, "\n")
	env := map[string]string{"ADDR": "tcp4@127.0.0.2:9001"}
	cls, err := parseHAProxyBinds([]haproxyConfigFile{{Path: "/etc/h.cfg", Text: cfg}}, env, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"tcp4_127.0.0.1_8080=tcp4://127.0.0.1:8080 @5",
		"tcp4_0.0.0.0_8081=tcp4://0.0.0.0:8081 @6",
		"tcp4_0.0.0.0_8082=tcp4://0.0.0.0:8082 @7",
		"tcp6____8083=tcp6://[::]:8083 @8",
		"tcp4_0.0.0.0_8084=tcp4://0.0.0.0:8084 @9",
		"tcp6____8084=tcp6://[::]:8084?v6only=1 @9",
		"tcp6___1_8085=tcp6://[::1]:8085?backlog=100 @10",
		"tcp4_0.0.0.0_8086=tcp4://0.0.0.0:8086?freebind=1 @12",
		"tcp4_0.0.0.0_8087=tcp4://0.0.0.0:8087?freebind=1 @12",
		"tcp4_0.0.0.0_8088=tcp4://0.0.0.0:8088?freebind=1 @12",
		"unix__run_b.sock=unix:///run/b.sock?mode=0660 @15",
		"unix__run_c.sock=unix:///run/c.sock @16",
		"unix__run_hap_rel.sock=unix:///run/hap/rel.sock @17",
		"tcp4_127.0.0.2_9001=tcp4://127.0.0.2:9001 @18",
		"tcp4_10.0.0.1_9000=tcp4://10.0.0.1:9000 @19",
		"tcp4_127.0.0.1_1024=tcp4://127.0.0.1:1024 @23",
	}
	var got []string
	for _, c := range cls {
		got = append(got, c.Spec.String()+" @"+strings.TrimPrefix(c.Where, "/etc/h.cfg:"))
		if c.Conditional != strings.HasSuffix(got[len(got)-1], "@12") {
			t.Errorf("%s: conditional %t", got[len(got)-1], c.Conditional)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Taking them from the config, baton would bind both branches of a .if
	// before HAProxy reads it: refused, with file:line.
	if err := Unconditional(cls); err == nil || !strings.Contains(err.Error(), "/etc/h.cfg:12:") || strings.Count(err.Error(), ".if block") != 3 {
		t.Errorf("Unconditional: %v; want the three addresses of line 12 refused", err)
	}
}

// TestUncoveredTCPOnly: with --listen, a TCP address it does not cover is
// refused with file:line; unix sockets (HAProxy binds its own, renamed into
// place) and addresses inside .if blocks are left to the proxy.
func TestUncoveredTCPOnly(t *testing.T) {
	cfg := "frontend a\n bind 127.0.0.1:8080\n bind 127.0.0.1:8081\n bind /run/x.sock\n.if defined(X)\n bind 127.0.0.1:8082\n.endif\n"
	cls, err := parseHAProxyBinds([]haproxyConfigFile{{Path: "f", Text: cfg}}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	passed := []Listener{{Spec: cls[0].Spec}}
	err = Uncovered(cls, passed)
	if err == nil || !errors.Is(err, ErrListenerRefused) || !strings.Contains(err.Error(), "f:3: address 127.0.0.1:8081") ||
		strings.Contains(err.Error(), "x.sock") || strings.Contains(err.Error(), "8082") {
		t.Errorf("Uncovered: %v; want only f:3 (127.0.0.1:8081) refused", err)
	}
}

// TestHAProxyBindV6OnlyDefault: an IPv6 bind line without v4v6 takes the
// system's default (HAProxy's match compares IPV6_V6ONLY).
func TestHAProxyBindV6OnlyDefault(t *testing.T) {
	cls, err := parseHAProxyBinds([]haproxyConfigFile{{Path: "f", Text: "listen a\n bind [::]:80\n bind [::]:81 v4v6\n"}}, nil, true)
	if err != nil || len(cls) != 2 || !cls[0].Spec.V6Only || cls[1].Spec.V6Only {
		t.Fatalf("got %+v, %v; want v6only on :80 only", cls, err)
	}
}

// TestHAProxyBindRefusals: what baton cannot hand over is refused with
// file:line and the reason; the other addresses are still returned.
func TestHAProxyBindRefusals(t *testing.T) {
	cases := []struct{ line, want string }{
		{"bind fd@3", "fd@"},
		{"bind sockpair@4", "sockpair@"},
		{"bind abns@x", "abstract unix sockets"},
		{"bind udp@:53", "not supported yet"},
		{"bind quic4@[::1]:443", "IPv4"},
		{"bind localhost:80", "not an IP address"},
		{"bind example.com:80", "not an IP address"},
		{"bind :80 transparent", "transparent"},
		{"bind :80 interface eth0", "interface"},
		{"bind :80 namespace red", "namespace"},
		{"bind /run/x.sock user haproxy", "owner"},
		{"bind 127.0.0.1", "no port"},
		{"bind :0", "port"},
		{"bind :90-80", "port"},
		{"bind :1-2000", "at most"},
		{"bind ipv4@[::1]:80", "IPv4"},
		{"bind ${NOPE}:80", "NOPE is not set"},
		{"bind unix@rel.sock", "absolute path"},
		{"bind bogus@:80", "unknown"},
		{"dgram-bind :514", "UDP"},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			section := "frontend f"
			if strings.HasPrefix(c.line, "dgram") {
				section = "log-forward l"
			}
			text := section + "\n    bind 127.0.0.1:1\n    " + c.line + "\n"
			cls, err := parseHAProxyBinds([]haproxyConfigFile{{Path: "/c/h.cfg", Text: text}}, nil, false)
			if err == nil || !errors.Is(err, ErrListenerRefused) {
				t.Fatalf("no refusal (%v)", err)
			}
			t.Logf("%v", err)
			if !strings.Contains(err.Error(), "/c/h.cfg:3: ") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q lacks /c/h.cfg:3 or %q", err, c.want)
			}
			if len(cls) == 0 || cls[0].Spec.Addr != "127.0.0.1:1" {
				t.Errorf("the good address was not returned: %+v", cls)
			}
		})
	}
}

// TestHAProxyBindQUIC: quic4@ and quic6@ are UDP listeners, one socket per
// address beside the TCP socket of the same port; quic6@ takes v6only as
// an IPv6 TCP bind does (HAProxy's match compares it on UDP too); backlog
// does not apply.
func TestHAProxyBindQUIC(t *testing.T) {
	text := "frontend f\n bind 127.0.0.1:443 ssl crt /c.pem\n bind quic4@127.0.0.1:443 ssl crt /c.pem alpn h3 backlog 10\n bind quic6@[::1]:443 ssl crt /c.pem\n bind quic6@:8443-8444 v4v6\n"
	cls, err := parseHAProxyBinds([]haproxyConfigFile{{Path: "h.cfg", Text: text}}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cls {
		got = append(got, c.Spec.String()+"@"+c.Where)
	}
	want := []string{
		"tcp4_127.0.0.1_443=tcp4://127.0.0.1:443@h.cfg:2",
		"udp4_127.0.0.1_443=udp4://127.0.0.1:443@h.cfg:3",
		"udp6___1_443=udp6://[::1]:443?v6only=1@h.cfg:4",
		"udp6____8443=udp6://[::]:8443@h.cfg:5",
		"udp6____8444=udp6://[::]:8444@h.cfg:5",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if cls[0].Spec.Key() == cls[1].Spec.Key() {
		t.Errorf("TCP and QUIC on one port share the key %q", cls[0].Spec.Key())
	}
	// --listen udp://127.0.0.1:443 covers the QUIC line, tcp:// does not.
	udp := testListener(t, "udp://127.0.0.1:443", 0)
	tcp := testListener(t, "tcp://127.0.0.1:443", 0)
	if err := Uncovered(cls[:2], []Listener{tcp, udp}); err != nil {
		t.Errorf("Uncovered with tcp:// and udp://: %v", err)
	}
	if err := Uncovered(cls[:2], []Listener{tcp}); err == nil || !strings.Contains(err.Error(), "h.cfg:3: address 127.0.0.1:443") {
		t.Errorf("Uncovered without udp://: %v; want h.cfg:3 refused", err)
	}
}

// TestHAProxyBindDuplicate: two bind lines for one address need two
// sockets; baton hands over one per address.
func TestHAProxyBindDuplicate(t *testing.T) {
	text := "frontend a\n bind :80\nfrontend b\n bind 0.0.0.0:80\n"
	_, err := parseHAProxyBinds([]haproxyConfigFile{{Path: "h.cfg", Text: text}}, nil, false)
	if err == nil || !strings.Contains(err.Error(), "h.cfg:4: ") || !strings.Contains(err.Error(), "already bound at h.cfg:2") {
		t.Fatalf("error %v, want h.cfg:4 already bound at h.cfg:2", err)
	}
}

// TestHAProxyConfigListenersFiles reads the generation's copies in -f
// order (a directory: its *.cfg files) and names the user's files.
func TestHAProxyConfigListenersFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	main, cp := filepath.Join(dir, "main.cfg"), filepath.Join(dir, "copy.cfg")
	write(main, "frontend a\n bind :1\n")
	write(cp, "frontend a\n bind :2\n")
	d := filepath.Join(dir, "conf.d")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(d, "b.cfg"), "frontend b\n\n bind :4\n")
	write(filepath.Join(d, "a.cfg"), "frontend c\n bind :3\n")
	write(filepath.Join(d, "z.txt"), "frontend d\n bind :5\n")
	h, err := NewHAProxy([]string{"/usr/sbin/haproxy", "-f", main, "-f", d})
	if err != nil {
		t.Fatal(err)
	}
	cls, err := h.ConfigListeners(GenSpec{Config: map[string]string{main: cp}}, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cls {
		got = append(got, c.Spec.Addr+"@"+strings.TrimPrefix(c.Where, dir+"/"))
	}
	want := "0.0.0.0:2@main.cfg:2 0.0.0.0:3@conf.d/a.cfg:2 0.0.0.0:4@conf.d/b.cfg:3"
	if strings.Join(got, " ") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}

// TestHAProxyLineWords: quotes, escapes, comments and variables.
func TestHAProxyLineWords(t *testing.T) {
	env := map[string]string{"A": "x y", "P": "80"}
	got, unset := haproxyLine(`  bind "${A}" '$A' \#z :$P #c ${B}`, env)
	want := []string{"bind", "x y", "$A", "#z", ":80"}
	if strings.Join(got, "|") != strings.Join(want, "|") || len(unset) != 0 {
		t.Errorf("got %q %v, want %q", got, unset, want)
	}
}
