package workflow_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

func TestDecideFire(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)
	fire := workflow.Fire{ID: "w-10", At: at, Next: at.Add(time.Second)}
	started := workflow.ScheduleState{Last: "w-9", LastFire: at.Add(-time.Second)}
	for _, tc := range []struct {
		name string
		st   workflow.ScheduleState
		f    workflow.Fire
		skip bool
		last workflow.Status
		want workflow.FireAction
	}{
		{"first fire", workflow.ScheduleState{}, fire, true, "", workflow.FireStart},
		{"redelivered", workflow.ScheduleState{Last: "w-10", LastFire: at, Pending: true}, fire, true, "", workflow.FireResume},
		{"paused", workflow.ScheduleState{Paused: true}, fire, true, "", workflow.FireSkip},
		{"paused manual", workflow.ScheduleState{Paused: true}, workflow.Fire{ID: "m", At: at, Manual: true}, true, "", workflow.FireStart},
		{"skip while running", started, fire, true, workflow.StatusRunning, workflow.FireSkip},
		{"skip after ended", started, fire, true, workflow.StatusCompleted, workflow.FireStart},
		{"skip when last is gone", started, fire, true, "", workflow.FireStart},
		{"allow while running", started, fire, false, workflow.StatusRunning, workflow.FireStart},
		{"pending waits", workflow.ScheduleState{Last: "w-9", LastFire: at.Add(-time.Second), Pending: true, PendingAt: at.Add(-time.Second)}, fire, true, "", workflow.FireWait},
		{"pending but started", workflow.ScheduleState{Last: "w-9", LastFire: at.Add(-time.Second), Pending: true, PendingAt: at.Add(-time.Second)}, fire, true, workflow.StatusRunning, workflow.FireSkip},
		{"pending and ended", workflow.ScheduleState{Last: "w-9", LastFire: at.Add(-time.Second), Pending: true, PendingAt: at.Add(-time.Second)}, fire, true, workflow.StatusCompleted, workflow.FireStart},
		{"pending whose fire expired", workflow.ScheduleState{Last: "w-0", LastFire: at.Add(-3 * time.Hour), Pending: true, PendingAt: at.Add(-3 * time.Hour)}, fire, true, "", workflow.FireStart},
		{"pending does not hold allow", workflow.ScheduleState{Last: "w-9", LastFire: at.Add(-time.Second), Pending: true}, fire, false, "", workflow.FireStart},
		{"out of order under skip", workflow.ScheduleState{Last: "w-11", LastFire: at.Add(time.Second)}, fire, true, workflow.StatusCompleted, workflow.FireSkip},
		{"out of order under allow", workflow.ScheduleState{Last: "w-11", LastFire: at.Add(time.Second)}, fire, false, "", workflow.FireStart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dec := workflow.DecideFire(tc.st, tc.f, tc.skip, tc.last)
			require.Equal(t, tc.want, dec.Action, dec.Reason)
			if dec.Action == workflow.FireStart {
				require.Equal(t, tc.f.ID, dec.State.Last)
				require.Equal(t, tc.skip, dec.State.Pending)
				after, ok := workflow.FireStarted(dec.State, tc.f.ID)
				require.Equal(t, tc.skip, ok)
				require.False(t, after.Pending)
			}
		})
	}
}
