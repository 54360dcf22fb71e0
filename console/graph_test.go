package console

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// TestLayoutLayers: steps are placed by their distance from the start
// (breadth first: a step reached twice stays in its first column).
func TestLayoutLayers(t *testing.T) {
	t.Parallel()
	def, err := workflow.Parse("t.yaml", []byte(`name: loop
version: 1
start: a
steps:
  - {name: a, kind: task, task: x, next: b, on_failure: f}
  - name: b
    kind: switch
    cases:
      - {when: "input.again == true", next: f}
    default: c
  - {name: c, kind: task, task: x}
  - {name: f, kind: task, task: x}
`))
	require.NoError(t, err)
	g := layout(def)
	layers := map[string]int{}
	for _, n := range g.Nodes {
		layers[n.Name] = n.Layer
	}
	require.Equal(t, map[string]int{"a": 0, "b": 1, "f": 1, "c": 2}, layers)
	svg := string(graphSVG(def, map[string]string{"a": "completed"}, "x"))
	require.Contains(t, svg, "<title>b → f (case)</title>", "an edge to an earlier column is drawn")
	require.Contains(t, svg, `class="node kind-task st-completed" data-step="a"`)
	require.Contains(t, svg, `class="node kind-task st-not-reached" data-step="c"`)
}

// TestTimelineRows: a retried step shows its earlier attempts and the
// current one; a pending retry timer is a mark on its step's row; the
// deadline, on the instance's row.
func TestTimelineRows(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	inst := &workflow.Instance{ID: "i", Status: workflow.StatusRunning, Created: t0,
		Steps: map[string]*workflow.StepState{
			"a": {Status: workflow.StepCompleted, Started: t0, Ended: t0.Add(time.Second)},
			"b": {Status: workflow.StepWaiting, Attempt: 3, Started: t0.Add(time.Second), AttemptStarted: t0.Add(5 * time.Second), Error: "boom"},
		},
		Timers: map[string]time.Time{"retry.b.4": t0.Add(9 * time.Second), "deadline._.0": t0.Add(time.Hour)},
	}
	rows := timelineRows(inst, t0.Add(6*time.Second))
	require.Len(t, rows, 3)
	require.Equal(t, "a", rows[0].Step)
	require.Len(t, rows[0].Segs, 1)
	require.Equal(t, "b ×3", rows[1].Label)
	require.Len(t, rows[1].Segs, 2)
	require.Equal(t, "retrying", rows[1].Segs[0].Class)
	require.Equal(t, t0.Add(5*time.Second), rows[1].Segs[1].From)
	require.Equal(t, t0.Add(6*time.Second), rows[1].Segs[1].To, "open until now")
	require.Equal(t, "waiting open", rows[1].Segs[1].Class)
	require.Len(t, rows[1].Marks, 1)
	require.Equal(t, "retry", rows[1].Marks[0].Kind)
	require.Equal(t, "(instance)", rows[2].Label)
	require.Equal(t, "deadline", rows[2].Marks[0].Kind)
}

// TestTimelineDrawsEachAttempt: a task step with an attempt history
// draws each ended attempt as a block (the failed one with its error),
// the backoff between them, and the current attempt waiting at a gate.
func TestTimelineDrawsEachAttempt(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	inst := &workflow.Instance{ID: "i", Status: workflow.StatusRunning, Created: t0,
		Steps: map[string]*workflow.StepState{
			"c": {Status: workflow.StepRunning, Attempt: 3, Started: t0, Gate: workflow.GatePaused, GateSince: t0.Add(7 * time.Second),
				History: []workflow.AttemptRecord{
					{Attempt: 1, Started: t0, Ended: t0.Add(time.Second), Error: "boom", Worker: "w1"},
					{Attempt: 2, Started: t0.Add(3 * time.Second), Ended: t0.Add(4 * time.Second), Error: "bang"},
				}},
		},
	}
	rows := timelineRows(inst, t0.Add(9*time.Second))
	require.Len(t, rows, 1)
	var classes []string
	for _, s := range rows[0].Segs {
		classes = append(classes, s.Class)
	}
	require.Equal(t, []string{"failed attempt", "retrying", "failed attempt", "retrying", "waiting gate open"}, classes)
	require.Contains(t, rows[0].Segs[0].Title, "attempt 1 failed after 1s — boom (worker w1)")
	require.Equal(t, t0.Add(7*time.Second), rows[0].Segs[4].From, "the held attempt's block starts when it began to wait")
	require.Contains(t, rows[0].Segs[4].Title, "waits at gate paused")
}

// FuzzParseTime: the instance filter's time field never panics and
// accepts what it prints.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"1h", "2026-01-02T15:04", "2026-01-02T15:04:05Z", "2026-01-02", "", "x"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := parseTime(s, now)
		if err == nil && !tm.IsZero() {
			back, err := parseTime(tm.Format(time.RFC3339Nano), now)
			require.NoError(t, err)
			require.True(t, back.Equal(tm))
		}
	})
}
