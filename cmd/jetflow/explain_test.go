package main

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

func explainJSON(t *testing.T, url, id string) workflow.Explanation {
	t.Helper()
	out, _, err := jetflow(t, "--nats-url", url, "--json", "explain", id)
	require.NoError(t, err)
	var x workflow.Explanation
	require.NoError(t, json.Unmarshal([]byte(out), &x), out)
	return x
}

// bulkChildren reads jetflow_bulk_children{state} of a dispatcher.
func bulkChildren(t *testing.T, d *dispatcher.Dispatcher, state string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(d.Collector()))
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != "jetflow_bulk_children" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == state {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

func waitOn(t *testing.T, x workflow.Explanation, step string) workflow.Wait {
	t.Helper()
	for _, w := range x.Waits {
		if w.Step == step {
			return w
		}
	}
	t.Fatalf("explain lists no wait for step %s: %+v", step, x)
	return workflow.Wait{}
}

// TestExplain runs `jetflow explain` against real instances: a task
// whose type no worker serves, a wait for a signal, a bulk step with
// children running, and a timer overdue because no dispatcher runs.
func TestExplain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("task type without a worker", func(t *testing.T) {
		t.Parallel()
		e := jftest.StartTCP(t, jetstream.Config{})
		e.Register("name: pay\nversion: 1\nsteps:\n  - {name: charge, kind: task, task: charge-card}\n")
		e.Dispatcher(nil, dispatcher.Config{})
		e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "pay", EventKey: "1"}))
		id := workflow.InstanceID("pay", "1")
		jftest.Eventually(t, 30*time.Second, func() bool { return e.Instance(id) != nil }, "no instance")
		// Polled until the problems are exactly these: until the
		// dispatcher wrote its first presence record, explain also
		// (rightly) says that no dispatcher is connected.
		want := []string{"no worker for task type charge-card is connected"}
		var x workflow.Explanation
		jftest.Eventually(t, 30*time.Second, func() bool {
			x = explainJSON(t, e.URL, id)
			return len(x.Waits) == 1 && slices.Equal(x.Problems, want)
		}, "explain never found the task and only the missing worker: %+v", &x)
		require.Equal(t, want, x.Problems)
		w := waitOn(t, x, "charge")
		require.Equal(t, workflow.WaitTask, w.For)
		require.True(t, w.Message.Found, "the task waits in JETFLOW_TASKS")
		require.False(t, w.Message.Delivered)
		require.EqualValues(t, 1, w.Queue.Pending)
		text, _, err := jetflow(t, "--nats-url", e.URL, "explain", id)
		require.NoError(t, err)
		require.Contains(t, text, "PROBLEM: no worker for task type charge-card is connected")
	})

	t.Run("waiting signal", func(t *testing.T) {
		t.Parallel()
		e := jftest.StartTCP(t, jetstream.Config{})
		e.Register("name: approval\nversion: 1\nsteps:\n  - {name: approve, kind: wait, signal: approved}\n")
		e.Dispatcher(nil, dispatcher.Config{})
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "approval", EventKey: "1"}))
		id := workflow.InstanceID("approval", "1")
		jftest.Eventually(t, 30*time.Second, func() bool { return e.Instance(id) != nil }, "no instance")
		// Polled: until the dispatcher wrote its first presence record,
		// explain (rightly) says that no dispatcher is connected.
		var x workflow.Explanation
		jftest.Eventually(t, 30*time.Second, func() bool {
			x = explainJSON(t, e.URL, id)
			return len(x.Problems) == 0
		}, "explain kept finding problems: %+v", &x)
		w := waitOn(t, x, "approve")
		require.Equal(t, workflow.WaitSignal, w.For)
		require.Equal(t, "approved", w.Signal)
		require.Contains(t, x.Summary, `waits for signal "approved"`)
	})

	t.Run("bulk step with children running", func(t *testing.T) {
		t.Parallel()
		e := jftest.StartTCP(t, jetstream.Config{})
		e.Register("name: mail\nversion: 1\nsteps:\n  - {name: send, kind: task, task: hold}\n")
		e.Register("name: fan\nversion: 1\nsteps:\n  - {name: notify, kind: bulk, workflow: mail, items: input.to}\n")
		d, _ := e.Dispatcher(nil, dispatcher.Config{RepairInterval: 100 * time.Millisecond})
		release := make(chan struct{})
		e.Worker(nil, worker.Config{Concurrency: 4}, map[string]worker.Handler{"hold": func(ctx context.Context, _ *worker.Task) (any, error) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		}})
		t.Cleanup(func() { close(release) }) // before the worker stops (cleanups run last first)
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "fan", EventKey: "1", Payload: []byte(`{"to":["a","b","c"]}`)}))
		id := workflow.InstanceID("fan", "1")
		var x workflow.Explanation
		jftest.Eventually(t, 30*time.Second, func() bool {
			in := e.Instance(id)
			if in == nil || in.Steps["notify"] == nil || in.Steps["notify"].Cursor < 3 {
				return false
			}
			x = explainJSON(t, e.URL, id)
			w := waitOn(t, x, "notify")
			return len(w.Bulk.Running) == 3
		}, "explain never showed three children running: %+v", x)
		w := waitOn(t, x, "notify")
		require.Equal(t, workflow.WaitChildren, w.For)
		require.Equal(t, 3, w.Bulk.Total)
		require.Equal(t, 3, w.Bulk.InFlight)
		require.Empty(t, w.Bulk.Stuck)
		require.False(t, w.RepairAt.IsZero(), "when the reconciliation runs")
		// The repair loop's sweep counts them in jetflow_bulk_children.
		jftest.Eventually(t, 30*time.Second, func() bool {
			return bulkChildren(t, d, "running") == 3 && bulkChildren(t, d, "pending") == 0
		}, "jetflow_bulk_children never showed three running")
		// A child explains itself too: its task is held by a worker.
		child := explainJSON(t, e.URL, w.Bulk.Running[0].ID)
		cw := waitOn(t, child, "send")
		require.Equal(t, []string{"hold"}, []string{cw.TaskType})
		require.NotEmpty(t, cw.Workers)
	})

	t.Run("overdue timer", func(t *testing.T) {
		t.Parallel()
		e := jftest.StartTCP(t, jetstream.Config{})
		e.Register("name: nap\nversion: 1\nsteps:\n  - {name: rest, kind: sleep, duration: 1s}\n")
		_, d := e.Dispatcher(nil, dispatcher.Config{})
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "nap", EventKey: "1"}))
		id := workflow.InstanceID("nap", "1")
		var in *workflow.Instance
		jftest.Eventually(t, 30*time.Second, func() bool {
			in = e.Instance(id)
			return in != nil && in.Steps["rest"] != nil
		}, "no instance")
		// The dispatcher stops before the timer fires: the timer comes due
		// and nobody applies it.
		require.NoError(t, d.Stop())
		due := in.Timers["sleep.rest.1"]
		require.False(t, due.IsZero())
		var x workflow.Explanation
		jftest.Eventually(t, 30*time.Second, func() bool {
			x = explainJSON(t, e.URL, id)
			return waitOn(t, x, "rest").Overdue
		}, "the timer never showed as overdue: %+v", x)
		w := waitOn(t, x, "rest")
		require.Equal(t, workflow.WaitTimer, w.For)
		require.Equal(t, due.UTC(), w.Due.UTC())
		require.Equal(t, due.Add(5*time.Second).UTC(), w.RepairAt.UTC(), "fired by the repair loop at due + timer grace")
		require.Contains(t, x.Problems, "no dispatcher is connected: nothing applies results, fires timers or repairs")
		require.Equal(t, workflow.StatusRunning, e.Instance(id).Status, "explain changed nothing")
	})
}
