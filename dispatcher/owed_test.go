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

// A server that crashes after acknowledging messages can lose them and
// roll back its consumers' acks: the event that decided them comes back
// as a first delivery (a delivery count of 1). These tests lose the
// messages of one committed pass (faulty.dropPublish: the pass acks its
// event as if they had been published) and then deliver an event the
// instance has already applied, as a first delivery: it must republish
// what the instance owes. The step has no timeout and StaleTask is an
// hour, so nothing else would resume the instance.

const twoStepDef = `
name: two
version: 1
steps:
  - {name: a, kind: task, task: work, next: b}
  - {name: b, kind: task, task: work}
`

// startWithLostTask starts a "two" instance whose task for step b is
// lost after the CAS that started b.
func startWithLostTask(t *testing.T, key string) (*jftest.Env, *dispatcher.Dispatcher, string) {
	t.Helper()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(twoStepDef)
	id := workflow.InstanceID("two", key)
	var dropped atomic.Int32
	drop := func(dec workflow.Decision) bool {
		return decisionInstance(dec) == id && len(dec.Tasks) == 1 && dec.Tasks[0].Step == "b" && dropped.CompareAndSwap(0, 1)
	}
	_, crashed := e.Dispatcher(&faulty{Backend: e.Client, dropPublish: drop}, dispatcher.Config{StaleTask: time.Hour})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"work": echo})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "two", EventKey: key, Payload: []byte(`{"x":1}`)}))
	jftest.Eventually(t, 30*time.Second, func() bool {
		inst := e.Instance(id)
		return dropped.Load() == 1 && inst != nil && inst.Steps["b"] != nil
	}, "step b did not start")
	require.Equal(t, workflow.StatusRunning, e.Instance(id).Status)
	// The messages were lost because the server crashed: so did the
	// dispatcher (embedded), or it reconnected. Either way it no longer
	// remembers what it published.
	require.NoError(t, crashed.Stop())
	d, _ := e.Dispatcher(nil, dispatcher.Config{StaleTask: time.Hour})
	return e, d, id
}

// The start that created an instance comes back (its ack was lost) after
// the messages its pass published were lost: it republishes the task.
func TestRedeliveredStartRepublishesOwedTask(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(twoStepDef)
	id := workflow.InstanceID("two", "redelivered-start")
	var dropped, unacked atomic.Int32
	drop := func(dec workflow.Decision) bool {
		return decisionInstance(dec) == id && len(dec.Tasks) == 1 && dec.Tasks[0].Step == "a" && dropped.CompareAndSwap(0, 1)
	}
	backend := &faulty{
		Backend:        e.Client,
		dropPublish:    drop,
		dropTriggerAck: func(jetstream.Delivery) bool { return unacked.CompareAndSwap(0, 1) },
	}
	_, crashed := e.Dispatcher(backend, dispatcher.Config{StaleTask: time.Hour})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "two", EventKey: "redelivered-start", Payload: []byte(`{"x":1}`)}))
	jftest.Eventually(t, 30*time.Second, func() bool { return dropped.Load() == 1 && unacked.Load() == 1 && e.Instance(id) != nil }, "the instance was not created")
	// The dispatcher "crashed" with the server: it no longer knows what
	// it published, and the trigger comes back after its ack wait.
	require.NoError(t, crashed.Stop())
	d, _ := e.Dispatcher(nil, dispatcher.Config{StaleTask: time.Hour})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"work": echo})
	inst := e.WaitTerminal(id, 60*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	require.Equal(t, 1, inst.Steps["a"].Attempt, "the owed task was published again, not retried")
	require.Positive(t, d.Stats().Republished)
}

// A duplicate trigger (another message, another stream sequence) finds
// the instance but is not the message whose pass decided its work: it
// republishes nothing, so a flood of duplicates never runs a task twice
// (after a server restart the task stream forgets the ids of acked
// tasks). The message that created the instance covers its own crash.
func TestDuplicateTriggerRepublishesNothing(t *testing.T) {
	t.Parallel()
	e, d, id := startWithLostTask(t, "dup-trigger")
	_, err := e.Client.Publish(context.Background(), jetstream.StartSubject("two"), []byte(`{"x":1}`),
		map[string]string{jetstream.HeaderEventKey: "dup-trigger", jetstream.HeaderMsgID: "another-id"})
	require.NoError(t, err)
	jftest.Eventually(t, 30*time.Second, func() bool { return d.Stats().DuplicateTriggers == 1 }, "the duplicate was not applied")
	require.Zero(t, d.Stats().Republished)
	require.Equal(t, workflow.StatusRunning, e.Instance(id).Status)
}

func TestStaleResultRepublishesOwedTask(t *testing.T) {
	t.Parallel()
	e, d, id := startWithLostTask(t, "stale-result")
	// Step a's result again, with an id of its own: a first delivery of
	// an event the instance applied.
	inst := e.Instance(id)
	require.NoError(t, e.Client.PublishEvent(context.Background(), workflow.Event{
		Kind: workflow.EventResult, Instance: id, Step: "a", Attempt: 1, OutputRef: inst.Steps["a"].OutputRef,
	}, "result-again"))
	inst = e.WaitTerminal(id, 60*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	require.Equal(t, 1, inst.Steps["b"].Attempt)
	require.Positive(t, d.Stats().Republished)
}

// A child whose final CAS committed and whose notice to its parent was
// lost leaves the parent waiting with no event on its way. The stale-bulk
// reconciliation finds the child without a barrier, pokes it, and the
// ended child sends its notice again. Before, the repair republished the
// child's start pointer under the id of the first one (dropped by the
// trigger stream as a duplicate inside its window, and as a duplicate
// start after it) and sent one repair per parent revision (never again
// once a recount changed nothing).
func TestLostChildNoticeIsRecoveredByReconciliation(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(childDef)
	e.Register(parentDef(0, "wait_all"))
	n := 20
	parent := workflow.InstanceID("parent", "lost-notice")
	var dropped atomic.Int32
	// The lost child's notice: an event to the parent from child 7.
	drop := func(dec workflow.Decision) bool {
		return len(dec.Events) == 1 && dec.Events[0].Event.Kind == workflow.EventChildDone &&
			dec.Events[0].Event.Instance == parent && dec.Events[0].Event.Index == 7 && dropped.CompareAndSwap(0, 1)
	}
	cfg := dispatcher.Config{StaleBulk: 2 * time.Second, RepairInterval: 200 * time.Millisecond, StaleTask: time.Hour}
	d, _ := e.Dispatcher(&faulty{Backend: e.Client, dropPublish: drop}, cfg)
	l := &ledger{runs: map[int]int{}}
	e.Worker(nil, worker.Config{Concurrency: 8}, map[string]worker.Handler{"work": l.handler(-1)})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "parent", EventKey: "lost-notice", Payload: items(n)}))
	inst := e.WaitTerminal(parent, 90*time.Second)
	require.EqualValues(t, 1, dropped.Load(), "the notice was not dropped")
	requireFanOutDone(t, e, l, inst, n)
	require.Positive(t, d.Stats().ReconcilePokes)
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Equal(t, 1, l.runs[7], "the poked child ran again")
}

// A chunk of children whose pointers were lost after the parent's CAS:
// the children do not exist. The reconciliation pokes them and each, not
// finding itself, starts from its pointer.
func TestLostChildPointersAreStartedByReconciliation(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(childDef)
	e.Register(parentDef(0, "wait_all"))
	n := 30
	parent := workflow.InstanceID("parent", "lost-pointers")
	var dropped atomic.Int32
	drop := func(dec workflow.Decision) bool {
		return decisionInstance(dec) == parent && len(dec.Children) > 0 && dropped.CompareAndSwap(0, 1)
	}
	cfg := dispatcher.Config{StaleBulk: 2 * time.Second, RepairInterval: 200 * time.Millisecond, StaleTask: time.Hour}
	d, _ := e.Dispatcher(&faulty{Backend: e.Client, dropPublish: drop}, cfg)
	l := &ledger{runs: map[int]int{}}
	e.Worker(nil, worker.Config{Concurrency: 8}, map[string]worker.Handler{"work": l.handler(-1)})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "parent", EventKey: "lost-pointers", Payload: items(n)}))
	inst := e.WaitTerminal(parent, 90*time.Second)
	require.EqualValues(t, 1, dropped.Load())
	requireFanOutDone(t, e, l, inst, n)
	require.GreaterOrEqual(t, d.Stats().ReconcilePokes, uint64(n), "every child was poked")
}
