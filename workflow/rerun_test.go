package workflow_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

func TestRunID(t *testing.T) {
	t.Parallel()
	first := workflow.InstanceID("orders", "o-1")
	require.Equal(t, first, workflow.RunID(first, 1), "run 1 is the event key's instance")
	require.Equal(t, first, workflow.RunID(first, 0))
	require.Equal(t, first+"-r2", workflow.RunID(first, 2))
	require.Equal(t, first+"-r1000", workflow.RunID(first, workflow.MaxRuns))
	seen := map[string]bool{}
	for n := 1; n <= workflow.MaxRuns; n++ {
		id := workflow.RunID(first, n)
		require.False(t, seen[id], "run %d repeats an id", n)
		seen[id] = true
		// A KV key and a single subject token: letters, digits, '-', '_'.
		require.NoError(t, workflow.ValidateName("run id", id))
		require.NotContains(t, id, ".")
		// Not the id of any event key: those end in '-' and 26 base32
		// characters, and a rerun suffix puts a '-' among the last 26.
		if n > 1 {
			require.Contains(t, id[len(id)-26:], "-", "run %d could collide with an InstanceID", n)
		}
	}
	require.NotEqual(t, workflow.RunID(workflow.InstanceID("a", "k"), 2), workflow.RunID(workflow.InstanceID("a", "k2"), 2))
	require.True(t, strings.HasPrefix(workflow.RunID(first, 7), first+"-"))

	require.Equal(t, "i.in.57", workflow.TriggerInputKey("i", 57))
	require.NotEqual(t, workflow.StepInputKey("i", "in"), workflow.TriggerInputKey("i", 57), "a step named in")
	require.NotEqual(t, workflow.TriggerInputKey("i", 5), workflow.TriggerInputKey("i", 57))
}

func TestChooseRun(t *testing.T) {
	t.Parallel()
	run := func(st workflow.Status, seq uint64, digest string) *workflow.Instance {
		return &workflow.Instance{Status: st, TriggerSeq: seq, InputDigest: digest}
	}
	const (
		done    = workflow.StatusCompleted
		running = workflow.StatusRunning
	)
	tests := []struct {
		name   string
		runs   []*workflow.Instance
		seq    uint64
		digest string
		want   int
		new    bool
		why    string
	}{
		{name: "no run yet", runs: nil, seq: 9, digest: "d9", want: 1, new: true, why: "first run"},
		{name: "no run yet, sequence unknown", runs: nil, seq: 0, want: 1, new: true},
		{name: "first run still running", runs: []*workflow.Instance{run(running, 1, "d1")}, seq: 9, digest: "d9", want: 1, why: "run 1 is still running"},
		{name: "first run completed", runs: []*workflow.Instance{run(done, 1, "d1")}, seq: 9, digest: "d9", want: 2, new: true, why: "run 1 is completed"},
		{name: "first run failed", runs: []*workflow.Instance{run(workflow.StatusFailed, 1, "d1")}, seq: 9, want: 2, new: true, why: "run 1 is failed"},
		{name: "first run cancelled", runs: []*workflow.Instance{run(workflow.StatusCancelled, 1, "d1")}, seq: 9, want: 2, new: true},
		{name: "latest of three completed", runs: []*workflow.Instance{run(done, 1, "d1"), run(done, 4, "d4"), run(done, 7, "d7")}, seq: 9, want: 4, new: true},
		{name: "latest of three running", runs: []*workflow.Instance{run(done, 1, "d1"), run(done, 4, "d4"), run(running, 7, "d7")}, seq: 9, want: 3},
		{name: "redelivery of the trigger of run 1", runs: []*workflow.Instance{run(done, 1, "d1")}, seq: 1, digest: "d1", want: 1, why: "this trigger (stream sequence 1) already started run 1"},
		{name: "redelivery of the latest run's trigger", runs: []*workflow.Instance{run(done, 1, "d1"), run(done, 4, "d4")}, seq: 4, digest: "d4", want: 2},
		{name: "redelivery after later runs ended", runs: []*workflow.Instance{run(done, 1, "d1"), run(done, 4, "d4"), run(done, 7, "d7")}, seq: 4, digest: "d4", want: 2},
		{name: "redelivery while its run is still running", runs: []*workflow.Instance{run(done, 1, "d1"), run(running, 4, "d4")}, seq: 4, digest: "d4", want: 2},
		{name: "same sequence, other payload (a recreated stream)", runs: []*workflow.Instance{run(done, 4, "d4")}, seq: 4, digest: "other", want: 2, new: true},
		{name: "same sequence, run without digest", runs: []*workflow.Instance{run(done, 4, "")}, seq: 4, digest: "d4", want: 1},
		{name: "runs from before sequences were recorded", runs: []*workflow.Instance{run(done, 0, "d")}, seq: 5, digest: "d", want: 2, new: true},
		{name: "sequence unknown: no rerun", runs: []*workflow.Instance{run(done, 0, "d")}, seq: 0, digest: "d", want: 1, why: "stream sequence is unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := workflow.ChooseRun(tc.runs, tc.seq, tc.digest)
			require.NoError(t, err)
			require.Equal(t, tc.want, got.Run)
			require.Equal(t, tc.new, got.New)
			require.Contains(t, got.Why, tc.why)
		})
	}

	t.Run("cap", func(t *testing.T) {
		t.Parallel()
		runs := make([]*workflow.Instance, workflow.MaxRuns)
		for i := range runs {
			runs[i] = run(done, uint64(i+1), "d")
		}
		_, err := workflow.ChooseRun(runs, 5000, "d")
		require.ErrorIs(t, err, workflow.ErrTooManyRuns)
		require.ErrorContains(t, err, "1000 runs")
		// A redelivery is still recognised at the cap.
		got, err := workflow.ChooseRun(runs, 17, "d")
		require.NoError(t, err)
		require.Equal(t, 17, got.Run)
		require.False(t, got.New)
		// And a running latest run still just drops the duplicate.
		runs[len(runs)-1] = run(running, 999_999, "x")
		got, err = workflow.ChooseRun(runs, 5000, "d")
		require.NoError(t, err)
		require.Equal(t, workflow.MaxRuns, got.Run)
	})
}

// TestStartRecordsTriggerAndRun: the start event's trigger sequence and run
// number end up in the instance, which is what ChooseRun reads back; a
// second start for the same id is a duplicate whatever its run says.
func TestStartRecordsTriggerAndRun(t *testing.T) {
	t.Parallel()
	def := mustParse(t, "name: w\nversion: 1\ntrigger: {subject: a.b, key: id, on_duplicate: rerun}\nsteps:\n"+items(okStep))
	id := workflow.RunID(workflow.InstanceID("w", "k"), 3)
	ev := workflow.Event{Kind: workflow.EventStart, Instance: id, Workflow: "w", Version: 1, EventKey: "k",
		InputRef: workflow.InputKey(id), InputDigest: "dig", TriggerSeq: 42, Run: 3}
	dec, err := workflow.Apply(def, nil, ev, t0, memData{workflow.InputKey(id): map[string]any{}})
	require.NoError(t, err)
	require.True(t, dec.Changed)
	require.Equal(t, uint64(42), dec.Instance.TriggerSeq)
	require.Equal(t, 3, dec.Instance.Run)
	require.Equal(t, 3, dec.Instance.RunNumber())
	require.Equal(t, "k", dec.Instance.EventKey, "every run keeps the event key")
	require.Len(t, dec.Tasks, 1)
	require.Equal(t, workflow.EffectKey(id, "a"), dec.Tasks[0].EffectKey, "effect keys are per run")

	again := ev
	again.TriggerSeq = 43
	dup, err := workflow.Apply(def, dec.Instance, again, t0, nil)
	require.NoError(t, err)
	require.False(t, dup.Changed)
	require.Equal(t, uint64(42), dup.Instance.TriggerSeq)

	require.Equal(t, 1, (&workflow.Instance{}).RunNumber(), "instances from before runs were numbered are run 1")
}
