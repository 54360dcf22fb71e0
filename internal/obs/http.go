// Package obs serves what the binaries expose for operators: Prometheus
// metrics and health endpoints on one listener (--metrics-listen), and
// OpenTelemetry tracing set up from the standard OTEL_* variables.
package obs

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/internal/promx"
	"github.com/jetflow/jetflow/jetstream"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// ClientCollector exposes the state of a connection to NATS.
func ClientCollector(client *jetstream.Client) prometheus.Collector {
	return promx.Collectors{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "jetflow_nats_connected", Help: "1 while the connection to NATS is up, else 0.",
		}, func() float64 {
			if client.Connected() {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "jetflow_nats_reconnects_total", Help: "Times the connection to NATS was re-established.",
		}, func() float64 { return float64(client.Reconnects()) }),
	}
}

// Readiness is what /readyz answers from: not ready until Set, then
// ready while every check set returns nil.
type Readiness struct {
	checks atomic.Pointer[[]func() error]
}

// ErrStarting is the readiness of a process that has not set its checks:
// it is connecting, provisioning or binding.
var ErrStarting = errors.New("starting: connecting to NATS, provisioning or binding")

// Set replaces the checks.
func (r *Readiness) Set(checks ...func() error) { r.checks.Store(&checks) }

// Check returns the first failing check's error, ErrStarting before Set,
// or nil.
func (r *Readiness) Check() error {
	cs := r.checks.Load()
	if cs == nil {
		return ErrStarting
	}
	for _, c := range *cs {
		if err := c(); err != nil {
			return err
		}
	}
	return nil
}

// Handler serves /metrics (Prometheus text format) from g, /healthz
// (200 while the process serves at all) and /readyz (200 when ready
// returns nil, else 503 with its error).
func Handler(g prometheus.Gatherer, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, err)
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
	return mux
}

// Serve listens on addr and serves h until ctx ends. It returns the
// address it listens on (addr may have port 0) once it listens.
func Serve(ctx context.Context, addr string, h http.Handler, log zerolog.Logger) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener (--metrics-listen, JETFLOW_METRICS_LISTEN): %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn().Err(err).Msg("metrics server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx) // past its timeout, open scrapes are cut: nothing to report
	}()
	log.Info().Str("addr", ln.Addr().String()).Msg("serving /metrics, /healthz and /readyz")
	return ln.Addr(), nil
}
