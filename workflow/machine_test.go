package workflow_test

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

const chainDef = `
name: chain
version: 3
steps:
  - {name: a, kind: task, task: work, next: b}
  - {name: b, kind: task, task: work}
`

func TestApplyStart(t *testing.T) {
	t.Parallel()
	h := setup(t, chainDef, map[string]any{"n": 1})
	dec := h.start()

	require.True(t, dec.Changed)
	inst := dec.Instance
	require.Equal(t, h.id, inst.ID)
	require.Equal(t, "chain", inst.Workflow)
	require.Equal(t, 3, inst.Version)
	require.Equal(t, "key-1", inst.EventKey)
	require.Equal(t, workflow.InputKey(h.id), inst.InputRef)
	require.Equal(t, workflow.StatusRunning, inst.Status)
	require.Equal(t, t0, inst.Created)
	require.Equal(t, t0, inst.Updated)
	require.Equal(t, uint64(1), inst.Events)
	require.Equal(t, map[string]*workflow.StepState{
		"a": {Status: workflow.StepRunning, Attempt: 1, InputRef: workflow.InputKey(h.id), Started: t0, AttemptStarted: t0},
	}, inst.Steps)
	require.Empty(t, inst.Timers)
	require.Empty(t, dec.Writes)
	require.Empty(t, dec.Timers)
	require.Equal(t, []workflow.Task{{
		Instance:    h.id,
		Workflow:    "chain",
		Version:     3,
		Step:        "a",
		Type:        "work",
		Attempt:     1,
		InputRef:    workflow.InputKey(h.id),
		EffectKey:   workflow.EffectKey(h.id, "a"),
		MaxAttempts: workflow.DefaultRetryPolicy.MaxAttempts,
	}}, dec.Tasks)
}

func TestApplyChainToCompletion(t *testing.T) {
	t.Parallel()
	h := setup(t, chainDef, nil)
	h.start()

	h.now = t0.Add(time.Second)
	dec := h.ok("a", 1, "out-a")
	require.Equal(t, []string{"b/1"}, taskSteps(dec.Tasks))
	a := h.step("a")
	require.Equal(t, workflow.StepCompleted, a.Status)
	require.Equal(t, workflow.OutputKey(h.id, "a", 1), a.OutputRef)
	require.Equal(t, h.now, a.Ended)
	require.Equal(t, workflow.StepRunning, h.step("b").Status)
	require.Equal(t, workflow.StatusRunning, h.inst.Status)
	require.Equal(t, uint64(2), h.inst.Events)

	h.now = t0.Add(2 * time.Second)
	dec = h.ok("b", 1, "out-b")
	require.Empty(t, dec.Tasks)
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
	require.Equal(t, workflow.OutputKey(h.id, "b", 1), h.inst.OutputRef, "without an output expression the last step's output is the instance's")
	require.Empty(t, h.inst.Error)
	require.Equal(t, h.now, h.inst.Ended)
	require.Equal(t, h.now, h.inst.Updated)
	require.Equal(t, uint64(3), h.inst.Events)
}

const parallelDef = `
name: par
version: 1
steps:
  - {name: fan, kind: parallel, branches: [x, y, z], next: after}
  - {name: x, kind: task, task: work}
  - {name: y, kind: task, task: work, next: y2}
  - {name: y2, kind: task, task: work}
  - {name: z, kind: task, task: work}
  - {name: after, kind: task, task: work}
`

func TestApplyParallelJoin(t *testing.T) {
	t.Parallel()
	// y2 follows y within its branch; every other order is free.
	tests := []struct {
		name  string
		order []string
	}{
		{name: "in listed order", order: []string{"x", "y", "y2", "z"}},
		{name: "reversed", order: []string{"z", "y", "y2", "x"}},
		{name: "long branch last", order: []string{"y", "x", "z", "y2"}},
		{name: "long branch first", order: []string{"y", "y2", "z", "x"}},
		{name: "interleaved", order: []string{"z", "y", "x", "y2"}},
		{name: "x last", order: []string{"y", "z", "y2", "x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, parallelDef, nil)
			dec := h.start()
			require.Equal(t, []string{"x/1", "y/1", "z/1"}, taskSteps(dec.Tasks))
			require.Equal(t, workflow.StepRunning, h.step("fan").Status)
			require.Equal(t, 3, h.step("fan").Pending)

			for i, step := range tc.order {
				dec := h.ok(step, 1, step+"-out")
				last := i == len(tc.order)-1
				if !last {
					require.NotContains(t, taskSteps(dec.Tasks), "after/1", "joined before every branch ended")
					require.Equal(t, workflow.StepRunning, h.step("fan").Status)
					require.NotContains(t, h.inst.Steps, "after")
					continue
				}
				require.Equal(t, []string{"after/1"}, taskSteps(dec.Tasks))
			}
			fan := h.step("fan")
			require.Equal(t, workflow.StepCompleted, fan.Status)
			require.Zero(t, fan.Pending)

			h.ok("after", 1, "done")
			require.Equal(t, workflow.StatusCompleted, h.inst.Status)
			require.Equal(t, workflow.OutputKey(h.id, "after", 1), h.inst.OutputRef)
		})
	}
}

func TestApplyParallelDuplicateBranchResultDoesNotCountTwice(t *testing.T) {
	t.Parallel()
	h := setup(t, parallelDef, nil)
	h.start()
	h.ok("x", 1, "x")
	dec := h.ok("x", 1, "x") // redelivered result
	require.False(t, dec.Changed)
	require.Equal(t, 2, h.step("fan").Pending)
	h.ok("z", 1, "z")
	h.ok("y", 1, "y")
	require.Equal(t, workflow.StepRunning, h.step("fan").Status)
	dec = h.ok("y2", 1, "y2")
	require.Equal(t, []string{"after/1"}, taskSteps(dec.Tasks))
}

func TestApplyNestedParallel(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: nested
version: 1
steps:
  - {name: outer, kind: parallel, branches: [inner, c]}
  - {name: inner, kind: parallel, branches: [a, b], next: d}
  - {name: a, kind: task, task: work}
  - {name: b, kind: task, task: work}
  - {name: c, kind: task, task: work}
  - {name: d, kind: task, task: work}
`, nil)
	dec := h.start()
	require.Equal(t, []string{"a/1", "b/1", "c/1"}, taskSteps(dec.Tasks))
	h.ok("c", 1, nil)
	h.ok("b", 1, nil)
	require.Equal(t, workflow.StepRunning, h.step("outer").Status)
	dec = h.ok("a", 1, nil)
	require.Equal(t, []string{"d/1"}, taskSteps(dec.Tasks))
	require.Equal(t, workflow.StepCompleted, h.step("inner").Status)
	require.Equal(t, workflow.StepRunning, h.step("outer").Status)
	h.ok("d", 1, "d-out")
	require.Equal(t, workflow.StepCompleted, h.step("outer").Status)
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
}

// Branches that end at once (a switch with no match) join in the same
// transition.
func TestApplyParallelBranchesEndingImmediately(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: instant
version: 1
steps:
  - {name: p, kind: parallel, branches: [s1, s2], next: after}
  - {name: s1, kind: switch, cases: [{when: 'false', next: never1}]}
  - {name: s2, kind: switch, cases: [{when: 'false', next: never2}]}
  - {name: never1, kind: task, task: work}
  - {name: never2, kind: task, task: work}
  - {name: after, kind: task, task: work}
`, nil)
	dec := h.start()
	require.Equal(t, []string{"after/1"}, taskSteps(dec.Tasks))
	require.Equal(t, workflow.StepCompleted, h.step("p").Status)
}

// Two branches of one parallel joining on a step: the step runs twice and
// the parallel step never completes. Validation should reject such a
// definition (see TestParseRejects); this shows the consequence.
func TestApplyBranchesJoiningOnAStep(t *testing.T) {
	t.Parallel()

	const src = `
name: join
version: 1
steps:
  - {name: p, kind: parallel, branches: [a, b]}
  - {name: a, kind: task, task: work, next: c}
  - {name: b, kind: task, task: work, next: c}
  - {name: c, kind: task, task: work}
`
	if _, err := workflow.Parse("join.yaml", []byte(src)); err != nil {
		require.ErrorIs(t, err, workflow.ErrInvalidDefinition) // fixed by validation
		return
	}
	h := setup(t, src, nil)
	h.start()
	h.ok("a", 1, nil)
	h.ok("c", 1, nil)
	prev := h.inst.Clone()
	h.ok("b", 1, nil)
	requireForward(t, prev, h.inst)
	for _, tk := range workflow.Outstanding(h.def, h.inst).Tasks {
		h.ok(tk.Step, tk.Attempt, nil)
	}
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
}

const switchDef = `
name: sw
version: 1
steps:
  - {name: check, kind: task, task: work, next: route}
  - name: route
    kind: switch
    cases:
      - {when: steps.check.output.amount >= 1000, next: big}
      - {when: input.vip == true, next: vip}
    default: normal
  - {name: big, kind: task, task: work}
  - {name: vip, kind: task, task: work}
  - {name: normal, kind: task, task: work}
`

func TestApplySwitch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		input  map[string]any
		amount float64
		want   string
	}{
		{name: "first case", input: map[string]any{"vip": true}, amount: 5000, want: "big"},
		{name: "first case at bound", input: map[string]any{}, amount: 1000, want: "big"},
		{name: "second case", input: map[string]any{"vip": true}, amount: 10, want: "vip"},
		{name: "default", input: map[string]any{"vip": false}, amount: 10, want: "normal"},
		{name: "default when field missing", input: map[string]any{}, amount: 999, want: "normal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, switchDef, tc.input)
			h.start()
			dec := h.ok("check", 1, map[string]any{"amount": tc.amount})
			require.Equal(t, []string{tc.want + "/1"}, taskSteps(dec.Tasks))
			route := h.step("route")
			require.Equal(t, workflow.StepCompleted, route.Status)
			require.Equal(t, h.now, route.Ended)
			for _, other := range []string{"big", "vip", "normal"} {
				if other != tc.want {
					require.NotContains(t, h.inst.Steps, other)
				}
			}
			h.ok(tc.want, 1, "shipped")
			require.Equal(t, workflow.StatusCompleted, h.inst.Status)
			require.Equal(t, workflow.OutputKey(h.id, tc.want, 1), h.inst.OutputRef)
		})
	}
}

func TestApplySwitchNoMatchWithoutDefaultEndsChain(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: sw
version: 1
steps:
  - {name: check, kind: task, task: work, next: route}
  - {name: route, kind: switch, cases: [{when: input.go == true, next: big}]}
  - {name: big, kind: task, task: work}
`, map[string]any{"go": false})
	h.start()
	dec := h.ok("check", 1, nil)
	require.Empty(t, dec.Tasks)
	require.Equal(t, workflow.StepCompleted, h.step("route").Status)
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
	require.Empty(t, h.inst.OutputRef)
	require.NotContains(t, h.inst.Steps, "big")
}

func TestApplySwitchConditionNotBoolFailsInstance(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: sw
version: 1
steps:
  - {name: route, kind: switch, cases: [{when: input.amount, next: big}]}
  - {name: big, kind: task, task: work}
`, map[string]any{"amount": 3})
	dec := h.start()
	require.Empty(t, dec.Tasks)
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
	require.Equal(t, workflow.StepFailed, h.step("route").Status)
	require.Contains(t, h.inst.Error, `step "route"`)
	require.Contains(t, h.inst.Error, "case 1 condition")
	require.Contains(t, h.inst.Error, "not bool")
}

const retryDef = `
name: retry
version: 1
steps:
  - name: a
    kind: task
    task: work
    timeout: 10s
    retry: {max_attempts: 3, initial_interval: 2s, backoff_coefficient: 3, max_interval: 5s}
`

func TestApplyRetryWithBackoff(t *testing.T) {
	t.Parallel()
	h := setup(t, retryDef, nil)
	dec := h.start()
	require.Equal(t, []workflow.Timer{{Instance: h.id, ID: "timeout.a.1", At: t0.Add(10 * time.Second)}}, dec.Timers)
	require.Equal(t, 10*time.Second, dec.Tasks[0].Timeout)
	require.Equal(t, 3, dec.Tasks[0].MaxAttempts)

	// Attempt 1 fails: wait 2s (initial interval).
	h.now = t0.Add(time.Second)
	dec = h.fail("a", 1, "boom")
	require.Empty(t, dec.Tasks)
	wantAt := h.now.Add(2 * time.Second)
	require.Equal(t, []workflow.Timer{{Instance: h.id, ID: "retry.a.2", At: wantAt}}, dec.Timers)
	require.Equal(t, map[string]time.Time{"retry.a.2": wantAt}, h.inst.Timers, "the timeout of attempt 1 is cancelled")
	a := h.step("a")
	require.Equal(t, workflow.StepWaiting, a.Status)
	require.Equal(t, 1, a.Attempt)
	require.Equal(t, "boom", a.Error)

	// The retry timer starts attempt 2.
	h.now = wantAt
	dec = h.fire("retry.a.2")
	require.Equal(t, []string{"a/2"}, taskSteps(dec.Tasks))
	require.Equal(t, []workflow.Timer{{Instance: h.id, ID: "timeout.a.2", At: h.now.Add(10 * time.Second)}}, dec.Timers)
	require.Equal(t, map[string]time.Time{"timeout.a.2": h.now.Add(10 * time.Second)}, h.inst.Timers)
	a = h.step("a")
	require.Equal(t, workflow.StepRunning, a.Status)
	require.Equal(t, 2, a.Attempt)
	require.Equal(t, h.now, a.AttemptStarted)
	require.Equal(t, t0, a.Started)

	// Attempt 2 fails: 2s*3 = 6s, capped at 5s.
	dec = h.fail("a", 2, "boom again")
	require.Equal(t, []workflow.Timer{{Instance: h.id, ID: "retry.a.3", At: h.now.Add(5 * time.Second)}}, dec.Timers)
	h.now = h.now.Add(5 * time.Second)
	dec = h.fire("retry.a.3")
	require.Equal(t, []string{"a/3"}, taskSteps(dec.Tasks))

	// Attempt 3 is the last.
	dec = h.fail("a", 3, "still broken")
	require.Empty(t, dec.Tasks)
	require.Empty(t, dec.Timers)
	require.Equal(t, workflow.StepFailed, h.step("a").Status)
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
	require.Equal(t, `step "a" failed after 3 attempt(s): still broken`, h.inst.Error)
	require.Empty(t, h.inst.Timers)
}

func TestApplyRetryAfterOverridesBackoff(t *testing.T) {
	t.Parallel()
	h := setup(t, retryDef, nil)
	h.start()
	dec := h.apply(workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: "rate limited", RetryAfter: 42 * time.Second})
	require.Equal(t, []workflow.Timer{{Instance: h.id, ID: "retry.a.2", At: t0.Add(42 * time.Second)}}, dec.Timers)
}

func TestApplyDefaultRetryPolicy(t *testing.T) {
	t.Parallel()
	h := setup(t, chainDef, nil)
	h.start()
	dec := h.fail("a", 1, "x")
	require.Equal(t, []workflow.Timer{{Instance: h.id, ID: "retry.a.2", At: t0.Add(workflow.DefaultRetryPolicy.InitialInterval.D())}}, dec.Timers)
	h.fire("retry.a.2")
	dec = h.fail("a", 2, "x")
	require.Equal(t, t0.Add(2*time.Second), dec.Timers[0].At)
	h.fire("retry.a.3")
	h.fail("a", 3, "x")
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
}

func TestApplyTimeout(t *testing.T) {
	t.Parallel()
	h := setup(t, retryDef, nil)
	h.start()
	h.now = t0.Add(10 * time.Second)
	dec := h.fire("timeout.a.1")
	require.Equal(t, []workflow.Timer{{Instance: h.id, ID: "retry.a.2", At: h.now.Add(2 * time.Second)}}, dec.Timers)
	a := h.step("a")
	require.Equal(t, workflow.StepWaiting, a.Status)
	require.Equal(t, "attempt 1 timed out after 10s", a.Error)

	// The timed-out attempt reports late: ignored.
	dec = h.ok("a", 1, "late")
	require.Contains(t, dec.Ignored, "stale result")

	h.fire("retry.a.2")
	h.ok("a", 2, "on time")
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
	require.Equal(t, workflow.OutputKey(h.id, "a", 2), h.inst.OutputRef)
}

func TestApplyTimeoutOnLastAttemptFails(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: to
version: 1
steps:
  - {name: a, kind: task, task: work, timeout: 1s, retry: {max_attempts: 1}}
`, nil)
	h.start()
	h.fire("timeout.a.1")
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
	require.Equal(t, `step "a" failed after 1 attempt(s): attempt 1 timed out after 1s`, h.inst.Error)
}

func TestApplyPermanentFailure(t *testing.T) {
	t.Parallel()
	h := setup(t, retryDef, nil)
	h.start()
	dec := h.apply(workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: "card declined", Permanent: true})
	require.Empty(t, dec.Tasks)
	require.Empty(t, dec.Timers)
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
	require.Equal(t, `step "a" failed permanently on attempt 1: card declined`, h.inst.Error)
	a := h.step("a")
	require.Equal(t, workflow.StepFailed, a.Status)
	require.Equal(t, "failed permanently on attempt 1: card declined", a.Error)
	require.Empty(t, h.inst.Timers)
	require.Equal(t, t0, h.inst.Ended)
}

const onFailureDef = `
name: onf
version: 1
steps:
  - {name: charge, kind: task, task: pay, retry: {max_attempts: 1}, next: ship, on_failure: refund}
  - {name: ship, kind: task, task: ship}
  - {name: refund, kind: task, task: refund, next: notify}
  - {name: notify, kind: task, task: mail}
`

func TestApplyOnFailure(t *testing.T) {
	t.Parallel()
	h := setup(t, onFailureDef, nil)
	h.start()
	dec := h.fail("charge", 1, "declined")
	require.Equal(t, []string{"refund/1"}, taskSteps(dec.Tasks))
	require.Equal(t, workflow.StepFailed, h.step("charge").Status)
	require.Equal(t, workflow.StatusRunning, h.inst.Status)
	require.NotContains(t, h.inst.Steps, "ship")

	h.ok("refund", 1, nil)
	h.ok("notify", 1, "mailed")
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
	require.Equal(t, workflow.OutputKey(h.id, "notify", 1), h.inst.OutputRef)
}

func TestApplyOnFailureNotTakenOnSuccess(t *testing.T) {
	t.Parallel()
	h := setup(t, onFailureDef, nil)
	h.start()
	dec := h.ok("charge", 1, nil)
	require.Equal(t, []string{"ship/1"}, taskSteps(dec.Tasks))
	h.ok("ship", 1, nil)
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
	require.NotContains(t, h.inst.Steps, "refund")
}

func TestApplyOnFailureInsideBranch(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: onfb
version: 1
steps:
  - {name: p, kind: parallel, branches: [a, b], next: done}
  - {name: a, kind: task, task: work, retry: {max_attempts: 1}, on_failure: compensate}
  - {name: compensate, kind: task, task: work}
  - {name: b, kind: task, task: work}
  - {name: done, kind: task, task: work}
`, nil)
	h.start()
	h.ok("b", 1, nil)
	dec := h.apply(workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: "nope", Permanent: true})
	require.Equal(t, []string{"compensate/1"}, taskSteps(dec.Tasks))
	require.Equal(t, workflow.StepRunning, h.step("p").Status)
	dec = h.ok("compensate", 1, nil)
	require.Equal(t, []string{"done/1"}, taskSteps(dec.Tasks), "the branch ends with its on_failure chain")
}

func TestApplyFailureInsideBranchFailsInstance(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: fb
version: 1
steps:
  - {name: p, kind: parallel, branches: [a, b], next: done}
  - {name: a, kind: task, task: work, retry: {max_attempts: 1}}
  - {name: b, kind: task, task: work, timeout: 5s}
  - {name: done, kind: task, task: work}
`, nil)
	h.start()
	require.Contains(t, h.inst.Timers, "timeout.b.1")
	dec := h.fail("a", 1, "bad")
	require.Empty(t, dec.Tasks)
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
	require.Equal(t, `step "a" failed after 1 attempt(s): bad`, h.inst.Error)
	require.Empty(t, h.inst.Timers, "timers of other branches are dropped")
	dec = h.ok("b", 1, nil)
	require.Equal(t, "instance already failed", dec.Ignored)
}

func TestApplyIgnoresStaleEvents(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prepare func(h *harness)
		event   workflow.Event
		ignored string
	}{
		{
			name:    "older attempt",
			prepare: func(h *harness) { h.fail("a", 1, "x"); h.fire("retry.a.2") },
			event:   workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, OutputRef: "late"},
			ignored: `stale result: attempt 1 of step "a", current attempt is 2`,
		},
		{
			name:    "older attempt failing",
			prepare: func(h *harness) { h.fail("a", 1, "x"); h.fire("retry.a.2") },
			event:   workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: "late failure", Permanent: true},
			ignored: `stale result: attempt 1 of step "a"`,
		},
		{
			name:    "future attempt",
			event:   workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 2, OutputRef: "x"},
			ignored: `stale result: attempt 2 of step "a", current attempt is 1`,
		},
		{
			name:    "attempt zero",
			event:   workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 0},
			ignored: `stale result: attempt 0`,
		},
		{
			name:    "result while waiting for retry",
			prepare: func(h *harness) { h.fail("a", 1, "x") },
			event:   workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, OutputRef: "x"},
			ignored: `stale result: step "a" is waiting`,
		},
		{
			name:    "already completed step",
			prepare: func(h *harness) { h.ok("a", 1, "first") },
			event:   workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, OutputRef: "second"},
			ignored: `stale result: step "a" is completed`,
		},
		{
			name:    "failure after completion",
			prepare: func(h *harness) { h.ok("a", 1, "first") },
			event:   workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: "zombie"},
			ignored: `stale result: step "a" is completed`,
		},
		{
			name:    "step not started",
			event:   workflow.Event{Kind: workflow.EventResult, Step: "b", Attempt: 1},
			ignored: `result for step "b" that is not a running task`,
		},
		{
			name:    "unknown step",
			event:   workflow.Event{Kind: workflow.EventResult, Step: "ghost", Attempt: 1},
			ignored: `result for step "ghost" that is not a running task`,
		},
		{
			name:    "timer not pending",
			event:   workflow.Event{Kind: workflow.EventTimer, Timer: "retry.a.2"},
			ignored: `timer "retry.a.2" is not pending`,
		},
		{
			name:    "timer fired twice",
			prepare: func(h *harness) { h.fail("a", 1, "x"); h.fire("retry.a.2") },
			event:   workflow.Event{Kind: workflow.EventTimer, Timer: "retry.a.2"},
			ignored: `timer "retry.a.2" is not pending`,
		},
		{
			name:    "timeout of an attempt that finished",
			prepare: func(h *harness) { h.fail("a", 1, "x") },
			event:   workflow.Event{Kind: workflow.EventTimer, Timer: "timeout.a.1"},
			ignored: `timer "timeout.a.1" is not pending`,
		},
		{
			name: "duplicate start",
			event: workflow.Event{
				Kind: workflow.EventStart, Workflow: "retry", Version: 1, EventKey: "key-1", InputRef: "other",
			},
			ignored: "duplicate trigger: instance exists",
		},
		{
			name:    "duplicate start on a finished instance",
			prepare: func(h *harness) { h.ok("a", 1, nil); h.ok("b", 1, nil) },
			event:   workflow.Event{Kind: workflow.EventStart, EventKey: "key-1"},
			ignored: "duplicate trigger: instance exists",
		},
		{
			name:    "result on a completed instance",
			prepare: func(h *harness) { h.ok("a", 1, nil); h.ok("b", 1, nil) },
			event:   workflow.Event{Kind: workflow.EventResult, Step: "b", Attempt: 1},
			ignored: "instance already completed",
		},
		{
			name: "result on a failed instance",
			prepare: func(h *harness) {
				h.apply(workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: "x", Permanent: true})
			},
			event:   workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1},
			ignored: "instance already failed",
		},
		{
			name:    "timer on a cancelled instance",
			prepare: func(h *harness) { h.apply(workflow.Event{Kind: workflow.EventCancel}) },
			event:   workflow.Event{Kind: workflow.EventTimer, Timer: "timeout.a.1"},
			ignored: "instance already cancelled",
		},
		{
			name:    "cancel on a cancelled instance",
			prepare: func(h *harness) { h.apply(workflow.Event{Kind: workflow.EventCancel}) },
			event:   workflow.Event{Kind: workflow.EventCancel, Reason: "again"},
			ignored: "instance already cancelled",
		},
		{
			name:    "unknown event kind",
			event:   workflow.Event{Kind: "telepathy"},
			ignored: `unknown event kind "telepathy"`,
		},
	}
	const src = `
name: retry
version: 1
steps:
  - {name: a, kind: task, task: work, timeout: 10s, next: b}
  - {name: b, kind: task, task: work}
`
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, src, nil)
			h.start()
			if tc.prepare != nil {
				tc.prepare(h)
			}
			before := h.inst.Clone()
			dec := h.apply(tc.event) // checks: input untouched, nothing to do
			require.False(t, dec.Changed)
			require.Contains(t, dec.Ignored, tc.ignored)
			require.Same(t, h.inst, dec.Instance)
			require.Equal(t, before, h.inst)
		})
	}
}

func TestApplyEventForUnknownInstance(t *testing.T) {
	t.Parallel()
	def := mustParse(t, chainDef)
	for _, kind := range []workflow.EventKind{workflow.EventResult, workflow.EventTimer, workflow.EventCancel} {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			dec, err := workflow.Apply(def, nil, workflow.Event{Kind: kind, Instance: "ghost"}, t0, memData{})
			require.NoError(t, err)
			require.False(t, dec.Changed)
			require.Nil(t, dec.Instance)
			require.Equal(t, string(kind)+" event for unknown instance ghost", dec.Ignored)
		})
	}
}

func TestApplyCancel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		reason string
		want   string
	}{
		{name: "with reason", reason: "customer asked", want: "customer asked"},
		{name: "default reason", want: "cancelled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, retryDef, nil)
			h.start()
			h.fail("a", 1, "x")
			require.NotEmpty(t, h.inst.Timers)
			h.now = t0.Add(time.Minute)
			dec := h.apply(workflow.Event{Kind: workflow.EventCancel, Reason: tc.reason})
			require.True(t, dec.Changed)
			require.Empty(t, dec.Tasks)
			require.Empty(t, dec.Timers)
			require.Equal(t, workflow.StatusCancelled, h.inst.Status)
			require.Equal(t, tc.want, h.inst.Error)
			require.Equal(t, h.now, h.inst.Ended)
			require.Empty(t, h.inst.Timers)
			require.Empty(t, h.inst.OutputRef)

			dec = h.fire("retry.a.2")
			require.Equal(t, "instance already cancelled", dec.Ignored)
			require.Empty(t, workflow.Outstanding(h.def, h.inst).Tasks)
		})
	}
}

func TestApplyDoesNotMutateInput(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: mut
version: 1
steps:
  - {name: p, kind: parallel, branches: [a, b], next: c}
  - {name: a, kind: task, task: work, timeout: 5s}
  - {name: b, kind: task, task: work}
  - {name: c, kind: task, task: work}
`, nil)
	h.start()
	inst := h.inst
	events := []workflow.Event{
		{Kind: workflow.EventResult, Step: "a", Attempt: 1, OutputRef: "x"},
		{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: "e"},
		{Kind: workflow.EventResult, Step: "b", Attempt: 1, OutputRef: "x"},
		{Kind: workflow.EventTimer, Timer: "timeout.a.1"},
		{Kind: workflow.EventCancel},
		{Kind: workflow.EventStart},
	}
	for _, ev := range events {
		t.Run(string(ev.Kind)+ev.Step+ev.Error, func(t *testing.T) {
			t.Parallel()
			before := inst.Clone()
			dec, err := workflow.Apply(h.def, inst, ev, t0.Add(time.Hour), memData{})
			require.NoError(t, err)
			require.Equal(t, before, inst)
			if dec.Changed {
				require.NotSame(t, inst, dec.Instance)
				for name, st := range dec.Instance.Steps {
					require.NotSame(t, inst.Steps[name], st, "step %q state shared with the input", name)
				}
			}
		})
	}
}

func TestApplyInputMapping(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: mapping
version: 1
steps:
  - {name: a, kind: task, task: work, next: b, input: '{"order": input.orderId, "n": input.qty * 2}'}
  - {name: b, kind: task, task: work, input: '{"prev": steps.a.output.total, "status": steps.a.status, "attempt": steps.a.attempt}'}
`, map[string]any{"orderId": "o-1", "qty": 3})
	dec := h.start()
	key := workflow.StepInputKey(h.id, "a")
	require.Equal(t, []workflow.Write{{Key: key, Value: map[string]any{"order": "o-1", "n": 6}}}, dec.Writes)
	require.Equal(t, key, dec.Tasks[0].InputRef)
	require.Equal(t, key, h.step("a").InputRef)

	dec = h.ok("a", 1, map[string]any{"total": 12.5})
	keyB := workflow.StepInputKey(h.id, "b")
	require.Equal(t, []workflow.Write{{Key: keyB, Value: map[string]any{"prev": 12.5, "status": "completed", "attempt": 1}}}, dec.Writes)
	require.Equal(t, keyB, dec.Tasks[0].InputRef)
}

func TestApplyOutputExpression(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: out
version: 1
output: '{"a": steps.a.output, "id": input.id}'
steps:
  - {name: a, kind: task, task: work}
`, map[string]any{"id": "x"})
	h.start()
	dec := h.ok("a", 1, "A")
	key := workflow.InstanceOutputKey(h.id)
	require.Equal(t, []workflow.Write{{Key: key, Value: map[string]any{"a": "A", "id": "x"}}}, dec.Writes)
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
	require.Equal(t, key, h.inst.OutputRef)
}

func TestApplyExpressionFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		src     string
		input   any
		wantErr string // instance error
	}{
		{
			name:    "input mapping fails",
			src:     "name: e\nversion: 1\nsteps:\n  - {name: a, kind: task, task: work, input: 'input.a.b.c + 1'}\n",
			input:   map[string]any{},
			wantErr: `evaluating input:`,
		},
		{
			name:    "output expression fails",
			src:     "name: e\nversion: 1\noutput: 'input.x / input.y.z'\nsteps:\n  - {name: a, kind: task, task: work}\n",
			input:   map[string]any{"x": 1},
			wantErr: `evaluating output:`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, tc.src, tc.input)
			h.start()
			if h.inst.Status == workflow.StatusRunning {
				h.ok("a", 1, nil)
			}
			require.Equal(t, workflow.StatusFailed, h.inst.Status)
			require.Contains(t, h.inst.Error, tc.wantErr)
		})
	}
}

// A missing data value is an infrastructure problem, not the workflow's:
// Apply returns an error so the event is retried, and changes nothing.
func TestApplyDataLoadError(t *testing.T) {
	t.Parallel()
	def := mustParse(t, `
name: load
version: 1
steps:
  - {name: a, kind: task, task: work, input: input.x, next: b}
  - {name: b, kind: task, task: work, input: steps.a.output}
`)
	start := workflow.Event{Kind: workflow.EventStart, Instance: "i", InputRef: "i.in"}
	_, err := workflow.Apply(def, nil, start, t0, memData{})
	require.ErrorIs(t, err, workflow.ErrNotFound)
	require.ErrorContains(t, err, "load input i.in")

	data := memData{"i.in": map[string]any{"x": 1}}
	dec, err := workflow.Apply(def, nil, start, t0, data)
	require.NoError(t, err)
	inst := dec.Instance
	before := inst.Clone()
	dec, err = workflow.Apply(def, inst, workflow.Event{Kind: workflow.EventResult, Instance: "i", Step: "a", Attempt: 1, OutputRef: "missing"}, t0, data)
	require.ErrorIs(t, err, workflow.ErrNotFound)
	require.ErrorContains(t, err, `load output of step "a" (missing)`)
	require.Equal(t, workflow.Decision{}, dec)
	require.Equal(t, before, inst)
}

func TestOutstanding(t *testing.T) {
	t.Parallel()
	h := setup(t, `
name: out
version: 1
steps:
  - {name: p, kind: parallel, branches: [c, a, b]}
  - {name: a, kind: task, task: work, timeout: 30s}
  - {name: b, kind: task, task: work}
  - {name: c, kind: task, task: other, input: '{"k": 1}'}
`, nil)
	started := h.start()
	got := workflow.Outstanding(h.def, h.inst)
	require.Same(t, h.inst, got.Instance)
	require.False(t, got.Changed)
	require.ElementsMatch(t, started.Tasks, got.Tasks, "the same tasks, ids and inputs as when they were first published")
	require.Equal(t, []string{"a/1", "b/1", "c/1"}, taskSteps(got.Tasks), "sorted by step")
	require.Equal(t, started.Timers, got.Timers)

	// b waits for a retry, c is done: a runs, b has a timer.
	h.now = t0.Add(time.Second)
	h.fail("b", 1, "x")
	h.ok("c", 1, nil)
	got = workflow.Outstanding(h.def, h.inst)
	require.Equal(t, []string{"a/1"}, taskSteps(got.Tasks))
	require.Equal(t, []workflow.Timer{
		{Instance: h.id, ID: "retry.b.2", At: h.now.Add(time.Second)},
		{Instance: h.id, ID: "timeout.a.1", At: t0.Add(30 * time.Second)},
	}, got.Timers)

	h.fire("retry.b.2")
	got = workflow.Outstanding(h.def, h.inst)
	require.Equal(t, []string{"a/1", "b/2"}, taskSteps(got.Tasks))

	h.ok("a", 1, nil)
	h.ok("b", 2, nil)
	require.Equal(t, workflow.StatusCompleted, h.inst.Status)
	got = workflow.Outstanding(h.def, h.inst)
	require.Empty(t, got.Tasks)
	require.Empty(t, got.Timers)

	require.Equal(t, workflow.Decision{}, workflow.Outstanding(h.def, nil))
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	p := workflow.RetryPolicy{
		MaxAttempts:        10,
		InitialInterval:    workflow.Duration(time.Second),
		BackoffCoefficient: 2,
		MaxInterval:        workflow.Duration(time.Minute),
	}
	tests := []struct {
		name    string
		policy  workflow.RetryPolicy
		attempt int
		want    time.Duration
	}{
		{name: "first failure", policy: p, attempt: 1, want: time.Second},
		{name: "second failure", policy: p, attempt: 2, want: 2 * time.Second},
		{name: "sixth failure", policy: p, attempt: 6, want: 32 * time.Second},
		{name: "capped", policy: p, attempt: 7, want: time.Minute},
		{name: "far past the cap", policy: p, attempt: 5000, want: time.Minute},
		{name: "coefficient one", policy: workflow.RetryPolicy{InitialInterval: workflow.Duration(3 * time.Second), BackoffCoefficient: 1, MaxInterval: workflow.Duration(time.Hour)}, attempt: 50, want: 3 * time.Second},
		{name: "fractional coefficient", policy: workflow.RetryPolicy{InitialInterval: workflow.Duration(time.Second), BackoffCoefficient: 1.5, MaxInterval: workflow.Duration(time.Hour)}, attempt: 3, want: 2250 * time.Millisecond},
		{name: "infinite coefficient", policy: workflow.RetryPolicy{InitialInterval: workflow.Duration(time.Second), BackoffCoefficient: math.Inf(1), MaxInterval: workflow.Duration(time.Hour)}, attempt: 2, want: time.Hour},
		{name: "initial above max", policy: workflow.RetryPolicy{InitialInterval: workflow.Duration(time.Hour), BackoffCoefficient: 2, MaxInterval: workflow.Duration(time.Minute)}, attempt: 1, want: time.Minute},
		{name: "default policy", policy: workflow.DefaultRetryPolicy, attempt: 3, want: 4 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tc.want, workflow.Backoff(tc.policy, tc.attempt))
		})
	}
}

func TestBackoffNeverExceedsMaxInterval(t *testing.T) {
	t.Parallel()
	for _, coef := range []float64{1, 1.1, 2, 3.7, 10, 1e6} {
		p := workflow.RetryPolicy{InitialInterval: workflow.Duration(250 * time.Millisecond), BackoffCoefficient: coef, MaxInterval: workflow.Duration(90 * time.Second)}
		prev := time.Duration(0)
		for attempt := 1; attempt <= workflow.MaxAttemptsCap; attempt++ {
			d := workflow.Backoff(p, attempt)
			require.Positive(t, d)
			require.LessOrEqual(t, d, 90*time.Second, "coefficient %g attempt %d", coef, attempt)
			require.GreaterOrEqual(t, d, prev, "backoff must not shrink")
			prev = d
		}
	}
}
