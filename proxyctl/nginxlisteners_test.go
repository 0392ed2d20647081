package proxyctl

import (
	"errors"
	"strings"
	"testing"
)

// TestNginxConfigListeners reads listen directives from an nginx -T dump:
// an address in several server blocks is one listener (first file:line);
// IPv6 is ipv6only unless ipv6only=off; backlog= is the socket's; UDP and
// names are refused with file:line.
func TestNginxConfigListeners(t *testing.T) {
	dump := "nginx: the configuration file /e/n.conf syntax is ok\n" +
		"# configuration file /e/n.conf:\n" +
		"http {\n" + // 1
		" server { listen 8080; listen [::]:8080; }\n" + // 2
		" server { listen 127.0.0.1:8081 backlog=100; listen 8080; listen [::1]:8082 ipv6only=off; }\n" + // 3
		" server { listen unix:/run/n.sock; listen *:8083; }\n" + // 4
		"}\n"
	n := &Nginx{}
	cls, err := n.ConfigListeners(GenSpec{}, dump)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cls {
		got = append(got, c.Spec.String()+"@"+c.Where)
	}
	want := []string{
		"tcp4_0.0.0.0_8080=tcp4://0.0.0.0:8080@/e/n.conf:2",
		"tcp6____8080=tcp6://[::]:8080?v6only=1@/e/n.conf:2",
		"tcp4_127.0.0.1_8081=tcp4://127.0.0.1:8081?backlog=100@/e/n.conf:3",
		"tcp6___1_8082=tcp6://[::1]:8082@/e/n.conf:3",
		"unix__run_n.sock=unix:///run/n.sock@/e/n.conf:4",
		"tcp4_0.0.0.0_8083=tcp4://0.0.0.0:8083@/e/n.conf:4",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	bad := "# configuration file /e/s.conf:\nstream {\n server { listen 53 udp; }\n server { listen localhost:80; }\n}\n"
	_, err = n.ConfigListeners(GenSpec{}, bad)
	if err == nil || !errors.Is(err, ErrListenerRefused) {
		t.Fatalf("no refusal: %v", err)
	}
	for _, w := range []string{"/e/s.conf:2: listen 53 udp: UDP listeners are not supported yet", "/e/s.conf:3: listen localhost:80", "IP address"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}
