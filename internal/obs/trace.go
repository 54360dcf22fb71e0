package obs

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/tracing"
)

// TracingConfigured reports whether the standard OpenTelemetry variables
// ask for traces to be exported: an OTLP endpoint is set
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and
// OTEL_TRACES_EXPORTER is not "none" (OTEL_SDK_DISABLED not "true").
func TracingConfigured() bool {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") || strings.EqualFold(os.Getenv("OTEL_TRACES_EXPORTER"), "none") {
		return false
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Tracer returns a TracerProvider exporting over OTLP (HTTP/protobuf)
// as the OTEL_* variables say, with tracing.IDs as its ID generator, and
// its shutdown (which flushes). Without TracingConfigured it returns
// nil: tracing is off and costs nothing. service is the default
// service.name (OTEL_SERVICE_NAME overrides it).
func Tracer(ctx context.Context, service string) (trace.TracerProvider, func(context.Context) error, error) {
	if !TracingConfigured() {
		return nil, func(context.Context) error { return nil }, nil
	}
	if p := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"); p == "grpc" || (p == "" && os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc") {
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=grpc: jetflow exports traces over OTLP HTTP/protobuf only (http/protobuf, port 4318)")
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("OTLP trace exporter (OTEL_EXPORTER_OTLP_*): %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName(service)))
	if err != nil {
		res = resource.Default()
	}
	if os.Getenv("OTEL_SERVICE_NAME") != "" {
		res = resource.Default()
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res), sdktrace.WithIDGenerator(tracing.IDs{}))
	return tp, tp.Shutdown, nil
}
