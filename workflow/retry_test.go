package workflow_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

const operatorRetryDef = `
name: r
version: 1
deadline: 1h
steps:
  - {name: a, kind: task, task: t, next: b}
  - {name: b, kind: task, task: t, input: '{"from_a": steps.a.output}', retry: {max_attempts: 2}, next: c}
  - {name: c, kind: task, task: t}
`

func (h *harness) retry(from string, seen int) workflow.Decision {
	h.t.Helper()
	return h.apply(workflow.Event{Kind: workflow.EventRetry, Step: from, Attempt: seen})
}

// TestRetryContinuesFromTheFailedStep: a failed instance continues at its
// failed step with a fresh attempt, once per retry event, keeping what
// it recorded; late results of the old attempts change nothing.
func TestRetryContinuesFromTheFailedStep(t *testing.T) {
	t.Parallel()
	h := setup(t, operatorRetryDef, map[string]any{})
	h.start()
	h.ok("a", 1, "A")
	h.fail("b", 1, "boom")
	h.fire("retry.b.2") // the retry timer of attempt 2
	h.fail("b", 2, "boom again")
	require.Equal(t, workflow.StatusFailed, h.inst.Status)

	require.False(t, h.retry("", 1).Changed, "a retry naming a count not yet reached is ignored")
	dec := h.retry("", 0)
	require.True(t, dec.Changed)
	require.Equal(t, workflow.StatusRunning, h.inst.Status)
	require.Empty(t, h.inst.Error)
	require.True(t, h.inst.Ended.IsZero())
	require.Equal(t, 1, h.inst.Retries)
	require.Equal(t, []string{"b/3"}, taskSteps(dec.Tasks), "a fresh attempt: new task id and output key")
	require.Equal(t, workflow.StepRetryInputKey(h.id, "b", 3), dec.Tasks[0].InputRef, "its input is evaluated again under a fresh key")
	require.Len(t, dec.Timers, 1, "the deadline starts again")
	require.Equal(t, workflow.StepCompleted, h.step("a").Status, "a completed step stays completed")

	require.False(t, h.retry("", 0).Changed, "the same retry delivered again changes nothing")
	require.False(t, h.fail("b", 2, "late").Changed, "a late result of an old attempt is fenced")
	require.False(t, h.retry("", 1).Changed, "a running instance is not retried")

	h.ok("b", 3, "B")
	h.ok("c", 1, "C")
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
	require.False(t, h.retry("", 1).Changed, "a completed instance is not retried")
}

// TestRetryFromAnEarlierStep: --from activates a completed step anew and
// the chain runs again with fresh attempts.
func TestRetryFromAnEarlierStep(t *testing.T) {
	t.Parallel()
	h := setup(t, operatorRetryDef, map[string]any{})
	h.start()
	h.ok("a", 1, "A")
	h.apply(workflow.Event{Kind: workflow.EventCancel, Reason: "stop"})
	require.Equal(t, workflow.StatusCancelled, h.inst.Status)

	require.False(t, h.retry("nope", 0).Changed, "an unknown step is refused")
	dec := h.retry("a", 0)
	require.Equal(t, []string{"a/2"}, taskSteps(dec.Tasks))
	dec = h.ok("a", 2, "A2")
	require.Equal(t, []string{"b/2"}, taskSteps(dec.Tasks), "b ran attempt 1 before: the new activation is attempt 2")
	require.Equal(t, workflow.StepRetryInputKey(h.id, "b", 2), dec.Tasks[0].InputRef)
	require.Equal(t, map[string]any{"from_a": "A2"}, dec.Writes[0].Value, "the input sees the new output of a")
}

// TestRetryOfACancelledInstanceResumesRunningSteps: the steps that were
// running when the instance was cancelled start fresh attempts, in every
// branch.
func TestRetryOfACancelledInstanceResumesRunningSteps(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: p
version: 1
steps:
  - {name: fan, kind: parallel, branches: [x, y], next: z}
  - {name: x, kind: task, task: t}
  - {name: y, kind: task, task: t}
  - {name: z, kind: task, task: t}
`, map[string]any{})
	h.start()
	h.ok("x", 1, 1)
	h.apply(workflow.Event{Kind: workflow.EventCancel})
	dec := h.retry("", 0)
	require.Equal(t, []string{"y/2"}, taskSteps(dec.Tasks), "only the step that was running")
	dec = h.ok("y", 2, 2)
	require.Equal(t, []string{"z/1"}, taskSteps(dec.Tasks), "the parallel step completes when its last branch does")
	h.ok("z", 1, 3)
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
}

// TestRetryNeverRedispatchesABulkStep: a bulk step that ran keeps its
// outcome when a retry reaches it again, and is refused as --from.
func TestRetryNeverRedispatchesABulkStep(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: b
version: 1
steps:
  - {name: fan, kind: bulk, workflow: child, items: input.items, next: after}
  - {name: after, kind: task, task: t}
`, map[string]any{"items": []any{}})
	h.start()
	require.Equal(t, workflow.StepCompleted, h.step("fan").Status)
	h.fail("after", 1, "x")
	h.fire("retry.after.2")
	h.fail("after", 2, "x")
	h.fire("retry.after.3")
	h.fail("after", 3, "x")
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
	require.False(t, h.retry("fan", 0).Changed)
	dec := h.retry("", 0)
	require.Equal(t, []string{"after/4"}, taskSteps(dec.Tasks))
	require.Empty(t, dec.Children)
}

// TestParentCancelCreatesALateChildCancelled: a parent's cancel that
// reaches its child workflow before the child's start creates the child
// cancelled; the start then changes nothing.
func TestParentCancelCreatesALateChildCancelled(t *testing.T) {
	t.Parallel()
	h := setup(t, "name: kid\nversion: 1\nsteps:\n  - {name: do, kind: task, task: t}\n", map[string]any{})
	parent := &workflow.ParentRef{ID: "mom-x", Step: "call", Index: 1}
	h.id = workflow.ChildInstanceID("kid", parent.ID, parent.Step, parent.Index)
	dec := h.apply(workflow.Event{Kind: workflow.EventCancel, Workflow: "kid", Parent: parent, Reason: "parent mom-x cancelled"})
	require.True(t, dec.Changed)
	require.Equal(t, workflow.StatusCancelled, h.inst.Status)
	require.Contains(t, h.inst.Error, "before the child started")
	require.Empty(t, dec.Tasks)
	dec = h.apply(workflow.Event{Kind: workflow.EventStart, Workflow: "kid", Version: 1, Parent: parent})
	require.False(t, dec.Changed, "the late start changes nothing")
	require.False(t, h.apply(workflow.Event{Kind: workflow.EventCancel, Workflow: "other", Parent: parent}).Changed)
}
