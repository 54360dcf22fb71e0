package tracing_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tracing"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

const (
	parentDef = `
name: order
version: 1
trigger: {subject: orders.placed, key: id}
steps:
  - {name: charge, kind: task, task: pay, next: ship}
  - {name: ship, kind: task, task: pay, next: notify}
  - {name: notify, kind: bulk, workflow: mail, items: input.to}
`
	childDef = `
name: mail
version: 1
steps:
  - {name: send, kind: task, task: pay}
`
)

// spans indexes the recorded spans by name (several under one name).
func spans(exp *tracetest.InMemoryExporter) map[string][]tracetest.SpanStub {
	out := map[string][]tracetest.SpanStub{}
	for _, s := range exp.GetSpans() {
		out[s.Name] = append(out[s.Name], s)
	}
	return out
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.Emit()
		}
	}
	return ""
}

// TestTraceFromTrigger: a trigger with a traceparent yields, in the SDK's
// in-memory exporter, the workflow span as the child of the trigger's
// span, a span per step as children of the workflow span, a span per
// task attempt (worker side) as the child of its step's span, dispatcher
// passes under the workflow span, and each bulk child's workflow span
// under the bulk step's span; the handler's ctx is in the task's span.
func TestTraceFromTrigger(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithIDGenerator(tracing.IDs{}))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })

	e := jftest.Start(t, jetstream.Config{})
	e.Register(parentDef)
	e.Register(childDef)
	e.Dispatcher(nil, dispatcher.Config{Tracer: tp})
	var mu sync.Mutex
	handlerSpans := map[string]trace.SpanContext{}
	e.Worker(nil, worker.Config{Tracer: tp}, map[string]worker.Handler{"pay": func(ctx context.Context, task *worker.Task) (any, error) {
		mu.Lock()
		handlerSpans[task.Instance+"/"+task.Step] = trace.SpanContextFromContext(ctx)
		mu.Unlock()
		return map[string]bool{"ok": true}, nil
	}})

	const trigger = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	_, err := e.Client.Publish(context.Background(), "orders.placed", []byte(`{"id":"o-1","to":["a","b"]}`), map[string]string{tracing.Header: trigger})
	require.NoError(t, err)
	id := workflow.InstanceID("order", "o-1")
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(id, 30*time.Second).Status)

	var got map[string][]tracetest.SpanStub
	jftest.Eventually(t, 30*time.Second, func() bool {
		got = spans(exp)
		return len(got["workflow order"]) == 1 && len(got["workflow mail"]) == 2 && len(got["task pay"]) == 4
	}, "spans missing: %d recorded", len(exp.GetSpans()))

	run := got["workflow order"][0]
	require.Equal(t, tid, run.SpanContext.TraceID())
	require.Equal(t, sid, run.Parent.SpanID(), "the workflow span is the child of the trigger's span")
	require.Equal(t, "completed", attr(run, "jetflow.status"))
	require.Equal(t, id, attr(run, "jetflow.instance"))

	stepSpan := map[string]tracetest.SpanStub{}
	for _, s := range []string{"charge", "ship", "notify"} {
		require.Len(t, got["step "+s], 1, s)
		st := got["step "+s][0]
		require.Equal(t, tid, st.SpanContext.TraceID())
		require.Equal(t, run.SpanContext.SpanID(), st.Parent.SpanID(), "step %s is a child of the workflow span", s)
		require.False(t, st.EndTime.Before(st.StartTime))
		stepSpan[s] = st
	}
	for _, task := range got["task pay"] {
		require.Equal(t, tid, task.SpanContext.TraceID())
		step, inst := attr(task, "jetflow.step"), attr(task, "jetflow.instance")
		if inst == id {
			require.Equal(t, stepSpan[step].SpanContext.SpanID(), task.Parent.SpanID(), "the task span is a child of its step's span")
		}
		require.Equal(t, "ok", attr(task, "jetflow.outcome"))
		mu.Lock()
		require.Equal(t, task.SpanContext.SpanID(), handlerSpans[inst+"/"+step].SpanID(), "the handler runs in the task span")
		mu.Unlock()
	}
	for _, child := range got["workflow mail"] {
		require.Equal(t, tid, child.SpanContext.TraceID())
		require.Equal(t, stepSpan["notify"].SpanContext.SpanID(), child.Parent.SpanID(), "a bulk child's run is a child of the bulk step's span")
	}
	passes := 0
	for _, p := range got["dispatcher pass"] {
		if attr(p, "jetflow.instance") == id {
			passes++
			require.Equal(t, run.SpanContext.SpanID(), p.Parent.SpanID())
		}
	}
	require.Positive(t, passes)
}

// TestTraceWithoutTraceparent: with tracing on, an instance whose trigger
// has no traceparent gets a trace of its own: a root workflow span with
// its steps under it. With tracing off (no TracerProvider), nothing is
// recorded, and a trigger's traceparent still reaches the handler's ctx.
func TestTraceWithoutTraceparent(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithIDGenerator(tracing.IDs{}))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := jftest.Start(t, jetstream.Config{})
	e.Register(childDef)
	e.Dispatcher(nil, dispatcher.Config{Tracer: tp})
	seen := make(chan trace.SpanContext, 4)
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"pay": func(ctx context.Context, _ *worker.Task) (any, error) {
		seen <- trace.SpanContextFromContext(ctx)
		return nil, nil
	}})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "mail", EventKey: "1"}))
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(workflow.InstanceID("mail", "1"), 30*time.Second).Status)
	var got map[string][]tracetest.SpanStub
	jftest.Eventually(t, 30*time.Second, func() bool {
		got = spans(exp)
		return len(got["workflow mail"]) == 1 && len(got["step send"]) == 1
	}, "spans missing")
	run := got["workflow mail"][0]
	require.False(t, run.Parent.IsValid(), "a root span")
	require.Equal(t, run.SpanContext.SpanID(), got["step send"][0].Parent.SpanID())
	require.Equal(t, run.SpanContext.TraceID(), got["step send"][0].SpanContext.TraceID())
	// The worker does not trace, yet its handler's ctx names the step's
	// span as its remote parent.
	sc := <-seen
	require.True(t, sc.IsRemote())
	require.Equal(t, got["step send"][0].SpanContext.SpanID(), sc.SpanID())
	require.Empty(t, got["task pay"], "the worker records nothing without a TracerProvider")

	// An invalid traceparent on a start is refused at the client.
	err := e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "mail", EventKey: "2", TraceParent: "00-zz-11-01"})
	require.ErrorContains(t, err, "not a W3C traceparent")
}

// TestParse: traceparents round-trip; malformed ones are refused.
func TestParse(t *testing.T) {
	t.Parallel()
	for _, tp := range []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", tracing.Root()} {
		sc, ok := tracing.Parse(tp)
		require.True(t, ok, tp)
		require.Equal(t, tp, tracing.Format(sc))
	}
	for _, tp := range []string{"", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "00-xyz"} {
		require.False(t, tracing.Valid(tp), tp)
	}
	a, _ := tracing.Step("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "i", "s")
	b, _ := tracing.Step("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "i", "t")
	c, _ := tracing.Instance("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "i")
	require.NotEqual(t, a.SpanID(), b.SpanID())
	require.NotEqual(t, a.SpanID(), c.SpanID())
}
