package tracing_test

import (
	"fmt"

	"github.com/jetflow/jetflow/tracing"
)

// Every process derives the same span ids of an instance and its steps
// from the instance's traceparent, so spans recorded by different
// dispatchers and workers join one trace.
func Example() {
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	fmt.Println(tracing.Valid(tp), tracing.Valid("not a traceparent"))
	run, _ := tracing.Instance(tp, "order-1")
	again, _ := tracing.Instance(tp, "order-1")
	step, _ := tracing.Step(tp, "order-1", "charge")
	fmt.Println(run.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736", run.SpanID() == again.SpanID(), step.SpanID() != run.SpanID())
	// Output:
	// true false
	// true true true
}
