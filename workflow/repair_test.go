package workflow_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// TestNextRepairIsWhenRepairsFirstFindWork checks NextRepair against
// Repairs for each rule and their combinations: nothing is repaired at
// the time it returns, something is a nanosecond later, and when it
// returns zero nothing is repaired however late.
func TestNextRepairIsWhenRepairsFirstFindWork(t *testing.T) {
	t.Parallel()
	policy := workflow.RepairPolicy{StaleTask: 10 * time.Minute, TimerGrace: 5 * time.Second, StaleBulk: 30 * time.Second}
	cases := []struct {
		name  string
		def   string
		input any
		// then moves the instance on after its start.
		then func(h *harness)
		// want is NextRepair's offset from t0 (0: never).
		want time.Duration
	}{
		{
			name: "running task without timeout",
			def:  "name: a\nversion: 1\nsteps:\n  - {name: a, kind: task, task: work}\n",
			want: 10 * time.Minute,
		},
		{
			name: "task with a timeout is covered by its timer",
			def:  "name: a\nversion: 1\nsteps:\n  - {name: a, kind: task, task: work, timeout: 1m}\n",
			want: time.Minute + 5*time.Second,
		},
		{
			name: "sleep timer",
			def:  "name: a\nversion: 1\nsteps:\n  - {name: z, kind: sleep, duration: 2h}\n",
			want: 2*time.Hour + 5*time.Second,
		},
		{
			name: "earliest of a task and a timer",
			def: "name: a\nversion: 1\nsteps:\n  - {name: p, kind: parallel, branches: [a, z]}\n" +
				"  - {name: a, kind: task, task: work}\n  - {name: z, kind: sleep, duration: 1m}\n",
			want: time.Minute + 5*time.Second,
		},
		{
			name: "task retried later goes stale from its new attempt",
			def:  "name: a\nversion: 1\nsteps:\n  - {name: a, kind: task, task: work, retry: {max_attempts: 3, initial_interval: 1s}}\n",
			then: func(h *harness) {
				h.now = t0.Add(time.Minute)
				h.fail("a", 1, "boom")
				h.now = t0.Add(2 * time.Minute)
				h.fire(retryTimer(h))
			},
			want: 2*time.Minute + 10*time.Minute,
		},
		{
			name:  "running bulk step",
			def:   "name: a\nversion: 1\nsteps:\n  - {name: fan, kind: bulk, workflow: child, items: input.items}\n",
			input: map[string]any{"items": []any{1, 2, 3}},
			want:  30 * time.Second,
		},
		{
			name: "ended instance",
			def:  "name: a\nversion: 1\nsteps:\n  - {name: a, kind: task, task: work}\n",
			then: func(h *harness) { h.ok("a", 1, nil) },
			want: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, tc.def, tc.input)
			h.start()
			if tc.then != nil {
				tc.then(h)
			}
			due := workflow.NextRepair(h.def, h.inst, policy)
			if tc.want == 0 {
				require.True(t, due.IsZero(), "due at %s", due)
				require.Empty(t, workflow.Repairs(h.def, h.inst, t0.Add(1000*time.Hour), policy))
				return
			}
			require.Equal(t, t0.Add(tc.want), due)
			require.Empty(t, workflow.Repairs(h.def, h.inst, due, policy), "repairs at the due time")
			require.NotEmpty(t, workflow.Repairs(h.def, h.inst, due.Add(time.Nanosecond), policy), "no repair just after the due time")
		})
	}
}

// retryTimer returns the id of the instance's one pending timer.
func retryTimer(h *harness) string {
	h.t.Helper()
	require.Len(h.t, h.inst.Timers, 1)
	for id := range h.inst.Timers {
		return id
	}
	return ""
}
