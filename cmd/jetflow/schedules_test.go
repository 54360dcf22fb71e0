package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

const reportDef = `
name: report
version: 1
schedules:
  - {name: nightly, cron: "0 0 2 * * *", timezone: Europe/Berlin, input: '{"report": "daily"}'}
  - {name: often, cron: "@every 1s", overlap: allow}
steps:
  - {name: a, kind: sleep, duration: 1s}
`

// TestSchedulesCommand: jetflow schedules lists each schedule with its
// next fire time (snake_case JSON); pause, resume and trigger act on the
// schedule's state; an unknown schedule is a clear error.
func TestSchedulesCommand(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	e.Register(reportDef)
	e.Dispatcher(nil, dispatcher.Config{})
	rows := func() []scheduleRow {
		out, _, err := jetflow(t, "--nats-url", e.URL, "schedules", "--json")
		require.NoError(t, err)
		var rows []scheduleRow
		require.NoError(t, json.Unmarshal([]byte(out), &rows), out)
		return rows
	}
	jftest.Eventually(t, 20*time.Second, func() bool {
		r := rows()
		return len(r) == 2 && r[0].Installed && r[1].Installed && r[1].NextFire != ""
	}, "schedules not installed, or the @every schedule never fired")
	before := time.Now()
	r := rows()
	after := time.Now()
	require.Equal(t, "nightly", r[0].Name)
	spec, err := workflow.ParseScheduleSpec("0 0 2 * * *", "Europe/Berlin")
	require.NoError(t, err)
	n1, _ := spec.Next(before)
	n2, _ := spec.Next(after)
	require.Contains(t, []string{n1.Format(time.RFC3339), n2.Format(time.RFC3339)}, r[0].NextFire)
	require.Equal(t, "skip", r[0].Overlap)
	require.Equal(t, "Europe/Berlin", r[0].Timezone)
	require.Equal(t, "often", r[1].Name)
	require.Equal(t, "allow", r[1].Overlap)

	out, _, err := jetflow(t, "--nats-url", e.URL, "schedules")
	require.NoError(t, err)
	require.Contains(t, out, "NEXT FIRE")
	require.Contains(t, out, "report@1")

	_, _, err = jetflow(t, "--nats-url", e.URL, "schedule", "pause", "report", "often")
	require.NoError(t, err)
	require.True(t, rows()[1].Paused)
	_, _, err = jetflow(t, "--nats-url", e.URL, "schedule", "resume", "report", "often")
	require.NoError(t, err)
	require.False(t, rows()[1].Paused)

	out, _, err = jetflow(t, "--nats-url", e.URL, "schedule", "trigger", "report", "nightly")
	require.NoError(t, err)
	id := strings.Fields(strings.TrimPrefix(out, "triggered: instance "))[0]
	inst := e.WaitTerminal(id, 20*time.Second)
	require.True(t, strings.HasPrefix(inst.EventKey, "schedule:nightly@manual:"), inst.EventKey)
	in, err := e.Client.LoadData(t.Context(), inst.InputRef)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"report": "daily"}, in)

	_, _, err = jetflow(t, "--nats-url", e.URL, "schedule", "pause", "report", "weekly")
	require.ErrorIs(t, err, errUnknownSchedule)
	require.EqualError(t, err, `unknown schedule "weekly" in report@1 (its schedules: nightly, often)`)
	_, _, err = jetflow(t, "--nats-url", e.URL, "schedule", "pause", "nope", "x")
	require.ErrorIs(t, err, errUnknownWorkflow)
}
