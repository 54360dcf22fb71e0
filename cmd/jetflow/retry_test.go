package main

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
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

// TestRetryCompletesFailedInstancesWithoutRunningStepsTwice: instances
// that failed at their second step are retried after the cause is fixed,
// one by id and the rest in bulk; each completes with the same id, its
// first step not run again, its failed attempt kept, and a second retry
// is refused.
func TestRetryCompletesFailedInstancesWithoutRunningStepsTwice(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	e.Register("name: pay\nversion: 1\ntrigger: {subject: pay.*, key: id}\nsteps:\n  - {name: a, kind: task, task: count, next: b}\n  - {name: b, kind: task, task: flaky}\n")
	var (
		broken atomic.Bool
		mu     sync.Mutex
		calls  = map[string]int{} // instance/step -> handler calls
	)
	broken.Store(true)
	count := func(_ context.Context, tk *worker.Task) (any, error) {
		mu.Lock()
		calls[tk.Instance+"/"+tk.Step]++
		mu.Unlock()
		return map[string]any{"ok": true}, nil
	}
	flaky := func(ctx context.Context, tk *worker.Task) (any, error) {
		if _, err := count(ctx, tk); err != nil {
			return nil, err
		}
		if broken.Load() {
			return nil, worker.Permanent(errors.New("downstream is down"))
		}
		return map[string]any{"paid": true}, nil
	}
	_, _ = e.Dispatcher(e.NewClient(), dispatcher.Config{})
	_, _ = e.Worker(e.NewClient(), worker.Config{}, map[string]worker.Handler{"count": count, "flaky": flaky})
	ctx := context.Background()
	const n = 25
	var ids []string
	for i := range n {
		key := "p" + strconv.Itoa(i)
		_, err := e.Client.Publish(ctx, "pay.new", []byte(`{"id":"`+key+`"}`), nil)
		require.NoError(t, err)
		ids = append(ids, workflow.InstanceID("pay", key))
	}
	for _, id := range ids {
		require.Equal(t, workflow.StatusFailed, e.WaitTerminal(id, 30*time.Second).Status)
	}

	_, _, err := jetflow(t, "--nats-url", e.URL, "retry", ids[0], "--from", "nope")
	require.ErrorContains(t, err, `has no step "nope"`)
	out, _, err := jetflow(t, "--nats-url", e.URL, "retry", ids[0], "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "would_retry from [b]")
	require.Equal(t, workflow.StatusFailed, e.Instance(ids[0]).Status, "--dry-run changes nothing")

	broken.Store(false)
	out, _, err = jetflow(t, "--nats-url", e.URL, "retry", ids[0])
	require.NoError(t, err, out)
	first := waitStatus(t, e, ids[0], workflow.StatusCompleted)
	require.Equal(t, 2, first.Steps["b"].Attempt, "a fresh attempt")
	require.Equal(t, 1, first.Retries)
	_, _, err = jetflow(t, "--nats-url", e.URL, "retry", ids[0])
	require.ErrorContains(t, err, "cannot be retried: it completed")

	// The rest in bulk, with progress on stderr.
	out, stderr, err := jetflow(t, "--nats-url", e.URL, "--json", "retry", "--workflow", "pay")
	require.NoError(t, err)
	require.Contains(t, stderr, "retry: 24/24")
	var res []retryResult
	require.NoError(t, json.Unmarshal([]byte(out), &res))
	require.Len(t, res, n-1)
	for _, id := range ids {
		in := waitStatus(t, e, id, workflow.StatusCompleted)
		require.Equal(t, 1, in.Retries)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		require.Equal(t, 1, calls[id+"/a"], "step a of %s ran again", id)
		require.Equal(t, 2, calls[id+"/b"], "step b of %s: the failed attempt and the retried one", id)
	}
}

// waitStatus polls until the instance has status.
func waitStatus(t *testing.T, e *jftest.Env, id string, status workflow.Status) *workflow.Instance {
	t.Helper()
	var in *workflow.Instance
	jftest.Eventually(t, 30*time.Second, func() bool {
		in = e.Instance(id)
		return in != nil && in.Status == status
	}, "instance %s never reached %s (now %v)", id, status, in)
	return in
}

// TestBulkCancelOfRunningInstances: `jetflow cancel --workflow` cancels
// every running instance of the workflow, with progress on stderr, and
// none of another workflow.
func TestBulkCancelOfRunningInstances(t *testing.T) {
	t.Parallel()
	n := 1000
	if testing.Short() {
		n = 200
	}
	e := jftest.StartTCP(t, jetstream.Config{})
	e.Register("name: hold\nversion: 1\ntrigger: {subject: hold.*, key: id}\nsteps:\n  - {name: a, kind: sleep, duration: 1h}\n")
	e.Register("name: other\nversion: 1\ntrigger: {subject: other.*, key: id}\nsteps:\n  - {name: a, kind: sleep, duration: 1h}\n")
	_, _ = e.Dispatcher(e.NewClient(), dispatcher.Config{})
	ctx := context.Background()
	for i := range n {
		_, err := e.Client.Publish(ctx, "hold.new", []byte(`{"id":"h`+strconv.Itoa(i)+`"}`), nil)
		require.NoError(t, err)
	}
	_, err := e.Client.Publish(ctx, "other.new", []byte(`{"id":"o"}`), nil)
	require.NoError(t, err)
	other := workflow.InstanceID("other", "o")
	last := workflow.InstanceID("hold", "h"+strconv.Itoa(n-1))
	waitStatus(t, e, other, workflow.StatusRunning)
	jftest.Eventually(t, 60*time.Second, func() bool {
		for i := range n {
			if in := e.Instance(workflow.InstanceID("hold", "h"+strconv.Itoa(i))); in == nil || in.Steps["a"] == nil {
				return false
			}
		}
		return true
	}, "not every instance started (last %s: %v)", last, e.Instance(last))

	out, _, err := jetflow(t, "--nats-url", e.URL, "cancel", "--workflow", "hold", "--dry-run")
	require.NoError(t, err)
	require.Contains(t, out, "would cancel "+strconv.Itoa(n)+" running instances of hold")
	out, stderr, err := jetflow(t, "--nats-url", e.URL, "cancel", "--workflow", "hold", "--reason", "incident 42")
	require.NoError(t, err)
	require.Contains(t, out, "cancel requested for "+strconv.Itoa(n)+" running instances of hold")
	require.Contains(t, stderr, "cancel: "+strconv.Itoa(n)+"/"+strconv.Itoa(n))
	for i := range n {
		in := waitStatus(t, e, workflow.InstanceID("hold", "h"+strconv.Itoa(i)), workflow.StatusCancelled)
		require.Equal(t, "incident 42", in.Error)
	}
	require.Equal(t, workflow.StatusRunning, e.Instance(other).Status, "another workflow's instance is left alone")
}
