package supervisor

import (
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// connLimit is a net.Listener for an http.Server that keeps at most max
// connections open, so that idle clients cannot take every descriptor
// baton has (the control and metrics servers each have their own, so that
// one cannot starve the other).
//
// A connection is first given to admit, when set (the control socket's
// peer check): a refused one is admit's to answer and close, and never
// counts. When max connections are open, the one that has been idle
// longest (no request read yet, or waiting between keep-alive requests),
// if for at least minEvictIdle, is closed to make room (a client that has
// just connected and not yet written its request, on a loaded machine, is
// not idle: it is slow); when every one is busy with a request (reload
// requests waiting for a slow reload: they are answered together), the new
// connection waits until one is done or goes idle, and the ones after it
// wait in the listening socket's backlog — a legitimate client is never
// reset for arriving when others are being served. Either is logged, at
// most once per capLogEvery, with counts.
//
// The http.Server must report connection states through connState.
type connLimit struct {
	net.Listener
	max   int
	what  string // "control", "metrics": for the log
	admit func(net.Conn) bool
	log   *zap.Logger
	every *logEvery

	mu      sync.Mutex
	open    map[*limitedConn]struct{}
	seq     uint64 // orders connections by when they became idle
	evicted int    // idle connections closed for a new one since the last log
	waited  int    // new connections that waited for a slot since the last log

	// freed is signalled when a connection closes or goes idle; done is
	// closed with the listener.
	freed     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// capLogEvery spaces the log lines about the cap.
const capLogEvery = time.Minute

// minEvictIdle is how long a connection must have been idle to be closed
// for a new one; evictRetry is how often a waiting new connection looks
// again.
const (
	minEvictIdle = time.Second
	evictRetry   = 50 * time.Millisecond
)

func newConnLimit(ln net.Listener, max int, what string, admit func(net.Conn) bool, log *zap.Logger) *connLimit {
	return &connLimit{Listener: ln, max: max, what: what, admit: admit, log: log, every: newLogEvery(capLogEvery), open: map[*limitedConn]struct{}{},
		freed: make(chan struct{}, 1), done: make(chan struct{})}
}

// Close closes the listener and ends a wait for a slot.
func (l *connLimit) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// signalFreed wakes an Accept waiting for a slot.
func (l *connLimit) signalFreed() {
	select {
	case l.freed <- struct{}{}:
	default:
	}
}

// Accept returns the next admitted connection that fits under the cap.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.admit != nil && !l.admit(c) {
			continue
		}
		for {
			lc, victim := l.add(c)
			if victim != nil {
				_ = victim.Conn.Close() // its server goroutine sees the error and ends
			}
			if lc != nil {
				return lc, nil
			}
			t := time.NewTimer(evictRetry)
			select {
			case <-l.freed:
			case <-t.C:
			case <-l.done:
				t.Stop()
				_ = c.Close()
				return nil, net.ErrClosed
			}
			t.Stop()
		}
	}
}

// add registers c, making room by evicting the longest idle connection
// (returned, to be closed outside the lock). It returns nil for c when
// every open connection is busy: c is to wait for a slot.
func (l *connLimit) add(c net.Conn) (*limitedConn, *limitedConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var victim *limitedConn
	if len(l.open) >= l.max {
		now := time.Now()
		for o := range l.open {
			if o.idle && now.Sub(o.idleSince) >= minEvictIdle && (victim == nil || o.idleSeq < victim.idleSeq) {
				victim = o
			}
		}
		if victim == nil {
			l.waited++
			l.logCapLocked()
			return nil, nil
		}
		delete(l.open, victim)
		l.evicted++
		l.logCapLocked()
	}
	l.seq++
	lc := &limitedConn{Conn: c, l: l, idle: true, idleSeq: l.seq, idleSince: time.Now()}
	l.open[lc] = struct{}{}
	return lc, victim
}

func (l *connLimit) logCapLocked() {
	if due, _ := l.every.due(); !due {
		return
	}
	l.log.Warn("connection cap reached", zap.String("server", l.what), zap.Int("max_connections", l.max),
		zap.Int("idle_closed", l.evicted), zap.Int("waited_busy", l.waited))
	l.evicted, l.waited = 0, 0
}

// Open is the number of connections counted against the cap.
func (l *connLimit) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

// connState is the http.Server's ConnState hook.
func connState(c net.Conn, st http.ConnState) {
	lc, ok := c.(*limitedConn)
	if !ok {
		return
	}
	l := lc.l
	l.mu.Lock()
	defer l.mu.Unlock()
	switch st {
	case http.StateNew, http.StateIdle:
		l.seq++
		lc.idle, lc.idleSeq, lc.idleSince = true, l.seq, time.Now()
		l.signalFreed()
	case http.StateActive:
		lc.idle = false
	case http.StateClosed, http.StateHijacked:
		delete(l.open, lc)
		l.signalFreed()
	}
}

// limitedConn is a connection counted by its connLimit until closed.
type limitedConn struct {
	net.Conn
	l         *connLimit
	idle      bool      // guarded by l.mu
	idleSeq   uint64    // guarded by l.mu
	idleSince time.Time // guarded by l.mu
}

// Close closes the connection and frees its place.
func (c *limitedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.open, c)
	c.l.signalFreed()
	c.l.mu.Unlock()
	return c.Conn.Close()
}
