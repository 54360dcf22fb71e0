package dispatcher_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// Messages on the subject of a task type no definition uses are read by
// no worker: the task guard dead-letters and removes them once they are
// older than its grace, and leaves alone the tasks of known types and
// messages newer than the grace.
func TestTaskGuardRemovesTasksOfUnknownTypes(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(twoStepDef) // task type "work"; no worker runs here
	d, _ := e.Dispatcher(nil, dispatcher.Config{TaskGuardInterval: -1})
	ctx := context.Background()
	for i := range 3 {
		require.NoError(t, e.Client.PublishRaw(ctx, jetstream.TaskSubject("nobody-serves-this"), []byte{byte(i)}))
	}
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "two", EventKey: "k", Payload: []byte(`{}`)}))
	jftest.Eventually(t, 10*time.Second, func() bool {
		stored, err := e.Client.TaskTypesStored(ctx)
		return err == nil && stored["work"] == 1 && stored["nobody-serves-this"] == 3
	}, "tasks not stored")

	// Within the grace: nothing is removed.
	require.NoError(t, dispatcher.SweepTasks(ctx, d, time.Now().Add(-time.Hour)))
	stored, err := e.Client.TaskTypesStored(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"work": 1, "nobody-serves-this": 3}, stored)

	// After it: the unknown type's messages are dead-lettered and gone.
	require.NoError(t, dispatcher.SweepTasks(ctx, d, time.Now().Add(time.Second)))
	stored, err = e.Client.TaskTypesStored(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]uint64{"work": 1}, stored, "the known type's task stays")
	dls, err := e.Client.DeadLetters(ctx, 10)
	require.NoError(t, err)
	require.Len(t, dls, 3)
	for i, dl := range dls {
		require.Equal(t, jetstream.TaskSubject("nobody-serves-this"), dl.SourceSubject)
		require.True(t, strings.Contains(dl.Reason, `task type "nobody-serves-this" is used by no registered workflow definition`), dl.Reason)
		require.Equal(t, []byte{byte(i)}, dl.Data)
	}
	require.Equal(t, workflow.StatusRunning, e.Instance(workflow.InstanceID("two", "k")).Status)
}

// The guard runs by itself every TaskGuardInterval.
func TestTaskGuardRunsByItself(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Dispatcher(nil, dispatcher.Config{TaskGuardInterval: 100 * time.Millisecond, TaskGuardGrace: time.Nanosecond})
	ctx := context.Background()
	require.NoError(t, e.Client.PublishRaw(ctx, jetstream.TaskSubject("junk"), []byte("x")))
	jftest.Eventually(t, 30*time.Second, func() bool {
		dls, err := e.Client.DeadLetters(ctx, 10)
		return err == nil && len(dls) == 1 && dls[0].SourceSubject == jetstream.TaskSubject("junk")
	}, "the junk task was not dead-lettered")
	stored, err := e.Client.TaskTypesStored(ctx)
	require.NoError(t, err)
	require.Empty(t, stored)
}
