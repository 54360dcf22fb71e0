package worker_test

import (
	"context"
	"errors"
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

// calls records each call of a handler: the attempt, when it returned,
// and the context's error then.
type calls struct {
	mu   sync.Mutex
	list []call
}

type call struct {
	attempt  int
	returned time.Time
	ctxErr   error
}

func (c *calls) add(t *worker.Task, ctxErr error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, call{attempt: t.Attempt, returned: time.Now(), ctxErr: ctxErr})
}

func (c *calls) get() []call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]call(nil), c.list...)
}

// outcomeWorkflow runs one task step of type tt with three attempts, one
// second apart by the policy.
func outcomeWorkflow(tt string) string {
	return `
name: ` + tt + `
version: 1
steps:
  - {name: a, kind: task, task: ` + tt + `, retry: {max_attempts: 3, initial_interval: 1s}}
`
}

// TestHandlerOutcomes: each outcome a handler can have is mapped to what
// the workflow's retry policy does with it (worker.execute is the one
// place): a plain error retries, Permanent fails the step at once,
// RetryAfter retries no earlier than asked, a panic is a failed attempt
// that is retried, and a value completes the step.
func TestHandlerOutcomes(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	types := []string{"plain", "permanent", "retry-after", "panics", "panics-always"}
	for _, tt := range types {
		e.Register(outcomeWorkflow(tt))
	}
	e.Dispatcher(nil, dispatcher.Config{})
	const delay = 3 * time.Second
	rec := map[string]*calls{}
	for _, tt := range types {
		rec[tt] = &calls{}
	}
	handlers := map[string]worker.Handler{
		"plain": func(ctx context.Context, t *worker.Task) (any, error) {
			defer rec["plain"].add(t, nil)
			if t.Attempt == 1 {
				return nil, errors.New("flaky")
			}
			return "ok", nil
		},
		"permanent": func(ctx context.Context, t *worker.Task) (any, error) {
			defer rec["permanent"].add(t, nil)
			return nil, worker.Permanent(errors.New("card declined"))
		},
		"retry-after": func(ctx context.Context, t *worker.Task) (any, error) {
			defer rec["retry-after"].add(t, nil)
			if t.Attempt == 1 {
				return nil, worker.RetryAfter(delay, errors.New("rate limited"))
			}
			return "ok", nil
		},
		"panics": func(ctx context.Context, t *worker.Task) (any, error) {
			defer rec["panics"].add(t, nil)
			if t.Attempt == 1 {
				panic("boom")
			}
			return "ok", nil
		},
		"panics-always": func(ctx context.Context, t *worker.Task) (any, error) {
			defer rec["panics-always"].add(t, nil)
			panic(errors.New("always boom"))
		},
	}
	e.Worker(nil, worker.Config{}, handlers)
	for _, tt := range types {
		require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: tt, EventKey: "k"}))
	}
	wait := func(tt string) *workflow.Instance {
		return e.WaitTerminal(workflow.InstanceID(tt, "k"), 30*time.Second)
	}

	inst := wait("plain")
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	require.Equal(t, 2, inst.Steps["a"].Attempt, "a plain error is retried")

	inst = wait("permanent")
	require.Equal(t, workflow.StatusFailed, inst.Status)
	require.Equal(t, 1, inst.Steps["a"].Attempt, "Permanent is not retried")
	require.Contains(t, inst.Error, "card declined")
	require.Len(t, rec["permanent"].get(), 1)

	inst = wait("retry-after")
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	c := rec["retry-after"].get()
	require.Len(t, c, 2)
	require.GreaterOrEqual(t, c[1].returned.Sub(c[0].returned), delay, "RetryAfter's delay is honoured, not the policy's 1s")

	inst = wait("panics")
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	require.Equal(t, 2, inst.Steps["a"].Attempt, "a panic is a failed attempt, retried")

	inst = wait("panics-always")
	require.Equal(t, workflow.StatusFailed, inst.Status)
	require.Equal(t, 3, inst.Steps["a"].Attempt, "every attempt ran: the worker survived its panics")
	require.Contains(t, inst.Error, "handler panicked: always boom")
}

// TestShutdownCancelsAndHandsTheTaskBack: a worker told to stop waits
// ShutdownTimeout for its running handler, then cancels the handler's
// context and hands the task back at once; another worker runs the same
// attempt (a cancelled handler is not a failed attempt).
func TestShutdownCancelsAndHandsTheTaskBack(t *testing.T) {
	t.Parallel()
	// An ack wait longer than the test's deadline: only the hand-back
	// can bring the task to the second worker in time.
	e := jftest.Start(t, jetstream.Config{WorkerAckWait: 2 * time.Minute})
	e.Register(outcomeWorkflow("blocks"))
	e.Dispatcher(nil, dispatcher.Config{})
	first, second := &calls{}, &calls{}
	started := make(chan struct{})
	_, running := e.Worker(nil, worker.Config{ShutdownTimeout: 100 * time.Millisecond}, map[string]worker.Handler{
		"blocks": func(ctx context.Context, t *worker.Task) (any, error) {
			close(started)
			<-ctx.Done() // runs until the worker cancels it
			first.add(t, ctx.Err())
			return nil, ctx.Err()
		},
	})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "blocks", EventKey: "k"}))
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler did not start")
	}
	require.NoError(t, running.Stop())
	c := first.get()
	require.Len(t, c, 1)
	require.ErrorIs(t, c[0].ctxErr, context.Canceled)

	e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"blocks": func(ctx context.Context, t *worker.Task) (any, error) {
			second.add(t, nil)
			return "done", nil
		},
	})
	inst := e.WaitTerminal(workflow.InstanceID("blocks", "k"), 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	require.Equal(t, 1, inst.Steps["a"].Attempt, "the cancelled attempt did not count as a failure")
	require.Equal(t, 1, second.get()[0].attempt)
}
