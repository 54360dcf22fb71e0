package jetstream

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/workflow"
)

// blackHole makes every request on a stream's subjects go unanswered, the
// way a request that reached a stream leader just before it died does:
// the stream is removed and a plain subscriber that never replies takes
// its subjects (with no subscriber at all the server would answer "no
// responders" at once).
func blackHole(t *testing.T, c *Client, stream, subjects string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, c.js.DeleteStream(ctx, stream))
	sub, err := c.nc.Subscribe(subjects, func(*nats.Msg) {})
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, c.nc.Flush())
}

// TestUnansweredRequestsFailWithinTheRequestTimeout: a KV write, a
// synchronous publish and pipelined publishes whose answers never come
// fail with ErrRequestTimeout while the caller's context still has time
// (before, a dispatcher shard waited out its whole 15 s pass), and a
// pipelined publish that timed out no longer counts against the
// connection's pending publishes (nats.go keeps one pending for good
// without an ack timeout; 4,096 of them stall every later publish).
func TestUnansweredRequestsFailWithinTheRequestTimeout(t *testing.T) {
	t.Parallel()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), DontListen: true})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	c, err := Connect(context.Background(), Config{Server: srv, RequestTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	ctx := context.Background()
	require.NoError(t, c.Provision(ctx))

	// The caller allows far longer than the request timeout; a call that
	// is not bounded by it returns the caller's DeadlineExceeded instead.
	caller, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	blackHole(t, c, "KV_"+BucketInstances, "$KV."+BucketInstances+".>")
	_, err = c.PutInstance(caller, &workflow.Instance{ID: "wf-1", Workflow: "wf", Status: workflow.StatusRunning}, 7, false)
	require.ErrorIs(t, err, ErrRequestTimeout)
	_, err = c.PutInstance(caller, &workflow.Instance{ID: "wf-2", Workflow: "wf", Status: workflow.StatusRunning}, 0, false)
	require.ErrorIs(t, err, ErrRequestTimeout)

	blackHole(t, c, StreamEvents, "jetflow.event.>")
	err = c.PublishEvent(caller, workflow.Event{Kind: workflow.EventSignal, Instance: "wf-1", Signal: "go"}, "m-1")
	require.ErrorIs(t, err, ErrRequestTimeout)

	blackHole(t, c, StreamTasks, TaskSubjects)
	tasks := []workflow.Task{
		{Instance: "wf-1", Step: "a", Type: "noop", Attempt: 1, InputRef: "wf-1.in"},
		{Instance: "wf-1", Step: "b", Type: "noop", Attempt: 1, InputRef: "wf-1.in"},
	}
	err = c.PublishTasks(caller, tasks)
	require.ErrorIs(t, err, ErrRequestTimeout)
	require.NoError(t, caller.Err(), "the caller's own deadline must not be what ended the calls")
	require.Eventually(t, func() bool { return c.js.PublishAsyncPending() == 0 }, 10*time.Second, 20*time.Millisecond,
		"timed-out pipelined publishes must not stay pending")
}
