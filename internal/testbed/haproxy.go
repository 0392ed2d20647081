package testbed

import (
	"fmt"
	"strings"
)

// HAProxyConfig is a config that answers every request on 127.0.0.1:port
// itself with 200, a body and an X-Gen header naming version. It declares
// `resolvers default` with a loopback nameserver (HAProxy 2.6 would
// otherwise connect a UDP socket to the host's resolver). extraGlobal and
// extraDefaults are inserted into those sections (one setting per line).
func HAProxyConfig(port, version int, extraGlobal, extraDefaults []string) string {
	var b strings.Builder
	b.WriteString("global\n    maxconn 4096\n    httpclient.ssl.verify none\n")
	for _, l := range extraGlobal {
		b.WriteString("    " + l + "\n")
	}
	b.WriteString("\nresolvers default\n    nameserver local 127.0.0.1:53\n\n")
	b.WriteString("defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    timeout server 30s\n")
	for _, l := range extraDefaults {
		b.WriteString("    " + l + "\n")
	}
	fmt.Fprintf(&b, "\nfrontend fe\n    bind 127.0.0.1:%d\n", port)
	fmt.Fprintf(&b, "    http-request return status 200 content-type text/plain hdr X-Gen %d string \"generation %d\\n\"\n", version, version)
	return b.String()
}

// KeepAliveSafe are the HAProxy 2.6 settings that keep a reload from
// losing keep-alive requests (see examples/haproxy/haproxy.cfg).
var KeepAliveSafe = struct{ Global, Defaults []string }{
	Global:   nil,
	Defaults: []string{"option idle-close-on-response"},
}
