package dispatcher_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// TestWorkerRidesOutStreamOutage reproduces the fleet failure of issue 7:
// while a NATS node leading a stream is replaced, publishes to that stream
// get "no responders" for seconds. A worker must not turn that into
// redeliveries — each one counts against MaxDeliveries, which exists to
// catch workers that crash on a task — nor run the handler again. Here the
// events stream stops accepting publishes for 4 s right after the handler
// returned; with MaxDeliveries 2 a NAK-and-redeliver worker reports the
// attempt failed ("delivered 3 times without a result"), and with one
// attempt allowed the workflow fails. The worker must hold the task,
// retry the result, and the workflow complete with one handler call.
func TestWorkerRidesOutStreamOutage(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: outage
version: 1
steps:
  - {name: a, kind: task, task: fragile, retry: {max_attempts: 1}}
`)
	e.Dispatcher(nil, dispatcher.Config{RetryDelay: 200 * time.Millisecond})
	var calls atomic.Int64
	outage := make(chan func(context.Context) error, 1)
	_, _ = e.Worker(e.NewClient(), worker.Config{MaxDeliveries: 2, IOTimeout: 500 * time.Millisecond}, map[string]worker.Handler{
		"fragile": func(ctx context.Context, _ *worker.Task) (any, error) {
			if calls.Add(1) == 1 {
				restore, err := e.Client.DetachStream(ctx, jetstream.StreamEvents)
				if err != nil {
					return nil, err
				}
				outage <- restore
			}
			return "done", nil
		},
	})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "outage", EventKey: "k", Payload: []byte(`{}`)}))
	var restore func(context.Context) error
	select {
	case restore = <-outage:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler never ran")
	}
	time.Sleep(4 * time.Second) // two AckWaits of the test env (2 s)
	require.NoError(t, restore(context.Background()))

	inst := e.WaitTerminal(workflow.InstanceID("outage", "k"), 60*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, "instance error: %s", inst.Error)
	require.EqualValues(t, 1, calls.Load(), "handler calls")
}
