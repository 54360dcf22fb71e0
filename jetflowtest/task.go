package jetflowtest

import (
	"encoding/json"
	"fmt"

	"github.com/jetflow/jetflow/internal/link"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// maxPayload is the payload limit dispatchers apply by default.
const maxPayload = 1 << 20

// TaskOption sets an attribute of a task NewTask makes.
type TaskOption func(*link.TaskFields)

// WithAttempt sets Task.Attempt (default 1) and, when it is larger,
// Task.MaxAttempts.
func WithAttempt(n int) TaskOption {
	return func(f *link.TaskFields) {
		f.Attempt = n
		f.MaxAttempts = max(f.MaxAttempts, n)
	}
}

// WithMaxAttempts sets Task.MaxAttempts (default 3, the retry policy's
// default).
func WithMaxAttempts(n int) TaskOption {
	return func(f *link.TaskFields) { f.MaxAttempts = n }
}

// WithInstance sets Task.Instance (default "test-1") and so the default
// Task.EffectKey.
func WithInstance(id string) TaskOption {
	return func(f *link.TaskFields) { f.Instance = id }
}

// WithWorkflow sets Task.Workflow (default "test").
func WithWorkflow(name string) TaskOption {
	return func(f *link.TaskFields) { f.Workflow = name }
}

// WithStep sets Task.Step (default "step") and so the default
// Task.EffectKey.
func WithStep(name string) TaskOption {
	return func(f *link.TaskFields) { f.Step = name }
}

// WithType sets Task.Type (default "task").
func WithType(taskType string) TaskOption {
	return func(f *link.TaskFields) { f.Type = taskType }
}

// WithEffectKey sets Task.EffectKey (default "<instance>/<step>", as in
// production).
func WithEffectKey(key string) TaskOption {
	return func(f *link.TaskFields) { f.EffectKey = key }
}

// NewTask returns a task whose input is input, for calling a handler
// directly in a unit test, without NATS. The input is encoded as
// encoding/json.Marshal would, or taken byte for byte when it is a
// json.RawMessage (as a published trigger payload is), and checked and
// stored as the dispatcher stores a task's input, so Task.Bind and
// Task.Input return exactly what they return in production.
//
// NewTask panics when input is not a value a workflow could pass (JSON
// cannot hold it, or it is larger than the default payload limit of
// 1 MiB): such a task cannot exist.
func NewTask(input any, opts ...TaskOption) *worker.Task {
	f := link.TaskFields{Instance: "test-1", Workflow: "test", Step: "step", Type: "task", Attempt: 1, MaxAttempts: 3}
	for _, o := range opts {
		o(&f)
	}
	if f.EffectKey == "" {
		f.EffectKey = workflow.EffectKey(f.Instance, f.Step)
	}
	var b []byte
	var err error
	if raw, ok := input.(json.RawMessage); ok {
		b = raw // as a published payload: kept byte for byte
	} else {
		b, err = jetstream.EncodeValue(input)
	}
	if err == nil {
		b, err = jetstream.CheckPayload(b, maxPayload)
	}
	if err != nil {
		panic(fmt.Sprintf("jetflowtest.NewTask: the input cannot be a task's input: %v", err))
	}
	return link.Task(f, b).(*worker.Task)
}
