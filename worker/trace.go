package worker

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tracing"
	"github.com/jetflow/jetflow/workflow"
)

// tracerName names the worker's tracer.
const tracerName = "github.com/jetflow/jetflow/worker"

// traceTask starts the span of one task attempt, a child of the step span
// the task message names (its traceparent header), and returns the ctx
// the handler runs under. Without Config.Tracer the ctx only carries the
// step span as its remote parent, so a handler can pass the trace on.
func (w *Worker) traceTask(ctx context.Context, m *jetstream.Msg, t workflow.Task) (context.Context, trace.Span) {
	tp := m.Header(tracing.Header)
	if tp == "" && w.tracer == nil {
		return ctx, nil
	}
	if parent, ok := tracing.Parse(tp); ok {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	if w.tracer == nil {
		return ctx, nil
	}
	ctx, span := w.tracer.Start(ctx, "task "+t.Type, trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(
		attribute.String("jetflow.instance", t.Instance), attribute.String("jetflow.workflow", t.Workflow),
		attribute.String("jetflow.step", t.Step), attribute.String("jetflow.task_type", t.Type),
		attribute.Int("jetflow.attempt", t.Attempt), attribute.Int64("jetflow.delivery", int64(m.Deliveries())),
	))
	return ctx, span
}

// traceOutcome records an attempt's outcome on the span in ctx.
func traceOutcome(ctx context.Context, herr error) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	span.SetAttributes(attribute.String("jetflow.outcome", outcomeOf(herr)))
	if herr != nil {
		span.SetStatus(codes.Error, herr.Error())
	}
}
