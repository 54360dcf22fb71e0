package workflow_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

func TestOnceIsOnlyForTaskSteps(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, src, problem string
	}{
		{"task", `
name: w
version: 1
steps:
  - {name: a, kind: task, task: t, once: true}
`, ""},
		{"parallel", `
name: w
version: 1
steps:
  - {name: p, kind: parallel, branches: [a], once: true}
  - {name: a, kind: task, task: t}
`, `step "p": once is not allowed on a parallel step`},
		{"switch", `
name: w
version: 1
steps:
  - {name: s, kind: switch, cases: [{when: "true", next: a}], once: true}
  - {name: a, kind: task, task: t}
`, `step "s": once is not allowed on a switch step`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := workflow.Parse("w.yaml", []byte(c.src))
			if c.problem == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, workflow.ErrInvalidDefinition)
			require.Contains(t, err.Error(), c.problem)
		})
	}
}

func TestOnceIsCarriedOnEveryTaskOfTheStep(t *testing.T) {
	t.Parallel()
	def, err := workflow.Parse("w.yaml", []byte(`
name: w
version: 1
steps:
  - {name: a, kind: task, task: t, once: true, retry: {max_attempts: 3}, next: b}
  - {name: b, kind: task, task: t}
`))
	require.NoError(t, err)
	now := time.Unix(1_700_000_000, 0)
	dec, err := workflow.Apply(def, nil, workflow.Event{Kind: workflow.EventStart, Instance: "w-1", Workflow: "w", Version: 1, InputRef: "w-1.in"}, now, nil)
	require.NoError(t, err)
	require.Len(t, dec.Tasks, 1)
	require.True(t, dec.Tasks[0].Once)
	require.Equal(t, workflow.EffectKey("w-1", "a"), dec.Tasks[0].EffectKey)
	// The task of a later attempt, and the one re-derived for a repair,
	// carry it too: every delivery of the step goes through the claim.
	dec, err = workflow.Apply(def, dec.Instance, workflow.Event{Kind: workflow.EventResult, Instance: "w-1", Step: "a", Attempt: 1, Error: "boom"}, now, nil)
	require.NoError(t, err)
	require.Len(t, dec.Timers, 1)
	dec, err = workflow.Apply(def, dec.Instance, workflow.Event{Kind: workflow.EventTimer, Instance: "w-1", Timer: dec.Timers[0].ID}, now.Add(time.Minute), nil)
	require.NoError(t, err)
	require.Len(t, dec.Tasks, 1)
	require.Equal(t, 2, dec.Tasks[0].Attempt)
	require.True(t, dec.Tasks[0].Once)
	out := workflow.Outstanding(def, dec.Instance)
	require.Len(t, out.Tasks, 1)
	require.True(t, out.Tasks[0].Once)
	dec, err = workflow.Apply(def, dec.Instance, workflow.Event{Kind: workflow.EventResult, Instance: "w-1", Step: "a", Attempt: 2}, now.Add(time.Minute), nil)
	require.NoError(t, err)
	require.Len(t, dec.Tasks, 1)
	require.False(t, dec.Tasks[0].Once, "step b is not once")
}
