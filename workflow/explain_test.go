package workflow_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

var (
	policy = workflow.RepairPolicy{StaleTask: 10 * time.Minute, TimerGrace: 5 * time.Second, StaleBulk: 30 * time.Second}
)

const explainDef = `
name: shop
version: 1
steps:
  - {name: pay, kind: task, task: charge-card, next: approve}
  - {name: approve, kind: wait, signal: approved, timeout: 1h, next: nap}
  - {name: nap, kind: sleep, duration: 10s, next: notify}
  - {name: notify, kind: bulk, workflow: mail, items: input.to, next: flaky}
  - {name: flaky, kind: task, task: call, retry: {max_attempts: 4}}
`

// startShop starts an instance and runs it to the step named; events are
// applied at t0 + 1s each.
func startShop(t *testing.T, until string) (*workflow.Definition, *workflow.Instance) {
	t.Helper()
	def, err := workflow.Parse("shop.yaml", []byte(explainDef))
	require.NoError(t, err)
	data := memData{"shop-1.in": map[string]any{"to": []any{"a", "b", "c"}}}
	now := t0
	dec, err := workflow.Apply(def, nil, workflow.Event{Kind: workflow.EventStart, Instance: "shop-1", Workflow: "shop", Version: 1, InputRef: "shop-1.in"}, now, data)
	require.NoError(t, err)
	inst := dec.Instance
	step := func(ev workflow.Event) {
		now = now.Add(time.Second)
		dec, err := workflow.Apply(def, inst, ev, now, data)
		require.NoError(t, err)
		require.True(t, dec.Changed, "%+v: %s", ev, dec.Ignored)
		inst = dec.Instance
	}
	if until == "pay" {
		return def, inst
	}
	step(workflow.Event{Kind: workflow.EventResult, Instance: inst.ID, Step: "pay", Attempt: 1})
	if until == "approve" {
		return def, inst
	}
	step(workflow.Event{Kind: workflow.EventSignal, Instance: inst.ID, Signal: "approved", OutputRef: "sig"})
	if until == "nap" {
		return def, inst
	}
	step(workflow.Event{Kind: workflow.EventTimer, Instance: inst.ID, Timer: "sleep.nap.1"})
	if until == "notify" {
		return def, inst
	}
	for i := range 3 {
		step(workflow.Event{Kind: workflow.EventChildDone, Instance: inst.ID, Step: "notify", Index: i, ChildStatus: workflow.StatusCompleted})
	}
	return def, inst
}

func waitOf(t *testing.T, x workflow.Explanation, step string) workflow.Wait {
	t.Helper()
	for _, w := range x.Waits {
		if w.Step == step {
			return w
		}
	}
	t.Fatalf("no wait for step %s in %+v", step, x.Waits)
	return workflow.Wait{}
}

func TestExplainTaskWithoutWorker(t *testing.T) {
	t.Parallel()
	def, inst := startShop(t, "pay")
	f := workflow.ExplainFacts{
		Now: t0.Add(time.Minute), Policy: policy, PresenceKnown: true, Dispatchers: 1,
		Workers:  map[string][]string{"call": {"w1"}},
		Tasks:    map[string]workflow.TaskFacts{"charge-card": {Stored: 1, Pending: 1}},
		Attempts: map[string]workflow.AttemptFacts{"pay": {Searched: true, Found: true, Stored: t0}},
	}
	x := workflow.Explain(def, inst, f)
	require.Contains(t, x.Problems, "no worker for task type charge-card is connected")
	w := waitOf(t, x, "pay")
	require.Equal(t, workflow.WaitTask, w.For)
	require.Equal(t, "charge-card", w.TaskType)
	require.Equal(t, t0, w.Since)
	require.Contains(t, w.Detail, "not delivered to any worker yet")
	require.Equal(t, t0.Add(10*time.Minute), w.RepairAt, "the stale-task repair")
	require.Equal(t, t0.Add(10*time.Minute), x.NextRepair)
	require.Contains(t, x.Summary, "no worker for task type charge-card is connected")

	// With a worker that serves the type, but all its slots busy.
	f.Workers["charge-card"] = []string{"w2"}
	x = workflow.Explain(def, inst, f)
	require.Empty(t, x.Problems)
	require.Contains(t, waitOf(t, x, "pay").Detail, "none is pulling it right now")

	// Presence unknown: no claim either way.
	f.PresenceKnown = false
	x = workflow.Explain(def, inst, f)
	require.Empty(t, x.Problems)
	require.NotContains(t, waitOf(t, x, "pay").Detail, "worker(s) serve")
}

func TestExplainWaitingSignal(t *testing.T) {
	t.Parallel()
	def, inst := startShop(t, "approve")
	x := workflow.Explain(def, inst, workflow.ExplainFacts{Now: t0.Add(time.Minute), Policy: policy})
	w := waitOf(t, x, "approve")
	require.Equal(t, workflow.WaitSignal, w.For)
	require.Equal(t, "approved", w.Signal)
	require.Equal(t, t0.Add(time.Second), w.Since)
	require.Equal(t, t0.Add(time.Second+time.Hour), w.Due, "the wait's timeout")
	require.False(t, w.Overdue)
	require.Contains(t, w.Detail, `waiting for signal "approved"`)
	require.Len(t, x.Waits, 1)
}

func TestExplainOverdueTimer(t *testing.T) {
	t.Parallel()
	def, inst := startShop(t, "nap")
	due := t0.Add(2*time.Second + 10*time.Second)
	// Before it is due: not overdue.
	w := waitOf(t, workflow.Explain(def, inst, workflow.ExplainFacts{Now: due.Add(-time.Second), Policy: policy}), "nap")
	require.Equal(t, workflow.WaitTimer, w.For)
	require.Equal(t, due, w.Due)
	require.False(t, w.Overdue)
	require.True(t, w.RepairAt.IsZero())
	// Overdue, inside the grace: the repair loop fires it at due+grace.
	x := workflow.Explain(def, inst, workflow.ExplainFacts{Now: due.Add(2 * time.Second), Policy: policy})
	w = waitOf(t, x, "nap")
	require.True(t, w.Overdue)
	require.Equal(t, due.Add(5*time.Second), w.RepairAt)
	require.Equal(t, due.Add(5*time.Second), x.NextRepair)
	require.Contains(t, w.Detail, "the repair loop fires it at")
	// Past the grace too: it should have fired; and no dispatcher is
	// connected.
	x = workflow.Explain(def, inst, workflow.ExplainFacts{Now: due.Add(time.Minute), Policy: policy, PresenceKnown: true})
	require.Contains(t, waitOf(t, x, "nap").Detail, "should have fired it")
	require.Contains(t, x.Problems, "no dispatcher is connected: nothing applies results, fires timers or repairs")
}

func TestExplainBulkChildren(t *testing.T) {
	t.Parallel()
	def, inst := startShop(t, "notify")
	moved := t0.Add(3 * time.Second)
	f := workflow.ExplainFacts{Now: moved.Add(10 * time.Second), Policy: policy, Children: map[string][]workflow.ChildFacts{
		"notify": {
			{Index: 0, ID: "c0", Status: workflow.StatusRunning},
			{Index: 1, ID: "c1", Status: workflow.StatusCompleted},
			{Index: 2, ID: "c2"},
		},
	}}
	x := workflow.Explain(def, inst, f)
	w := waitOf(t, x, "notify")
	require.Equal(t, workflow.WaitChildren, w.For)
	require.Equal(t, 3, w.Bulk.Total)
	require.Equal(t, 3, w.Bulk.InFlight)
	require.Len(t, w.Bulk.Running, 1)
	require.Len(t, w.Bulk.Stuck, 2)
	require.Contains(t, w.Detail, "child 1 (c1) completed but its completion is not counted")
	require.Contains(t, w.Detail, "child 2 (c2) does not exist")
	require.Equal(t, moved.Add(30*time.Second), w.RepairAt, "the first reconciliation round")
	// Once a round is past and the step still has not moved: the next.
	f.Now = moved.Add(45 * time.Second)
	require.Equal(t, moved.Add(60*time.Second), waitOf(t, workflow.Explain(def, inst, f), "notify").RepairAt)
}

func TestExplainRetryAfterError(t *testing.T) {
	t.Parallel()
	def, inst := startShop(t, "flaky")
	dec, err := workflow.Apply(def, inst, workflow.Event{Kind: workflow.EventResult, Instance: inst.ID, Step: "flaky", Attempt: 1, Error: "503 from the bank"}, t0.Add(time.Minute), nil)
	require.NoError(t, err)
	x := workflow.Explain(def, dec.Instance, workflow.ExplainFacts{Now: t0.Add(time.Minute), Policy: policy})
	w := waitOf(t, x, "flaky")
	require.Equal(t, workflow.WaitRetry, w.For)
	require.Equal(t, 2, w.Attempt)
	require.Equal(t, "503 from the bank", w.Error)
	require.Equal(t, t0.Add(time.Minute+time.Second), w.Due, "the default policy's first backoff")
	require.Equal(t, "503 from the bank", x.LastError)
	require.Equal(t, "flaky", x.LastErrorStep)
	require.True(t, strings.Contains(w.Detail, "attempt 2 is scheduled"), w.Detail)
}

func TestExplainEndedInstance(t *testing.T) {
	t.Parallel()
	def, inst := startShop(t, "flaky")
	dec, err := workflow.Apply(def, inst, workflow.Event{Kind: workflow.EventResult, Instance: inst.ID, Step: "flaky", Attempt: 1}, t0.Add(time.Minute), nil)
	require.NoError(t, err)
	x := workflow.Explain(def, dec.Instance, workflow.ExplainFacts{Now: t0.Add(time.Hour), Policy: policy})
	require.Equal(t, workflow.StatusCompleted, x.Status)
	require.Empty(t, x.Waits)
	require.True(t, x.NextRepair.IsZero())
	require.Contains(t, x.Summary, "waits for nothing")
}
