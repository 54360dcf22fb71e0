package dispatcher_test

import (
	"context"
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

// A Dispatcher runs once: a second Run, while the first runs or after it
// returned, is an error, never a second set of consumers or a panic.
func TestRunTwiceIsAnError(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	d, running := e.Dispatcher(nil, dispatcher.Config{})
	jftest.Eventually(t, 30*time.Second, func() bool { return d.Ready() == nil }, "the dispatcher did not start")
	second := func() error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- d.Run(ctx) }()
		select {
		case err := <-errc:
			return err
		case <-time.After(30 * time.Second):
			cancel()
			t.Fatal("a second Run did not return")
			return nil
		}
	}
	require.ErrorIs(t, second(), dispatcher.ErrRunTwice, "while the first Run runs")
	require.NoError(t, running.Stop())
	require.ErrorIs(t, second(), dispatcher.ErrRunTwice, "after the first Run returned")
}

const boundDef = `
name: rewatched
version: 1
trigger: {subject: rewatched.created, key: id}
steps:
  - {name: a, kind: task, task: rewatch}
`

// The definitions watch fails after the dispatcher started: Run restarts
// it (counted in jetflow_loop_restarts_total), so a definition stored
// after the failure is bound to its trigger subject. Before, the failed
// watch was never read again and the dispatcher dead-lettered the
// triggers of every definition stored later ("no binding").
func TestFailedDefinitionsWatchIsRestarted(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	breakWatch := make(chan struct{})
	var calls atomic.Int32
	backend := &faulty{Backend: e.Client, watchDefinitions: func(ctx context.Context, inner dispatcher.Backend, fn func(*workflow.Definition), ready func()) error {
		if calls.Add(1) > 1 {
			return inner.WatchDefinitions(ctx, fn, ready)
		}
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-breakWatch:
				cancel()
			case <-wctx.Done():
			}
		}()
		if err := inner.WatchDefinitions(wctx, fn, ready); err != nil || ctx.Err() != nil {
			return err
		}
		return errInjected
	}}
	d, _ := e.Dispatcher(backend, dispatcher.Config{RetryDelay: 50 * time.Millisecond})
	jftest.Eventually(t, 30*time.Second, func() bool { return d.Ready() == nil }, "the dispatcher did not start")
	close(breakWatch)
	jftest.Eventually(t, 30*time.Second, func() bool { return d.Stats().LoopRestarts >= 1 }, "the failed watch was not restarted")

	e.Register(boundDef)
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"rewatch": echo})
	id := workflow.InstanceID("rewatched", "r-1")
	// The restarted watch delivers the definition soon after it is
	// stored; until then a trigger is dead-lettered, so publish until
	// one starts the instance.
	jftest.Eventually(t, 30*time.Second, func() bool {
		if e.Instance(id) == nil {
			publishJSON(t, e.Client, "rewatched.created", `{"id":"r-1"}`)
			return false
		}
		return true
	}, "a definition stored after the watch failed was never bound")
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(id, 30*time.Second).Status)
	require.GreaterOrEqual(t, calls.Load(), int32(2))
}

// The repair loop's watch of instance writes fails: Run restarts the
// loop (counted), and the restarted loop repairs a task that was lost.
// Before, the loop's failure was only logged: nothing repaired the
// instance again, and it stayed RUNNING for good.
func TestFailedRepairLoopIsRestarted(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(twoStepDef)
	id := workflow.InstanceID("two", "repair-restart")
	var watches atomic.Int32
	var dropped atomic.Int32
	backend := &faulty{
		Backend: e.Client,
		watchInstances: func(ctx context.Context, inner dispatcher.Backend, existing bool, ready func(), fn func(*jetstream.InstanceUpdate)) error {
			if watches.Add(1) == 1 {
				return errInjected
			}
			return inner.WatchInstanceUpdates(ctx, existing, ready, fn)
		},
		dropPublish: func(dec workflow.Decision) bool {
			return len(dec.Tasks) == 1 && dec.Tasks[0].Instance == id && dec.Tasks[0].Step == "a" && dropped.CompareAndSwap(0, 1)
		},
	}
	cfg := dispatcher.Config{RepairInterval: 100 * time.Millisecond, StaleTask: time.Second, RetryDelay: 50 * time.Millisecond}
	d, _ := e.Dispatcher(backend, cfg)
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"work": echo})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "two", EventKey: "repair-restart", Payload: []byte(`{"x":1}`)}))
	inst := e.WaitTerminal(id, 60*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	require.EqualValues(t, 1, dropped.Load(), "the task was not lost")
	require.Equal(t, 2, inst.Steps["a"].Attempt, "the lost task was repaired")
	require.GreaterOrEqual(t, d.Stats().LoopRestarts, uint64(1))
	require.GreaterOrEqual(t, watches.Load(), int32(2))
}

// A pass's requests run under the dispatcher's context with the
// configured PassTimeout, not a fixed bound under context.Background():
// a pass stuck in a request when Run's context ends is cancelled once
// ShutdownTimeout has passed, and Run returns.
func TestStuckPassIsCancelledAtShutdown(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(twoStepDef)
	id := workflow.InstanceID("two", "stuck")
	entered := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var deadline time.Time
	var hasDeadline bool
	var ended error
	backend := &faulty{Backend: e.Client, putInstance: func(ctx context.Context, inner dispatcher.Backend, in *workflow.Instance, rev uint64, expires bool) (uint64, error) {
		if in.ID != id {
			return inner.PutInstance(ctx, in, rev, expires)
		}
		mu.Lock()
		deadline, hasDeadline = ctx.Deadline()
		mu.Unlock()
		once.Do(func() { close(entered) })
		<-ctx.Done()
		mu.Lock()
		ended = ctx.Err()
		mu.Unlock()
		return 0, ctx.Err()
	}}
	start := time.Now()
	_, running := e.Dispatcher(backend, dispatcher.Config{PassTimeout: time.Hour, ShutdownTimeout: 100 * time.Millisecond})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "two", EventKey: "stuck", Payload: []byte(`{}`)}))
	select {
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the pass never wrote the instance")
	}
	mu.Lock()
	dl, ok := deadline, hasDeadline
	mu.Unlock()
	require.True(t, ok, "the pass has no deadline")
	require.True(t, dl.After(start.Add(30*time.Minute)), "the pass's deadline %s is not PassTimeout (an hour) away", dl.Sub(start))
	stopped := make(chan error, 1)
	go func() { stopped <- running.Stop() }()
	select {
	case err := <-stopped:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return")
	}
	mu.Lock()
	err := ended
	mu.Unlock()
	require.ErrorIs(t, err, context.Canceled, "the stuck request was not cancelled by the shutdown")
}
