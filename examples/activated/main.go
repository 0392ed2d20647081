// Command activated is a small HTTP server that speaks systemd socket
// activation, as an example of a server baton's generic driver supervises:
//
//	baton run --listen web=tcp://127.0.0.1:8082 -- activated -config /etc/activated.conf
//
// It serves on the sockets it inherits (LISTEN_FDS, from fd 3; LISTEN_PID
// must be its own pid), sends READY=1 to NOTIFY_SOCKET once it serves, and
// on SIGTERM closes its listening sockets and lets every connection end on
// its own (the next request on each is answered with "Connection: close"),
// then exits; SIGINT ends it at once.
//
// A datagram socket (--listen udp://127.0.0.1:5353) is served as a
// DNS-like request/response service: each datagram is answered, to its
// sender, with "gen=N " and the datagram's payload (N is the config's
// version). On SIGTERM it answers the datagrams already queued on its
// socket (under baton, its generation's own member of a steered group,
// which receives no new datagram once the next generation is active), then
// exits.
//
// Its config file holds
// `version=N` and `text=...` lines; `-check` validates the file and exits.
// Standard library only.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	version string
	text    string
}

func main() {
	path := flag.String("config", "", "config file (version=N, text=...)")
	check := flag.Bool("check", false, "validate the config file and exit")
	flag.Parse()
	cfg, err := readConfig(*path)
	if err != nil {
		log.Fatalf("activated: %v", err)
	}
	if *check {
		fmt.Printf("config %s is valid (version %s)\n", *path, cfg.version)
		return
	}
	lns, pcs, err := inherited()
	if err != nil {
		log.Fatalf("activated: %v", err)
	}
	if err := serve(cfg, lns, pcs); err != nil {
		log.Fatalf("activated: %v", err)
	}
}

func readConfig(path string) (config, error) {
	cfg := config{version: "0", text: "hello from a socket-activated server"}
	if path == "" {
		return cfg, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return cfg, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		switch {
		case !ok:
			return cfg, fmt.Errorf("%s:%d: want key=value, got %q", path, n, line)
		case k == "version":
			if _, err := strconv.Atoi(v); err != nil {
				return cfg, fmt.Errorf("%s:%d: version must be a number", path, n)
			}
			cfg.version = v
		case k == "text":
			cfg.text = v
		default:
			return cfg, fmt.Errorf("%s:%d: unknown key %q", path, n, k)
		}
	}
	return cfg, sc.Err()
}

// inherited returns the sockets passed by socket activation: the stream
// ones as listeners, the datagram ones as packet connections. The inherited
// descriptors themselves are closed once wrapped, so that closing the
// listeners really lets go of the sockets.
func inherited() ([]net.Listener, []net.PacketConn, error) {
	if pid, _ := strconv.Atoi(os.Getenv("LISTEN_PID")); pid != os.Getpid() {
		return nil, nil, fmt.Errorf("LISTEN_PID=%q is not my pid %d: not socket-activated", os.Getenv("LISTEN_PID"), os.Getpid())
	}
	n, err := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if err != nil || n < 1 {
		return nil, nil, fmt.Errorf("LISTEN_FDS=%q: no sockets", os.Getenv("LISTEN_FDS"))
	}
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	var lns []net.Listener
	var pcs []net.PacketConn
	for i := range n {
		name := fmt.Sprintf("fd%d", 3+i)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		// The type is read from the descriptor number, before any *os.File
		// wraps it; on an error the listener path below reports what is
		// wrong with the descriptor.
		typ, _ := syscall.GetsockoptInt(3+i, syscall.SOL_SOCKET, syscall.SO_TYPE)
		f := os.NewFile(uintptr(3+i), name)
		if typ == syscall.SOCK_DGRAM {
			pc, err := net.FilePacketConn(f)
			f.Close()
			if err != nil {
				return nil, nil, fmt.Errorf("socket %s: %w", name, err)
			}
			pcs = append(pcs, pc)
			continue
		}
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("socket %s: %w", name, err)
		}
		lns = append(lns, ln)
	}
	return lns, pcs, nil
}

func serve(cfg config, lns []net.Listener, pcs []net.PacketConn) error {
	var conns connTracker
	var draining atomic.Bool
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       10 * time.Second,
		ConnState:         conns.track,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if draining.Load() {
				w.Header().Set("Connection", "close")
			}
			w.Header().Set("X-Gen", cfg.version)
			fmt.Fprintf(w, "%s (version %s, pid %d)\n", cfg.text, cfg.version, os.Getpid())
		}),
	}
	errc := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { errc <- srv.Serve(ln) }()
	}
	packets := servePackets(cfg.version, pcs)
	if err := notify("READY=1\nSTATUS=serving version " + cfg.version); err != nil {
		log.Printf("activated: sd_notify: %v", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		return err
	case err := <-packets.errc:
		return err
	case sig := <-sigs:
		if sig == syscall.SIGINT {
			return srv.Close()
		}
	}
	perr := packets.drain()
	if err := drain(srv, lns, errc, &conns, &draining); err != nil {
		return err
	}
	return perr
}

// drain stops accepting and lets every connection end on its own: the
// requests in flight and the next request on each idle keep-alive
// connection are answered, with "Connection: close", and the connection
// then closes. (http.Server.Shutdown is not used for this: once it has
// started, net/http closes a connection without an answer when it reads a
// request on it, even the first request of a connection accepted just
// before — under a supervisor that shares the listening socket between
// generations, that drops requests at every reload.)
func drain(srv *http.Server, lns []net.Listener, errc chan error, conns *connTracker, draining *atomic.Bool) error {
	draining.Store(true)
	for _, ln := range lns {
		ln.Close() // the shared socket lives on in the other generations
	}
	for range lns {
		if err := <-errc; err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
	}
	deadline := time.Now().Add(5 * time.Minute)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for conns.open() > 0 && time.Now().Before(deadline) {
		<-tick.C
	}
	return srv.Close()
}

// connTracker counts open connections through http.Server.ConnState.
type connTracker struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (t *connTracker) track(c net.Conn, st http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns == nil {
		t.conns = map[net.Conn]bool{}
	}
	if st == http.StateClosed || st == http.StateHijacked {
		delete(t.conns, c)
	} else {
		t.conns[c] = true
	}
}

func (t *connTracker) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// notify sends an sd_notify message to NOTIFY_SOCKET, if set.
func notify(msg string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}
