package run

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/internal/obs"
)

// MetricsFlag registers --metrics-listen.
func MetricsFlag(fs *pflag.FlagSet) *string {
	return fs.String("metrics-listen", "", "serve Prometheus /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9090 or :9090; empty: off")
}

// NameFlag registers --name.
func NameFlag(fs *pflag.FlagSet, what string) *string {
	return fs.String("name", "", "this "+what+"'s name in the list of jetflow "+what+"s; default <host>-<pid>")
}

// Exposure is a process's metrics listener; a nil Exposure (no
// --metrics-listen) does nothing.
type Exposure struct {
	reg   *prometheus.Registry
	ready obs.Readiness
}

// StartMetrics serves /metrics, /healthz and /readyz on addr until ctx
// ends; /readyz answers 503 until SetReady. Empty addr: nil, off.
func StartMetrics(ctx context.Context, addr string, log zerolog.Logger) (*Exposure, error) {
	if addr == "" {
		return nil, nil
	}
	e := &Exposure{reg: obs.NewRegistry()}
	if _, err := obs.Serve(ctx, addr, obs.Handler(e.reg, e.ready.Check), log); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *Exposure) Register(cs ...prometheus.Collector) error {
	if e == nil {
		return nil
	}
	for _, c := range cs {
		if err := e.reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (e *Exposure) SetReady(checks ...func() error) {
	if e != nil {
		e.ready.Set(checks...)
	}
}

// traceFlushTimeout bounds the flush of buffered spans at exit.
const traceFlushTimeout = 5 * time.Second

// StartTracing sets up OTLP tracing from the OTEL_* variables (nil
// provider: off). stop flushes what is buffered.
func StartTracing(ctx context.Context, service string, log zerolog.Logger) (trace.TracerProvider, func(), error) {
	tp, shutdown, err := obs.Tracer(ctx, service)
	if err != nil {
		return nil, nil, err
	}
	if tp != nil {
		log.Info().Msg("exporting traces over OTLP (OTEL_EXPORTER_OTLP_*)")
	}
	return tp, func() {
		// At exit ctx has ended: keep its values, not its cancellation.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), traceFlushTimeout)
		defer cancel()
		if err := shutdown(sctx); err != nil {
			log.Warn().Err(err).Msg("flushing traces failed")
		}
	}, nil
}
