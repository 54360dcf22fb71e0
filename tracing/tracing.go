// Package tracing carries W3C trace context through jetflow and names
// the spans of a workflow run.
//
// A trigger's traceparent header (or the one given to a client's start
// call) becomes the instance's Instance.Trace. From it every process
// derives the same ids: the workflow run's span id from the trace id and
// the instance id, each step's span id from those and the step name. So
// the dispatcher that ends a step, on whatever replica, records the step
// span under the id the task messages already named as their parent, and
// the workflow span, recorded when the instance ends, under the id its
// steps named. Task messages carry the traceparent of their step's span;
// the worker's span of each attempt is its child, and the handler's ctx
// holds it.
//
// Spans whose id is decided this way are recorded after the fact, with
// their start and end times, through a TracerProvider made with IDs as
// its ID generator (sdktrace.WithIDGenerator(tracing.IDs{})): the only
// way the OpenTelemetry SDK lets a caller choose a span's id.
//
// With no TracerProvider (the default) nothing is recorded and nothing is
// derived: the traceparent is only carried along.
package tracing

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Header is the W3C trace context header.
const Header = "traceparent"

// Parse reads a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>"). A
// parent span id of zeros is accepted: jetflow's mark of a trace started
// by the dispatcher (Root), whose workflow span has no parent.
func Parse(tp string) (trace.SpanContext, bool) {
	parts := strings.Split(strings.TrimSpace(tp), "-")
	if len(parts) < 4 || len(parts[0]) != 2 || parts[0] == "ff" || len(parts[1]) != 32 || len(parts[2]) != 16 || len(parts[3]) != 2 {
		return trace.SpanContext{}, false
	}
	var tid trace.TraceID
	var sid trace.SpanID
	var flags [1]byte
	if _, err := hex.Decode(tid[:], []byte(parts[1])); err != nil || !tid.IsValid() {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(sid[:], []byte(parts[2])); err != nil {
		return trace.SpanContext{}, false
	}
	if _, err := hex.Decode(flags[:], []byte(parts[3])); err != nil {
		return trace.SpanContext{}, false
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid, SpanID: sid, TraceFlags: trace.TraceFlags(flags[0]) & trace.FlagsSampled, Remote: true,
	}), true
}

// Format writes a span context as a traceparent.
func Format(sc trace.SpanContext) string {
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sc.TraceFlags().String()
}

// Valid reports whether tp is a traceparent Parse accepts.
func Valid(tp string) bool {
	_, ok := Parse(tp)
	return ok
}

// Root starts a new sampled trace with no parent span, for an instance
// whose trigger carried no traceparent while tracing is on.
func Root() string {
	var tid trace.TraceID
	_, _ = crand.Read(tid[:])
	tid[0] |= 1 // never all zeros
	return Format(trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, TraceFlags: trace.FlagsSampled}))
}

// derive makes a span id from a trace id and names.
func derive(tid trace.TraceID, names ...string) trace.SpanID {
	h := fnv.New64a()
	_, _ = h.Write(tid[:])
	for _, n := range names {
		_, _ = h.Write([]byte{0})
		_, _ = h.Write([]byte(n))
	}
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], h.Sum64()|1) // never all zeros
	return sid
}

// Instance is the span context of the workflow run of an instance whose
// Instance.Trace is tp (ok false when tp is empty or invalid).
func Instance(tp, instance string) (trace.SpanContext, bool) {
	parent, ok := Parse(tp)
	if !ok {
		return trace.SpanContext{}, false
	}
	return parent.WithSpanID(derive(parent.TraceID(), "instance", instance)), true
}

// Step is the span context of one step of an instance.
func Step(tp, instance, step string) (trace.SpanContext, bool) {
	parent, ok := Parse(tp)
	if !ok {
		return trace.SpanContext{}, false
	}
	return parent.WithSpanID(derive(parent.TraceID(), "step", instance, step)), true
}

// StepParent is the traceparent of a step's span ("" when tp is not a
// traceparent): what the step's task messages and a bulk step's child
// starts carry.
func StepParent(tp, instance, step string) string {
	sc, ok := Step(tp, instance, step)
	if !ok {
		return ""
	}
	return Format(sc)
}

// Parent is the span an instance's workflow span is a child of: the
// trigger's span, or none for a Root trace.
func Parent(tp string) (trace.SpanContext, bool) {
	sc, ok := Parse(tp)
	if !ok || !sc.SpanID().IsValid() {
		return trace.SpanContext{}, false
	}
	return sc, true
}

type spanIDKey struct{}

// IDs is an ID generator for an OpenTelemetry SDK TracerProvider
// (sdktrace.WithIDGenerator(tracing.IDs{})): random ids, except a span id
// Record asks for.
type IDs struct{}

// NewIDs returns the ids Record asked for, or a new trace id and span
// id.
func (IDs) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if sc, ok := ctx.Value(spanIDKey{}).(trace.SpanContext); ok {
		return sc.TraceID(), sc.SpanID()
	}
	var tid trace.TraceID
	binary.BigEndian.PutUint64(tid[:8], rand.Uint64())
	binary.BigEndian.PutUint64(tid[8:], rand.Uint64()|1)
	return tid, IDs{}.NewSpanID(ctx, tid)
}

// NewSpanID returns the span id Record asked for, or a random one.
func (IDs) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if sc, ok := ctx.Value(spanIDKey{}).(trace.SpanContext); ok && sc.SpanID().IsValid() {
		return sc.SpanID()
	}
	var sid trace.SpanID
	binary.BigEndian.PutUint64(sid[:], rand.Uint64()|1)
	return sid
}

// Record records a span that has already ended, under the span id of
// self (whose trace it belongs to), as a child of parent (or a root when
// parent is not valid). The TracerProvider must use IDs; with another the
// span gets a random id.
func Record(tracer trace.Tracer, name string, self, parent trace.SpanContext, start, end time.Time, attrs ...attribute.KeyValue) {
	ctx := context.WithValue(context.Background(), spanIDKey{}, self)
	if parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
	}
	_, span := tracer.Start(ctx, name, trace.WithTimestamp(start), trace.WithAttributes(attrs...), trace.WithSpanKind(trace.SpanKindInternal))
	span.End(trace.WithTimestamp(end))
}
