package api

import "time"

// PidFileState is the user's pid file as baton last wrote it: the path the
// proxy's configuration names (nginx's pid directive) and the pid written
// there. The state file and the handover carry it.
type PidFileState struct {
	Path string `json:"path"`
	Pid  int    `json:"pid"`
}

// ListenerRecord is one line of the listener history (CONTROL.listeners):
// the socket an address had when a baton started with it. A new inode for
// an address that stayed in the configuration means the socket was closed
// and re-created: queued connections were reset and clients saw refusals.
// `baton doctor` reads the history.
type ListenerRecord struct {
	At       time.Time `json:"at"`
	BatonPid int       `json:"baton_pid"`
	Addr     string    `json:"addr"`
	Key      string    `json:"key"`
	Inode    uint64    `json:"inode"`
	// Pending is true from the start of the baton that bound the socket
	// until its first generation served. A record still pending after its
	// baton exited is a socket that never served: a failed first start,
	// whose closing cut off nobody. Records of batons that predate the
	// field read as served.
	Pending bool `json:"pending,omitempty"`
}
