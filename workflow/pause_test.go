package workflow_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

const pauseDef = `
name: pz
version: 1
steps:
  - {name: a, kind: task, task: t, next: nap}
  - {name: nap, kind: sleep, duration: 5s, next: b}
  - {name: b, kind: task, task: t, timeout: 30s}
`

// TestPauseHoldsTheAttemptATimerStarts: the sleep timer fires while the
// workflow is paused; the next step's attempt waits at the pause gate with
// no task and no timeout, is not released while paused, and is released
// once (its task published once) after the resume.
func TestPauseHoldsTheAttemptATimerStarts(t *testing.T) {
	t.Parallel()
	h := setup(t, pauseDef, map[string]any{})
	h.start()
	h.ok("a", 1, "x")
	h.now = h.now.Add(5 * time.Second)
	dec := h.apply(workflow.Event{Kind: workflow.EventTimer, Timer: "sleep.nap.1", Paused: true})
	require.Empty(t, dec.Tasks)
	require.Empty(t, dec.Timers, "no timeout runs while the attempt is held")
	b := h.step("b")
	require.Equal(t, workflow.GatePaused, b.Gate)
	require.Equal(t, 1, b.Attempt)
	require.Empty(t, workflow.Outstanding(h.def, h.inst).Tasks, "a held attempt owes no task")
	require.Empty(t, workflow.Repairs(h.def, h.inst, h.now.Add(time.Hour), workflow.RepairPolicy{StaleTask: time.Minute, StaleGate: time.Minute}),
		"the repair loop's stale-task and gate repairs leave a held attempt alone")

	x := workflow.Explain(h.def, h.inst, workflow.ExplainFacts{Now: h.now, PausedKnown: true, Paused: true})
	require.Contains(t, x.Summary, "step b waits because workflow pz is paused")

	held := workflow.PausedAttempts(h.inst)
	require.Equal(t, []workflow.Holder{{Instance: h.id, Step: "b", Attempt: 1}}, held)
	rel := workflow.PauseRelease(held[0], "1")
	ev := rel.Event
	ev.Paused = true
	dec = h.apply(ev)
	require.False(t, dec.Changed, "a release applied while still paused changes nothing")

	ev.Paused = false
	dec = h.apply(ev)
	require.Len(t, dec.Tasks, 1)
	require.Equal(t, 1, dec.Tasks[0].Attempt)
	require.Len(t, dec.Timers, 1, "the timeout starts when the task is published")
	require.Empty(t, h.step("b").Gate)
	dec = h.apply(ev)
	require.False(t, dec.Changed, "a second release changes nothing")
}
