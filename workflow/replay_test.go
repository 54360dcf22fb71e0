package workflow_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

var update = flag.Bool("update", false, "rewrite the golden files of the replay tests")

// history is a recorded sequence of events of one instance. Outputs are
// recorded with the result that reported them and stored under
// OutputKey(instance, step, attempt) before the result is applied, as a
// worker does.
type history struct {
	Comment  string          `json:"comment"`
	EventKey string          `json:"eventKey"`
	Input    any             `json:"input"`
	Events   []historyRecord `json:"events"`
}

type historyRecord struct {
	At        string             `json:"at"` // offset from the start, a Go duration
	Kind      workflow.EventKind `json:"kind"`
	Step      string             `json:"step,omitempty"`
	Attempt   int                `json:"attempt,omitempty"`
	Output    any                `json:"output,omitempty"`
	Error     string             `json:"error,omitempty"`
	Permanent bool               `json:"permanent,omitempty"`
	Timer     string             `json:"timer,omitempty"`
	Reason    string             `json:"reason,omitempty"`
	Comment   string             `json:"comment,omitempty"`
}

// golden is what a replay must reproduce: one line per event, the final
// instance and the value of its output.
type golden struct {
	Log    []string           `json:"log"`
	Final  *workflow.Instance `json:"final"`
	Output any                `json:"output"`
}

func loadOrderDefinition(t testing.TB) *workflow.Definition {
	t.Helper()
	path := filepath.Join("testdata", "order", "definition.yaml")
	src, err := os.ReadFile(path)
	require.NoError(t, err)
	def, err := workflow.Parse(path, src)
	require.NoError(t, err)
	return def
}

// replay applies a history and returns the log and the final instance.
func replay(t *testing.T, def *workflow.Definition, h history) golden {
	t.Helper()
	id := workflow.InstanceID(def.Name, h.EventKey)
	data := memData{workflow.InputKey(id): h.Input}
	var inst *workflow.Instance
	var out golden
	for i, rec := range h.Events {
		at, err := time.ParseDuration(rec.At)
		require.NoError(t, err, "event %d", i)
		ev := workflow.Event{
			Kind: rec.Kind, Instance: id,
			Step: rec.Step, Attempt: rec.Attempt,
			Error: rec.Error, Permanent: rec.Permanent,
			Timer: rec.Timer, Reason: rec.Reason,
		}
		if rec.Kind == workflow.EventStart {
			ev.Workflow, ev.Version, ev.EventKey, ev.InputRef = def.Name, def.Version, h.EventKey, workflow.InputKey(id)
		}
		if rec.Kind == workflow.EventResult && rec.Error == "" {
			ev.OutputRef = workflow.OutputKey(id, rec.Step, rec.Attempt)
			data[ev.OutputRef] = rec.Output
		}
		before := inst.Clone()
		dec, err := workflow.Apply(def, inst, ev, t0.Add(at), data)
		require.NoError(t, err, "event %d", i)
		require.Equal(t, before, inst, "event %d: Apply modified its input", i)
		requireForward(t, inst, dec.Instance)
		for _, w := range dec.Writes {
			data[w.Key] = w.Value
		}
		line := logLine(rec, dec)
		if !dec.Changed && inst != nil {
			// An event found already applied: what a dispatcher
			// publishes again (the instance may owe it after a crash).
			line += owes(workflow.Outstanding(def, inst))
		}
		out.Log = append(out.Log, line)
		inst = dec.Instance
	}
	out.Final = inst
	if inst != nil && inst.OutputRef != "" {
		v, err := data.Load(inst.OutputRef)
		require.NoError(t, err)
		out.Output = v
	}
	return out
}

func logLine(rec historyRecord, dec workflow.Decision) string {
	what := string(rec.Kind)
	switch rec.Kind {
	case workflow.EventResult:
		what += fmt.Sprintf(" %s/%d", rec.Step, rec.Attempt)
		if rec.Error != "" {
			what += " error"
		}
	case workflow.EventTimer:
		what += " " + rec.Timer
	}
	if !dec.Changed {
		return fmt.Sprintf("%s %s: ignored (%s)", rec.At, what, dec.Ignored)
	}
	var parts []string
	for _, w := range dec.Writes {
		parts = append(parts, "write "+strings.TrimPrefix(w.Key, dec.Instance.ID))
	}
	for _, tk := range dec.Tasks {
		parts = append(parts, fmt.Sprintf("task %s/%d", tk.Step, tk.Attempt))
	}
	for _, tm := range dec.Timers {
		parts = append(parts, fmt.Sprintf("timer %s at +%s", tm.ID, tm.At.Sub(t0)))
	}
	parts = append(parts, "instance "+string(dec.Instance.Status))
	return fmt.Sprintf("%s %s: %s", rec.At, what, strings.Join(parts, ", "))
}

// owes renders the work an instance owes, as a log suffix.
func owes(d workflow.Decision) string {
	var parts []string
	for _, tk := range d.Tasks {
		parts = append(parts, fmt.Sprintf("task %s/%d", tk.Step, tk.Attempt))
	}
	for _, tm := range d.Timers {
		parts = append(parts, fmt.Sprintf("timer %s at +%s", tm.ID, tm.At.Sub(t0)))
	}
	for _, c := range d.Children {
		parts = append(parts, fmt.Sprintf("child %s/%d", c.Parent.Step, c.Parent.Index))
	}
	for _, e := range d.Events {
		parts = append(parts, fmt.Sprintf("event %s", e.Event.Kind))
	}
	if len(parts) == 0 {
		return "; owes nothing"
	}
	return "; owes " + strings.Join(parts, ", ")
}

// goldenJSON renders g with zero values left out, so that adding a field
// that stays zero for these histories does not change the golden files.
func goldenJSON(t *testing.T, g golden) []byte {
	t.Helper()
	raw, err := json.Marshal(g)
	require.NoError(t, err)
	var v any
	require.NoError(t, json.Unmarshal(raw, &v))
	out, err := json.MarshalIndent(pruneZero(v), "", "  ")
	require.NoError(t, err)
	return out
}

func pruneZero(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			e = pruneZero(e)
			if isZero(e) {
				delete(x, k)
				continue
			}
			x[k] = e
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = pruneZero(e)
		}
		return x
	}
	return v
}

func isZero(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == "" || x == "0001-01-01T00:00:00Z"
	case float64:
		return x == 0
	case bool:
		return !x
	case map[string]any:
		return len(x) == 0
	}
	return false
}

func TestReplayHistories(t *testing.T) {
	t.Parallel()
	def := loadOrderDefinition(t)
	paths, err := filepath.Glob(filepath.Join("testdata", "order", "history-*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, paths)
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			raw, err := os.ReadFile(path)
			require.NoError(t, err)
			var h history
			require.NoError(t, json.Unmarshal(raw, &h))

			got := replay(t, def, h)
			// Replaying is deterministic.
			require.Equal(t, got, replay(t, def, h))

			goldenPath := strings.Replace(path, "history-", "golden-", 1)
			gotJSON := goldenJSON(t, got)
			gotJSON = append(gotJSON, '\n')
			if *update {
				require.NoError(t, os.WriteFile(goldenPath, gotJSON, 0o644))
			}
			want, err := os.ReadFile(goldenPath)
			require.NoError(t, err, "run go test ./workflow -run TestReplayHistories -update to create it")
			require.Equal(t, string(want), string(gotJSON))
		})
	}
}

// The facts the large-order history is about, stated directly so that a
// golden file rewritten by mistake cannot hide them.
func TestReplayLargeOrder(t *testing.T) {
	t.Parallel()
	def := loadOrderDefinition(t)
	raw, err := os.ReadFile(filepath.Join("testdata", "order", "history-large-order.json"))
	require.NoError(t, err)
	var h history
	require.NoError(t, json.Unmarshal(raw, &h))
	got := replay(t, def, h)

	inst := got.Final
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	require.Equal(t, workflow.InstanceOutputKey(inst.ID), inst.OutputRef)
	require.Equal(t, map[string]any{
		"shipped":  map[string]any{"tracking": "TRK-1"},
		"charged":  float64(1500),
		"rejected": nil,
	}, got.Output)
	require.Equal(t, t0.Add(21*time.Second), inst.Ended)
	require.Empty(t, inst.Timers)
	require.Equal(t, 2, inst.Steps["charge-card"].Attempt)
	require.Equal(t, workflow.OutputKey(inst.ID, "charge-card", 2), inst.Steps["charge-card"].OutputRef)
	require.Equal(t, 2, inst.Steps["reserve-stock"].Attempt)
	require.Equal(t, workflow.OutputKey(inst.ID, "reserve-stock", 2), inst.Steps["reserve-stock"].OutputRef)
	require.Equal(t, workflow.StepCompleted, inst.Steps["manual-review"].Status)
	require.NotContains(t, inst.Steps, "reject")
	for name, st := range inst.Steps {
		require.Equal(t, workflow.StepCompleted, st.Status, "step %q", name)
	}
	ignored := 0
	for _, line := range got.Log {
		if strings.Contains(line, "ignored") {
			ignored++
		}
	}
	require.Equal(t, 7, ignored, "duplicate start, redelivered and stale results, a cancelled timer, events after completion")
	require.Equal(t, uint64(len(h.Events)-ignored), inst.Events)
}

// The facts the crash-redeliveries history is about: every event comes
// back after it was applied (as after a crash of the server, with a
// delivery count of 1); the second delivery changes nothing, and until
// the instance ends it owes the work the first delivery decided.
func TestReplayCrashRedeliveries(t *testing.T) {
	t.Parallel()
	def := loadOrderDefinition(t)
	raw, err := os.ReadFile(filepath.Join("testdata", "order", "history-crash-redeliveries.json"))
	require.NoError(t, err)
	var h history
	require.NoError(t, json.Unmarshal(raw, &h))
	got := replay(t, def, h)
	require.Equal(t, workflow.StatusCompleted, got.Final.Status)
	require.Equal(t, uint64(len(h.Events)/2), got.Final.Events, "each event changed the instance once")
	owed := []string{"task validate/1", "task reserve-stock/1", "task charge-card/1", "timer retry.charge-card.2", "task charge-card/2", "task ship/1"}
	for i := 1; i < len(got.Log); i += 2 {
		line := got.Log[i]
		require.Contains(t, line, "ignored", "second delivery of event %d", i)
		if i == len(got.Log)-1 {
			require.True(t, strings.HasSuffix(line, "owes nothing"), line)
			continue
		}
		require.Contains(t, line, "owes ", line)
	}
	for _, w := range owed {
		found := false
		for i := 1; i < len(got.Log); i += 2 {
			found = found || strings.Contains(got.Log[i], w)
		}
		require.True(t, found, "%s is owed after its event comes back", w)
	}
}
