package workflow_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// t0 is the fixed "now" of the transition tests.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// memData is an in-memory workflow.Data: write-once values by key.
type memData map[string]any

func (m memData) Load(key string) (any, error) {
	v, ok := m[key]
	if !ok {
		return nil, fmt.Errorf("load %s: %w", key, workflow.ErrNotFound)
	}
	return v, nil
}

// mustParse parses a definition that the test expects to be valid.
func mustParse(t testing.TB, src string) *workflow.Definition {
	t.Helper()
	def, err := workflow.Parse(t.Name()+".yaml", []byte(src))
	require.NoError(t, err)
	return def
}

// harness drives one instance of a definition through Apply, checking on
// every call that Apply did not modify the instance it was given.
type harness struct {
	t    *testing.T
	def  *workflow.Definition
	data memData
	id   string
	now  time.Time
	inst *workflow.Instance
}

// setup parses src and prepares an instance id and its input.
func setup(t *testing.T, src string, input any) *harness {
	t.Helper()
	def := mustParse(t, src)
	id := workflow.InstanceID(def.Name, "key-1")
	h := &harness{t: t, def: def, data: memData{}, id: id, now: t0}
	if input != nil {
		h.data[workflow.InputKey(id)] = input
	}
	return h
}

// apply applies ev to the current instance and keeps the new state.
func (h *harness) apply(ev workflow.Event) workflow.Decision {
	h.t.Helper()
	if ev.Instance == "" {
		ev.Instance = h.id
	}
	before := h.inst.Clone()
	dec, err := workflow.Apply(h.def, h.inst, ev, h.now, h.data)
	require.NoError(h.t, err)
	require.Equal(h.t, before, h.inst, "Apply modified its input instance")
	if dec.Changed {
		require.NotNil(h.t, dec.Instance)
		require.Empty(h.t, dec.Ignored)
		h.inst = dec.Instance
	} else {
		require.Same(h.t, h.inst, dec.Instance, "an unchanged decision returns the input instance")
		require.Empty(h.t, dec.Writes)
		require.Empty(h.t, dec.Tasks)
		require.Empty(h.t, dec.Timers)
		require.Empty(h.t, dec.Children)
		require.Empty(h.t, dec.Events)
	}
	return dec
}

func (h *harness) start() workflow.Decision {
	h.t.Helper()
	return h.apply(workflow.Event{
		Kind:     workflow.EventStart,
		Instance: h.id,
		Workflow: h.def.Name,
		Version:  h.def.Version,
		EventKey: "key-1",
		InputRef: workflow.InputKey(h.id),
	})
}

// ok delivers a successful result of an attempt, storing its output first
// as a worker would.
func (h *harness) ok(step string, attempt int, output any) workflow.Decision {
	h.t.Helper()
	ref := workflow.OutputKey(h.id, step, attempt)
	h.data[ref] = output
	return h.apply(workflow.Event{Kind: workflow.EventResult, Step: step, Attempt: attempt, OutputRef: ref})
}

// fail delivers a failed result of an attempt.
func (h *harness) fail(step string, attempt int, msg string) workflow.Decision {
	h.t.Helper()
	return h.apply(workflow.Event{Kind: workflow.EventResult, Step: step, Attempt: attempt, Error: msg})
}

// fire delivers a timer event.
func (h *harness) fire(timer string) workflow.Decision {
	h.t.Helper()
	return h.apply(workflow.Event{Kind: workflow.EventTimer, Timer: timer})
}

// step returns the state of a step, which must have been activated.
func (h *harness) step(name string) *workflow.StepState {
	h.t.Helper()
	st, ok := h.inst.Steps[name]
	require.True(h.t, ok, "step %q not activated", name)
	return st
}

// taskSteps lists "step/attempt" of tasks, in order.
func taskSteps(tasks []workflow.Task) []string {
	out := make([]string, len(tasks))
	for i, tk := range tasks {
		out[i] = fmt.Sprintf("%s/%d", tk.Step, tk.Attempt)
	}
	return out
}

// requireForward fails if next is not a legal successor state of prev:
// terminal instances stay as they were, completed or failed steps never
// run again, attempts never go down, no step disappears.
func requireForward(t testing.TB, prev, next *workflow.Instance) {
	t.Helper()
	if prev == nil {
		return
	}
	require.NotNil(t, next)
	if prev.Status.Terminal() {
		require.Equal(t, prev, next, "a terminal instance changed")
		return
	}
	require.GreaterOrEqual(t, next.Events, prev.Events)
	for name, ps := range prev.Steps {
		ns, ok := next.Steps[name]
		require.True(t, ok, "step %q disappeared", name)
		require.GreaterOrEqual(t, ns.Attempt, ps.Attempt, "step %q attempt went down", name)
		if ps.Status == workflow.StepCompleted || ps.Status == workflow.StepFailed {
			require.Equal(t, *ps, *ns, "step %q changed after it ended", name)
		}
	}
}
