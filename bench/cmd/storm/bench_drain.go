package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// drainScale is baton with many generations draining at once.
type drainScale struct {
	Draining int `json:"draining"`
	// Procs is the number of processes baton supervised then.
	Procs int `json:"processes"`
	// Start is baton with one generation; Held with every generation
	// draining.
	Start footprint `json:"baton_start"`
	Held  footprint `json:"baton_held"`
	// Filling: the reloads that made the draining generations; Reload:
	// reloads made with all of them draining.
	Filling durStats `json:"reloads_filling"`
	Reload  durStats `json:"reload_with_draining"`
	// StatusCLI is `baton status` (the command); StatusAPI the control
	// API's GET /v1/status alone.
	StatusCLI durStats `json:"status_cli"`
	StatusAPI durStats `json:"status_api"`
	// Answered is how many held requests got their 200 once released;
	// ExitedMs how long until only the active generation was left.
	Answered int       `json:"held_answered"`
	ExitedMs float64   `json:"all_exited_ms"`
	Left     int       `json:"left_after_release"`
	After    footprint `json:"baton_after"`
}

// slowBackend answers /hold only when released, and anything else at once.
type slowBackend struct {
	ln      net.Listener
	srv     *http.Server
	held    atomic.Int64
	release chan struct{}
	once    sync.Once
}

func newSlowBackend() (*slowBackend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	sb := &slowBackend{ln: ln, release: make(chan struct{})}
	sb.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			sb.held.Add(1)
			select {
			case <-sb.release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = w.Write([]byte("released\n"))
	})}
	go func() { _ = sb.srv.Serve(ln) }()
	return sb, nil
}

func (sb *slowBackend) port() int { return sb.ln.Addr().(*net.TCPAddr).Port }

// free answers every held request.
func (sb *slowBackend) free() { sb.once.Do(func() { close(sb.release) }) }

func (sb *slowBackend) close() {
	sb.free()
	_ = sb.srv.Close()
}

// drainConfig sends everything to the slow backend, with 10-minute
// timeouts so that held requests keep their generation draining.
func drainConfig(port, backend, version int) string {
	cfg := renderConfig(haproxyConfig, port, version)
	cfg = strings.Replace(cfg, "timeout client 30s", "timeout client 10m", 1)
	cfg = strings.Replace(cfg, "timeout server 30s", "timeout server 10m", 1)
	head, _, _ := strings.Cut(cfg, "    http-request return")
	return head + fmt.Sprintf("    http-response set-header X-Gen %d\n    default_backend slow\n\nbackend slow\n    server s1 %s\n", version, addr(backend))
}

// scaleDraining: baton + HAProxy; one request held in flight through each
// generation before the next reload, so every old generation keeps
// draining; then everything is released.
func (b *bench) scaleDraining(ctx context.Context) error {
	sb, err := newSlowBackend()
	if err != nil {
		return err
	}
	defer sb.close()
	n := b.plan.Draining
	bm := newBatonHAProxy(b.e)
	bm.id = "scale-draining"
	bm.extra = []string{"--max-generations", itoa(n + 6), "--drain-timeout", "10m"}
	var port int
	bm.render = func(v int) string { return drainConfig(port, sb.port(), v) }
	if port, err = freePort(); err != nil {
		return err
	}
	if err := bm.Start(ctx, port); err != nil {
		return errors.Join(err, bm.Stop())
	}
	ds := &drainScale{}
	b.rep.Scale.Draining = ds
	var clients []net.Conn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
		if err := bm.Stop(); err != nil {
			b.fail("scale/draining", err)
		}
	}()
	ds.Start, _ = footprintOf(bm.Pid())
	var filling []time.Duration
	for i := 1; i <= n && ctx.Err() == nil; i++ {
		c, err := hold(ctx, port, &sb.held, int64(i))
		if err != nil {
			return fmt.Errorf("hold request %d: %w", i, err)
		}
		clients = append(clients, c)
		t0 := time.Now()
		if _, err := bm.Reload(ctx, i+1); err != nil {
			return fmt.Errorf("reload %d: %w", i, err)
		}
		filling = append(filling, time.Since(t0))
	}
	ds.Filling = summarize(filling)
	return b.measureDraining(ctx, bm, sb, ds, clients, n)
}

// measureDraining measures baton with every generation draining, then
// releases the held requests and waits for the generations to exit.
func (b *bench) measureDraining(ctx context.Context, bm *batonMethod, sb *slowBackend, ds *drainScale, clients []net.Conn, n int) error {
	st, err := bm.status(ctx)
	if err != nil {
		return err
	}
	for _, g := range st.Generations {
		if g.State == "draining" {
			ds.Draining++
		}
		ds.Procs += len(g.Processes)
	}
	ds.Held, _ = footprintOf(bm.Pid())
	cli, _ := timeRuns(ctx, 5, func() error { _, err := statusCLI(ctx, bm.e.baton, bm.ctl); return err })
	api, _ := timeRuns(ctx, 5, func() error { _, err := bm.ctlc.status(ctx); return err })
	ds.StatusCLI, ds.StatusAPI = summarize(cli), summarize(api)
	var reloads []time.Duration
	for v := n + 2; v <= n+4; v++ {
		t0 := time.Now()
		if _, err := bm.Reload(ctx, v); err != nil {
			return fmt.Errorf("reload with %d draining: %w", ds.Draining, err)
		}
		reloads = append(reloads, time.Since(t0))
	}
	ds.Reload = summarize(reloads)
	b.logf("scale/draining: %d draining (%d processes): baton RSS %d kB, %d fds; status %.0f ms (CLI) %.0f ms (API); reload %.0f ms",
		ds.Draining, ds.Procs, ds.Held.RSSKB, ds.Held.Fds, ds.StatusCLI.P50, ds.StatusAPI.P50, ds.Reload.P50)
	released := time.Now()
	sb.free()
	for _, c := range clients {
		if readOK(c) {
			ds.Answered++
		}
	}
	var left int
	pollUntil(60*time.Second, 20*time.Millisecond, func() bool {
		st, err := bm.status(ctx)
		if err != nil {
			return false
		}
		left = len(st.Generations) - 1
		return left == 0 || ctx.Err() != nil
	})
	ds.ExitedMs, ds.Left = ms(time.Since(released)), left
	ds.After, _ = footprintOf(bm.Pid())
	b.logf("scale/draining: released: %d of %d answered, %d generations left after %.0f ms", ds.Answered, len(clients), ds.Left, ds.ExitedMs)
	if ds.Left > 0 {
		return fmt.Errorf("%d old generations still there 60 s after their requests were released", ds.Left)
	}
	return nil
}

// hold opens a connection and sends a /hold request, and waits until the
// backend has it (held reaches want).
func hold(ctx context.Context, port int, held *atomic.Int64, want int64) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr(port))
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte("GET /hold HTTP/1.1\r\nHost: bench\r\n\r\n")); err != nil {
		c.Close()
		return nil, err
	}
	if !pollUntil(10*time.Second, 2*time.Millisecond, func() bool { return held.Load() >= want || ctx.Err() != nil }) {
		c.Close()
		return nil, errTimeout
	}
	return c, nil
}

// readOK reads the held request's response: true for a 200.
func readOK(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
