package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/batonproxy/baton/supervisor"
)

// metricsAddr is --metrics with the host filled in: without one (":9100")
// baton listens on the loopback address only; every interface takes an
// explicit 0.0.0.0 or [::].
func metricsAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--metrics %q: want [HOST]:PORT", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("--metrics %q: port %q: want 0-65535", addr, port)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// listenMetrics binds --metrics before anything starts, so that a bad or
// busy address is reported at once.
func listenMetrics(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	full, err := metricsAddr(addr)
	if err != nil {
		return nil, usageError{err}
	}
	ln, err := net.Listen("tcp", full)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	return ln, nil
}

// serveMetrics serves /metrics on ln until the returned function is called.
func serveMetrics(ln net.Listener, m *supervisor.Metrics, log *zap.Logger) func() {
	srv := supervisor.NewMetricsServer(m, log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Shutdown ends Serve with ErrServerClosed; a listener closed
		// under it (an upgrade's handover) with net.ErrClosed: neither is
		// an incident.
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Error("metrics server stopped", zap.Error(err))
		}
	}()
	addr := ln.Addr().String()
	// Exposure was asked for explicitly (a host on the command line): an
	// operator's choice, logged at INFO, not an incident.
	switch tcp, _ := ln.Addr().(*net.TCPAddr); {
	case tcp != nil && tcp.IP.IsUnspecified():
		log.Info("serving metrics on every interface: whoever reaches the port can read them", zap.String("addr", addr))
	case tcp != nil && !tcp.IP.IsLoopback():
		log.Info("serving metrics, reachable from other hosts", zap.String("addr", addr))
	default:
		log.Info("serving metrics", zap.String("addr", addr))
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			<-done
		})
	}
}
