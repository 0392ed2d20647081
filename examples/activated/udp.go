package main

import (
	"errors"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// packetServer answers the datagrams of the inherited SOCK_DGRAM sockets:
// each datagram gets one reply, "gen=N " followed by its payload, sent from
// the same socket to its sender. A loop replies to a datagram before it reads
// the next, so a datagram read is a datagram answered.
type packetServer struct {
	conns    []net.PacketConn
	errc     chan error // a read error other than the drain's deadline
	wg       sync.WaitGroup
	draining atomic.Bool
	drainEnd time.Time // set before draining
}

// servePackets starts one loop per socket.
func servePackets(version string, conns []net.PacketConn) *packetServer {
	p := &packetServer{conns: conns, errc: make(chan error, len(conns))}
	for _, c := range conns {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.loop(version, c)
		}()
	}
	return p
}

func (p *packetServer) loop(version string, c net.PacketConn) {
	prefix := "gen=" + version + " "
	buf := make([]byte, len(prefix)+64<<10)
	copy(buf, prefix)
	for {
		n, from, err := c.ReadFrom(buf[len(prefix):])
		if err != nil {
			if !p.draining.Load() || !errors.Is(err, os.ErrDeadlineExceeded) {
				p.errc <- err
			}
			return
		}
		if _, err := c.WriteTo(buf[:len(prefix)+n], from); err != nil {
			log.Printf("activated: reply to %v: %v", from, err)
		}
		if p.draining.Load() {
			// One more quiet period, but never past the drain's end.
			next := time.Now().Add(drainQuiet)
			if next.After(p.drainEnd) {
				next = p.drainEnd
			}
			_ = c.SetReadDeadline(next)
		}
	}
}

// drainQuiet is how long a draining server waits for one more datagram
// before it stops reading; drainMax bounds the whole drain (where the
// socket is shared, as without baton's steering, datagrams keep coming).
const (
	drainQuiet = 50 * time.Millisecond
	drainMax   = 2 * time.Second
)

// drain answers the datagrams already queued on the socket, reading until
// none has come for drainQuiet, and waits until every datagram read is
// answered. Under baton the socket is this generation's own member of a
// steered group: from the moment baton made the next generation active it
// receives no new datagram, so what it reads is what was queued before
// (left unread, those would be lost with the socket). A read deadline
// makes Go's poller fail the next read before it calls recvfrom, so no
// datagram is taken off the socket and then dropped; a recvfrom already
// under way returns its datagram, which the loop answers.
func (p *packetServer) drain() error {
	p.drainEnd = time.Now().Add(drainMax)
	p.draining.Store(true) // after drainEnd: the loops read it once they see this
	for _, c := range p.conns {
		_ = c.SetReadDeadline(time.Now().Add(drainQuiet))
	}
	p.wg.Wait()
	var err error
	for _, c := range p.conns {
		c.Close()
	}
	select {
	case err = <-p.errc:
	default:
	}
	return err
}
