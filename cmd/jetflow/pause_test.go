package main

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// TestPauseCommand: jetflow pause and resume change the pause record once
// (again: nothing changes, and it says so), wait for the running
// dispatcher to apply it, name an unknown workflow, and jetflow
// definitions shows the paused status.
func TestPauseCommand(t *testing.T) {
	t.Parallel()
	e := setup(t, jetstream.Config{})
	e.Dispatcher(nil, dispatcher.Config{Name: "d-one"})
	run := func(args ...string) pauseResult {
		t.Helper()
		out, _, err := jetflow(t, append([]string{"--nats-url", e.URL, "--json"}, args...)...)
		require.NoError(t, err)
		var r pauseResult
		require.NoError(t, json.Unmarshal([]byte(out), &r), out)
		return r
	}
	var r pauseResult
	jftest.Eventually(t, 20*time.Second, func() bool {
		r = run("pause", "manual", "--wait", "2s")
		if r.Result == "already_paused" {
			return len(r.Confirmed) == 1 // the dispatcher was still starting
		}
		return r.Result == "paused" && len(r.Confirmed) == 1
	}, "pause not confirmed by the dispatcher")
	require.True(t, r.Paused)
	require.Equal(t, []string{"d-one"}, r.Confirmed)
	require.Empty(t, r.Unconfirmed)
	require.Equal(t, "already_paused", run("pause", "manual").Result)

	type def struct {
		Name   string `json:"name"`
		Paused bool   `json:"paused"`
	}
	out, _, err := jetflow(t, "--nats-url", e.URL, "--json", "definitions")
	require.NoError(t, err)
	var defs []def
	require.NoError(t, json.Unmarshal([]byte(out), &defs))
	require.ElementsMatch(t, []def{{"manual", true}, {"order", false}}, defs)
	out, _, err = jetflow(t, "--nats-url", e.URL, "definitions")
	require.NoError(t, err)
	require.Contains(t, out, "paused since")

	// A start while paused is accepted and held.
	_, _, err = jetflow(t, "--nats-url", e.URL, "start", "manual", "{}", "--key", "p1")
	require.NoError(t, err)
	id := workflow.InstanceID("manual", "p1")
	jftest.Eventually(t, 20*time.Second, func() bool {
		in := e.Instance(id)
		return in != nil && in.Steps["a"] != nil && in.Steps["a"].Gate == workflow.GatePaused
	}, "the start was not held")
	out, _, err = jetflow(t, "--nats-url", e.URL, "explain", id)
	require.NoError(t, err)
	require.Contains(t, out, "waits because workflow manual is paused")

	r = run("resume", "manual")
	require.Equal(t, "resumed", r.Result)
	require.False(t, r.Paused)
	require.Equal(t, "not_paused", run("resume", "manual").Result)
	require.Equal(t, "not_paused", run("resume", "order").Result, "a workflow never paused is not paused")

	text, _, err := jetflow(t, "--nats-url", e.URL, "pause", "manual")
	require.NoError(t, err)
	require.Contains(t, text, "workflow manual paused")
	text, _, err = jetflow(t, "--nats-url", e.URL, "pause", "manual")
	require.NoError(t, err)
	require.Contains(t, text, "was already paused")

	_, _, err = jetflow(t, "--nats-url", e.URL, "pause", "nope")
	require.ErrorIs(t, err, errUnknownWorkflow)
	require.EqualError(t, err, "unknown workflow nope (registered: manual, order)")
}
