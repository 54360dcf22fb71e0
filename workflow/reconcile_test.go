package workflow_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// childCase is one child of a bulk step as a crash may leave it.
type childCase int

const (
	childAbsent    childCase = iota // its pointer was lost: it never started
	childRunning                    // started, not ended
	childCompleted                  // ended completed
	childFailed                     // ended failed
)

func (c childCase) String() string {
	return [...]string{"absent", "running", "completed", "failed"}[c]
}

func (c childCase) instance() *workflow.Instance {
	switch c {
	case childRunning:
		return &workflow.Instance{Status: workflow.StatusRunning}
	case childCompleted:
		return &workflow.Instance{Status: workflow.StatusCompleted}
	case childFailed:
		return &workflow.Instance{Status: workflow.StatusFailed}
	}
	return nil
}

// TestReconcileDecisions covers every combination of a child's state, its
// barrier and whether its completion is counted: what the reconciling
// parent and the poked child do.
func TestReconcileDecisions(t *testing.T) {
	t.Parallel()
	for _, child := range []childCase{childAbsent, childRunning, childCompleted, childFailed} {
		for _, barrier := range []bool{false, true} {
			for _, counted := range []bool{false, true} {
				t.Run(fmt.Sprintf("child %s, barrier %t, counted %t", child, barrier, counted), func(t *testing.T) {
					// The parent looks only at the barrier: the round's
					// recount counts every barrier (whether counted or
					// not: counts only grow to the number of barriers),
					// and a child without one is asked.
					want := workflow.PokeChild
					if barrier {
						want = workflow.CountedByRecount
					}
					require.Equal(t, want, workflow.ReconcileParent(barrier))
					if barrier {
						return // the child is not asked
					}
					// The child answers from its own state.
					wantChild := map[childCase]workflow.ChildAction{
						childAbsent:    workflow.ChildStart,
						childRunning:   workflow.ChildNothing,
						childCompleted: workflow.ChildNotify,
						childFailed:    workflow.ChildNotify,
					}[child]
					require.Equal(t, wantChild, workflow.ReconcileChild(child.instance()))
				})
			}
		}
	}
}

const reconcileParentDef = `
name: parent
version: 1
steps:
  - {name: fan, kind: bulk, workflow: child, items: input.items}
`

// reconcileModel is a bulk step's parent (driven through Apply), its
// barriers and its children, as a crash may leave them.
type reconcileModel struct {
	h        *harness
	children []childCase
	ok, fail map[int]bool // barriers
}

// notice delivers a child's completion notice the way the dispatcher
// does: only a notice the parent accepts may create the barrier, and
// only the one that creates it is counted.
func (m *reconcileModel) notice(i int) {
	c := m.children[i]
	ev := workflow.Event{Kind: workflow.EventChildDone, Instance: m.h.id, Step: "fan", Index: i, ChildStatus: workflow.StatusCompleted}
	barriers := m.ok
	if c == childFailed {
		ev.ChildStatus, barriers = workflow.StatusFailed, m.fail
	}
	probe, err := workflow.Apply(m.h.def, m.h.inst, ev, m.h.now, m.h.data)
	require.NoError(m.h.t, err)
	if !probe.Changed || barriers[i] {
		return
	}
	barriers[i] = true
	m.h.apply(ev)
}

// round runs one reconciliation round: the recount of every barrier,
// then every child without one answers its poke.
func (m *reconcileModel) round() {
	m.h.apply(workflow.Event{Kind: workflow.EventRecount, Step: "fan", Completed: len(m.ok), Failed: len(m.fail)})
	st := m.h.inst.Steps["fan"]
	for i := 0; i < st.Cursor; i++ {
		if workflow.ReconcileParent(m.ok[i] || m.fail[i]) != workflow.PokeChild {
			continue
		}
		switch workflow.ReconcileChild(m.children[i].instance()) {
		case workflow.ChildStart:
			m.children[i] = childRunning
		case workflow.ChildNotify:
			m.notice(i)
		}
	}
}

// TestReconcileRoundConverges builds random parents with children in
// every state a crash can leave (absent, running, ended with or without
// its notice counted, with or without a barrier) and checks that one
// round leaves counts equal to the barriers and every ended child with a
// barrier, that nothing is counted twice, that a second round changes
// nothing, and that the step completes exactly when every child ended.
func TestReconcileRoundConverges(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 11))
	for run := range 500 {
		n := 1 + rng.IntN(40)
		items := make([]any, n)
		for i := range items {
			items[i] = int64(i)
		}
		h := setup(t, reconcileParentDef, map[string]any{"items": items})
		h.start()
		m := &reconcileModel{h: h, children: make([]childCase, n), ok: map[int]bool{}, fail: map[int]bool{}}
		for i := range n {
			m.children[i] = childCase(rng.IntN(4))
			ended := m.children[i] == childCompleted || m.children[i] == childFailed
			switch {
			case !ended:
			case rng.IntN(3) == 0:
				// counted: its notice went through
				m.notice(i)
			case rng.IntN(2) == 0:
				// the barrier exists, the count was never committed
				if m.children[i] == childCompleted {
					m.ok[i] = true
				} else {
					m.fail[i] = true
				}
			default:
				// the notice was never published
			}
		}
		desc := fmt.Sprintf("run %d: children %v", run, m.children)

		m.round()

		st := h.inst.Steps["fan"]
		completed, failed := 0, 0
		for i, c := range m.children {
			switch c {
			case childCompleted:
				completed++
				require.True(t, m.ok[i], "%s: completed child %d has no barrier", desc, i)
			case childFailed:
				failed++
				require.True(t, m.fail[i], "%s: failed child %d has no barrier", desc, i)
			default:
				require.False(t, m.ok[i] || m.fail[i], "%s: child %d is %s with a barrier", desc, i, c)
			}
		}
		require.Equal(t, completed, st.Done, "%s: counted completions", desc)
		require.Equal(t, failed, st.ChildFailed, "%s: counted failures", desc)
		require.Equal(t, completed+failed == n, st.Status == workflow.StepCompleted, "%s: the step completes iff every child ended", desc)

		before := h.inst.Clone()
		m.round()
		require.Equal(t, before, h.inst, "%s: a second round changed the parent", desc)
	}
}

// TestReconcileRounds checks when the repair loop reconciles a bulk step:
// only once the step itself has not moved for StaleBulk, however recently
// the instance changed; then in rounds at 1, 2, 4, 8, 16 and 24 times
// StaleBulk, each with message ids of its own, the same for every now
// within one round.
func TestReconcileRounds(t *testing.T) {
	t.Parallel()
	const stale = 30 * time.Second
	policy := workflow.RepairPolicy{StaleBulk: stale}
	h := setup(t, reconcileParentDef, map[string]any{"items": []any{int64(1), int64(2)}})
	h.start()
	// Something else rewrites the instance later: the step did not move.
	h.inst.Updated = t0.Add(time.Hour)
	require.Equal(t, t0.Add(stale), workflow.NextRepair(h.def, h.inst, policy))
	require.Empty(t, workflow.Repairs(h.def, h.inst, t0.Add(stale), policy))

	ids := map[string]time.Duration{}
	var last string
	for _, at := range []time.Duration{1, 2, 4, 8, 16, 24} {
		for _, within := range []time.Duration{time.Nanosecond, stale / 2} {
			now := t0.Add(at*stale + within)
			evs := workflow.Repairs(h.def, h.inst, now, policy)
			require.Len(t, evs, 1, "at %s", now.Sub(t0))
			ev := evs[0]
			require.Equal(t, workflow.EventRecount, ev.Event.Kind)
			require.Equal(t, workflow.ReasonStaleBulk, ev.Event.Reason)
			require.Equal(t, ev.Event.Round, ev.MsgID[len(ev.MsgID)-len(ev.Event.Round):], "the round is in the message id")
			if within == time.Nanosecond {
				_, seen := ids[ev.MsgID]
				require.False(t, seen, "round at %s reuses the id of the round at %s", at*stale, ids[ev.MsgID])
				ids[ev.MsgID] = at * stale
				last = ev.MsgID
			} else {
				require.Equal(t, last, ev.MsgID, "one id per round")
			}
		}
	}
	// No round between 8 and 16 times StaleBulk.
	r8 := workflow.Repairs(h.def, h.inst, t0.Add(8*stale+time.Nanosecond), policy)[0].MsgID
	r15 := workflow.Repairs(h.def, h.inst, t0.Add(16*stale), policy)[0].MsgID
	require.Equal(t, r8, r15)

	// A counted completion moves the step: rounds start over from it.
	h.now = t0.Add(10 * time.Minute)
	h.apply(workflow.Event{Kind: workflow.EventChildDone, Step: "fan", Index: 0, ChildStatus: workflow.StatusCompleted})
	require.Equal(t, h.now.Add(stale), workflow.NextRepair(h.def, h.inst, policy))
	evs := workflow.Repairs(h.def, h.inst, h.now.Add(stale+time.Nanosecond), policy)
	require.Len(t, evs, 1)
	_, seen := ids[evs[0].MsgID]
	require.False(t, seen, "a round after the step moved reuses an earlier id")
}
