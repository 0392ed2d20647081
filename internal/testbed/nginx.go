package testbed

import (
	"fmt"
	"strings"
)

// NginxConfig is an nginx config that answers every request on
// 127.0.0.1:port with 200, a body and an X-Gen header naming version.
// Errors go to stderr (baton logs them); no pid directive (baton then gives
// each generation its own with -g). extraMain and extraHTTP are inserted into the main and
// http contexts, one directive per line.
func NginxConfig(port, version int, extraMain, extraHTTP []string) string {
	var b strings.Builder
	b.WriteString("worker_processes 2;\nerror_log stderr warn;\n")
	for _, l := range extraMain {
		b.WriteString(l + "\n")
	}
	b.WriteString("events { worker_connections 1024; }\nhttp {\n    access_log off;\n    keepalive_timeout 30s;\n")
	for _, l := range extraHTTP {
		b.WriteString("    " + l + "\n")
	}
	fmt.Fprintf(&b, "    server {\n        listen 127.0.0.1:%d;\n", port)
	fmt.Fprintf(&b, "        location / { add_header X-Gen %d always; return 200 \"generation %d\\n\"; }\n    }\n}\n", version, version)
	return b.String()
}
