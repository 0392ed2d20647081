package supervisor

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Limits of the metrics server: a scrape reads /proc and sock_diag (one at
// a time, see gatherProcs), well within the write timeout. Its connections
// are capped apart from the control server's, so that scrapers, or anyone
// who can reach the port, can never starve `baton reload`.
const (
	metricsMaxConns          = 16
	metricsReadHeaderTimeout = 5 * time.Second
	metricsReadTimeout       = 10 * time.Second
	metricsWriteTimeout      = 30 * time.Second
	metricsIdleTimeout       = 60 * time.Second
)

// MetricsServer serves m's registry at /metrics over HTTP.
type MetricsServer struct {
	srv *http.Server
	log *zap.Logger
}

// NewMetricsServer returns a server for m; Serve starts it.
func NewMetricsServer(m *Metrics, log *zap.Logger) *MetricsServer {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	return &MetricsServer{log: log, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: metricsReadHeaderTimeout,
		ReadTimeout:       metricsReadTimeout,
		WriteTimeout:      metricsWriteTimeout,
		IdleTimeout:       metricsIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ConnState:         connState,
		ErrorLog:          zap.NewStdLog(log.With(zap.String("server", "metrics"))),
	}}
}

// Serve serves on ln (which it closes) until Shutdown.
func (s *MetricsServer) Serve(ln net.Listener) error {
	err := s.srv.Serve(newConnLimit(ln, metricsMaxConns, "metrics", nil, s.log))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for running scrapes, up to ctx.
func (s *MetricsServer) Shutdown(ctx context.Context) error {
	return s.srv.Shutdown(ctx)
}
