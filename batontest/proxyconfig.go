package batontest

import "github.com/batonproxy/baton/internal/testbed"

// HAProxyConfig is testbed.HAProxyConfig: a config that answers every
// request on 127.0.0.1:port itself with 200 and an X-Gen header naming
// version.
func HAProxyConfig(port, version int, extraGlobal, extraDefaults []string) string {
	return testbed.HAProxyConfig(port, version, extraGlobal, extraDefaults)
}

// KeepAliveSafe is testbed.KeepAliveSafe: the HAProxy 2.6 settings that
// keep a reload from losing keep-alive requests.
var KeepAliveSafe = testbed.KeepAliveSafe

// NginxConfig is testbed.NginxConfig: an nginx config that answers every
// request on 127.0.0.1:port with 200 and an X-Gen header naming version.
func NginxConfig(port, version int, extraMain, extraHTTP []string) string {
	return testbed.NginxConfig(port, version, extraMain, extraHTTP)
}
