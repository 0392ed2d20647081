package proxyctl

import "testing"

// The roles `baton status` gives a generation's processes.
func TestProcessRoles(t *testing.T) {
	n, h := &Nginx{}, &HAProxy{}
	for _, c := range []struct {
		r       ProcessRoles
		leader  bool
		cmdline string
		want    string
	}{
		{n, true, "nginx: master process /usr/sbin/nginx -c /etc/nginx/nginx.conf", "master"},
		{n, false, "nginx: worker process", "worker"},
		{n, false, "nginx: worker process is shutting down", "worker"},
		{n, false, "nginx: cache manager process", "cache manager"},
		{n, false, "nginx: cache loader process", "cache loader"},
		{n, false, "nginx: master process /usr/sbin/nginx", "worker"}, // not the leader: never a second master
		{n, false, "", "worker"},
		{h, true, "/usr/sbin/haproxy -W -db -f cfg", "master"},
		{h, false, "/usr/sbin/haproxy -W -db -f cfg", "worker"},
	} {
		if got := c.r.ProcessRole(c.leader, c.cmdline); got != c.want {
			t.Errorf("%T.ProcessRole(%t, %q) = %q, want %q", c.r, c.leader, c.cmdline, got, c.want)
		}
	}
}
