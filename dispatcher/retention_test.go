package dispatcher_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// TestInstanceRetention: with InstanceRetention set, an ended instance's
// key is removed that long after it ended, and a replay of its event key
// afterwards starts a new instance; a running instance never expires,
// however long it runs; runs of an on_duplicate: rerun workflow never
// expire. (The short durations are test settings: Validate requires the
// retention to be at least the trigger retention.)
func TestInstanceRetention(t *testing.T) {
	t.Parallel()
	const retention = 2 * time.Second
	e := jftest.Start(t, jetstream.Config{DuplicateWindow: time.Second, TriggerRetention: retention, InstanceRetention: retention})
	e.Register(`
name: brief
version: 1
trigger: {subject: brief.created, key: id}
steps:
  - {name: a, kind: task, task: gate}
`)
	e.Register(`
name: chain
version: 1
trigger: {subject: chain.created, key: id, on_duplicate: rerun}
steps:
  - {name: a, kind: task, task: gate}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	hold := map[string]chan struct{}{}
	for _, k := range []string{"long"} {
		hold[workflow.InstanceID("brief", k)] = make(chan struct{})
	}
	e.Worker(e.NewClient(), worker.Config{}, map[string]worker.Handler{
		"gate": func(ctx context.Context, task *worker.Task) (any, error) {
			if ch, ok := hold[task.Instance]; ok {
				select {
				case <-ch:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return "ok", nil
		},
	})
	ctx := context.Background()
	publish := func(subject, key string) {
		require.NoError(t, e.Client.PublishRaw(ctx, subject, []byte(`{"id":"`+key+`"}`)))
	}
	short, long := workflow.InstanceID("brief", "short"), workflow.InstanceID("brief", "long")
	chain := workflow.InstanceID("chain", "c")
	publish("brief.created", "short")
	publish("brief.created", "long")
	publish("chain.created", "c")
	e.WaitTerminal(short, 30*time.Second)
	e.WaitTerminal(chain, 30*time.Second)

	// The ended instance goes; the running one and the rerun chain stay.
	jftest.Eventually(t, 30*time.Second, func() bool { return e.Instance(short) == nil }, "ended instance %s never expired", short)
	time.Sleep(2 * retention)
	require.NotNil(t, e.Instance(long), "a running instance must never expire")
	require.Equal(t, workflow.StatusRunning, e.Instance(long).Status)
	require.NotNil(t, e.Instance(chain), "runs of a rerun workflow must not expire")

	// Once the running one ends, it expires too.
	close(hold[long])
	e.WaitTerminal(long, 30*time.Second)
	jftest.Eventually(t, 30*time.Second, func() bool { return e.Instance(long) == nil }, "instance %s never expired after it ended", long)

	// A replay after the retention starts a new instance under the same id.
	before := d.Stats().Started
	publish("brief.created", "short")
	again := e.WaitTerminal(short, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, again.Status)
	require.Equal(t, before+1, d.Stats().Started)
}
