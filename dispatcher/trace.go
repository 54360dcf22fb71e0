package dispatcher

import (
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tracing"
	"github.com/jetflow/jetflow/workflow"
)

// tracerName names the dispatcher's tracer.
const tracerName = "github.com/jetflow/jetflow/dispatcher"

// traceOf is the Instance.Trace of an instance a trigger message starts:
// its traceparent header when valid, a new root trace when this
// dispatcher traces, else none.
func (d *Dispatcher) traceOf(m jetstream.Delivery) string {
	if tp := m.Header(tracing.Header); tp != "" && tracing.Valid(tp) {
		return tp
	}
	if d.tracer != nil {
		return tracing.Root()
	}
	return ""
}

// traceCommit records the spans of what a committed pass ended: each
// step that ended, and the workflow run when the instance ended.
func (d *Dispatcher) traceCommit(before, after *workflow.Instance) {
	if d.tracer == nil || after == nil || after.Trace == "" {
		return
	}
	run, ok := tracing.Instance(after.Trace, after.ID)
	if !ok {
		return
	}
	for name, st := range after.Steps {
		if st.Status != workflow.StepCompleted && st.Status != workflow.StepFailed {
			continue
		}
		if before != nil {
			if b := before.Steps[name]; b != nil && b.Status == st.Status {
				continue
			}
		}
		self, _ := tracing.Step(after.Trace, after.ID, name)
		attrs := []attribute.KeyValue{
			attribute.String("jetflow.workflow", after.Workflow), attribute.String("jetflow.instance", after.ID),
			attribute.String("jetflow.step", name), attribute.String("jetflow.status", string(st.Status)),
		}
		if st.Attempt > 0 {
			attrs = append(attrs, attribute.Int("jetflow.attempts", st.Attempt))
		}
		if st.Error != "" {
			attrs = append(attrs, attribute.String("jetflow.error", st.Error))
		}
		tracing.Record(d.tracer, "step "+name, self, run, st.Started, st.Ended, attrs...)
	}
	if after.Status.Terminal() && (before == nil || !before.Status.Terminal()) {
		parent, _ := tracing.Parent(after.Trace)
		attrs := []attribute.KeyValue{
			attribute.String("jetflow.workflow", after.Workflow), attribute.String("jetflow.instance", after.ID),
			attribute.String("jetflow.event_key", after.EventKey), attribute.String("jetflow.status", string(after.Status)),
		}
		if after.Error != "" {
			attrs = append(attrs, attribute.String("jetflow.error", after.Error))
		}
		tracing.Record(d.tracer, "workflow "+after.Workflow, run, parent, after.Created, after.Ended, attrs...)
	}
}

// tracePass records one pass over an instance's events, as a child of
// the instance's workflow span.
func (d *Dispatcher) tracePass(id string, inst *workflow.Instance, items []*item, start time.Time) {
	if inst == nil || inst.Trace == "" {
		return
	}
	run, ok := tracing.Instance(inst.Trace, id)
	if !ok {
		return
	}
	kinds := make([]string, 0, len(items))
	for _, it := range items {
		kinds = append(kinds, string(it.ev.Kind))
	}
	ctx := trace.ContextWithRemoteSpanContext(d.traceCtx, run)
	_, span := d.tracer.Start(ctx, "dispatcher pass", trace.WithTimestamp(start), trace.WithAttributes(
		attribute.String("jetflow.instance", id), attribute.String("jetflow.workflow", inst.Workflow),
		attribute.Int("jetflow.events", len(items)), attribute.StringSlice("jetflow.event_kinds", kinds),
	))
	span.End()
}
