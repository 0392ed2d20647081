package proxyctl

// ReadyNotifier is implemented by sessions that learn of readiness by an
// event (sd_notify READY=1 on the generation's NOTIFY_SOCKET) rather than
// only by probing. The supervisor waits for the channel to close before it
// calls Ready, instead of probing every few milliseconds while the proxy
// parses its configuration; Ready still has the last word. A nil channel
// means the session has no event: probe as usual.
type ReadyNotifier interface {
	ReadyNotified() <-chan struct{}
}
