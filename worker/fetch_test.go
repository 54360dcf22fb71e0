package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// The consumer of a task type is deleted under a running worker: its
// pulls fail, each failure is counted in
// jetflow_worker_pull_failures_total, and the worker binds the consumer
// again (creating it) and goes on serving the type. Before, the fetcher
// pulled again and again on the missing consumer, logging at debug
// level, and the type's tasks were never taken.
func TestWorkerServesATaskTypeWhoseConsumerWasDeleted(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	e.Register(`
name: refetch
version: 1
steps:
  - {name: a, kind: task, task: refetch}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	w, _ := e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"refetch": func(_ context.Context, t *worker.Task) (any, error) { return t.Input() },
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(w.Collector())
	jftest.Eventually(t, 30*time.Second, func() bool { return w.Ready() == nil }, "the worker did not start")

	nc, err := nats.Connect(e.URL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, js.DeleteConsumer(ctx, jetstream.StreamTasks, jetstream.WorkerConsumer("refetch")))

	id := workflow.InstanceID("refetch", "k")
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "refetch", EventKey: "k", Payload: []byte(`{"x":1}`)}))
	inst := e.WaitTerminal(id, 60*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	require.Positive(t, pullFailures(t, reg), "the failed pulls were not counted")
}

func pullFailures(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	fams, err := reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, f := range fams {
		if f.GetName() == "jetflow_worker_pull_failures_total" {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
