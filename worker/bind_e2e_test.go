package worker_test

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// TestReadmeWorkerBindsAndItsOutputIsReadByName runs the README's worker
// against a real embedded server: its input struct binds
// {"amount":1250,"orderId":"o-1"} (an untagged field by its name in any
// case, a tagged one by its tag), and its output field tagged
// `json:"charged"` is steps.charge.output.charged in the following
// steps' expressions, as a number.
func TestReadmeWorkerBindsAndItsOutputIsReadByName(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: readme
version: 1
trigger: {subject: orders.created, key: orderId}
steps:
  - {name: charge, kind: task, task: charge-card, next: route}
  - name: route
    kind: switch
    cases:
      - {when: 'steps.charge.output.charged >= 1000', next: receipt}
  - name: receipt
    kind: task
    task: receipt
    input: '{"charged": steps.charge.output.charged, "order": steps.charge.output.orderId}'
`)
	e.Dispatcher(nil, dispatcher.Config{})
	type order struct {
		Amount  int64
		OrderID string `json:"orderId"`
	}
	type receipt struct {
		Charged int64  `json:"charged"`
		Order   string `json:"order"`
	}
	var mu sync.Mutex
	var bound order
	var got receipt
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"charge-card": func(ctx context.Context, t *worker.Task) (any, error) {
			var in order
			if err := t.Bind(&in); err != nil {
				return nil, worker.Permanent(err)
			}
			mu.Lock()
			bound = in
			mu.Unlock()
			return struct {
				Charged int64  `json:"charged"`
				OrderID string `json:"orderId"`
			}{in.Amount, in.OrderID}, nil
		},
		"receipt": func(ctx context.Context, t *worker.Task) (any, error) {
			var in receipt
			if err := t.Bind(&in); err != nil {
				return nil, worker.Permanent(err)
			}
			mu.Lock()
			got = in
			mu.Unlock()
			return in, nil
		},
	})
	_, err := e.Client.Publish(context.Background(), "orders.created", []byte(`{"amount":1250,"orderId":"o-1"}`), nil)
	require.NoError(t, err)

	inst := e.WaitTerminal(workflow.InstanceID("readme", "o-1"), 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, order{Amount: 1250, OrderID: "o-1"}, bound)
	require.NotNil(t, inst.Steps["receipt"], "the switch on steps.charge.output.charged did not take the case")
	require.Equal(t, receipt{Charged: 1250, Order: "o-1"}, got)
	raw, err := e.Client.DataRaw(context.Background(), inst.Steps["charge"].OutputRef)
	require.NoError(t, err)
	require.JSONEq(t, `{"charged":1250,"orderId":"o-1"}`, string(raw), "nats kv get shows the output as JSON")
}

// TestOutputJSONCannotHoldFailsTheStepAtOnce: a handler output that
// cannot be stored fails its step on the first attempt (the step allows
// three), with the reason, instead of being retried.
func TestOutputJSONCannotHoldFailsTheStepAtOnce(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: nan
version: 1
steps:
  - {name: a, kind: task, task: nan, retry: {max_attempts: 3, initial_interval: 1s}}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"nan": func(context.Context, *worker.Task) (any, error) {
			return map[string]any{"ratio": math.NaN()}, nil
		},
	})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "nan", EventKey: "k"}))
	inst := e.WaitTerminal(workflow.InstanceID("nan", "k"), 30*time.Second)
	require.Equal(t, workflow.StatusFailed, inst.Status)
	require.Equal(t, 1, inst.Steps["a"].Attempt)
	require.Contains(t, inst.Error, "output cannot be stored")
	require.Contains(t, inst.Error, "NaN")
}
