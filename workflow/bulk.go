package workflow

import (
	"fmt"
)

// Bulk steps start one child instance per item of a list and complete when
// every child is terminal. The parent's state stays O(1) whatever the
// number of items: Total, Cursor, ChunkFrom, Done and ChildFailed. Child
// inputs go to write-once keys (ChildInputKey), children are started with
// pointer messages after the parent's CAS, and a child's completion counts
// once because the dispatcher passes it through a per-child write-once
// barrier (ChildBarrierKey) before applying EventChildDone.

func (t *transition) activateBulk(s *Step, st *StepState) {
	list, ok := t.bulkItems(s, st)
	if !ok {
		return
	}
	limit := s.MaxItems
	if limit == 0 {
		limit = DefaultMaxItems
	}
	if len(list) > limit {
		t.failStep(s, st, fmt.Sprintf("items has %d elements; the limit is %d (max_items)", len(list), limit))
		return
	}
	st.Total = len(list)
	if st.Total == 0 {
		t.completeBulk(s, st)
		return
	}
	t.dispatchChildren(s, st, list)
}

// bulkItems evaluates the items expression; on failure it fails the step.
func (t *transition) bulkItems(s *Step, st *StepState) ([]any, bool) {
	v, err := t.def.eval(s.Name, "items", t.inst, t)
	if err != nil {
		t.exprFailed(s, st, err)
		return nil, false
	}
	list, ok := v.([]any)
	if !ok && v != nil {
		t.failStep(s, st, fmt.Sprintf("items must be a list, got %T", v))
		return nil, false
	}
	return list, true
}

// dispatchChildren starts the next chunk of children, as far as the
// window allows, and asks for a continuation when more may follow.
func (t *transition) dispatchChildren(s *Step, st *StepState, list []any) {
	n := min(BulkChunk, st.Total-st.Cursor)
	if s.MaxInFlight > 0 {
		n = min(n, s.MaxInFlight-st.InFlight())
	}
	if n <= 0 {
		return
	}
	st.ChunkFrom = st.Cursor
	st.Moved = t.now
	for i := st.Cursor; i < st.Cursor+n; i++ {
		t.writes = append(t.writes, Write{Key: ChildInputKey(t.inst.ID, s.Name, i), Value: list[i]})
		t.children = append(t.children, childFor(t.inst, s, i))
	}
	st.Cursor += n
	if cont, ok := continueFor(t.inst, s, st); ok {
		t.events = append(t.events, cont)
	}
}

// ReasonStaleBulk is the Reason of the repair loop's reconciliation of a
// bulk step that has not moved for StaleBulk (EventRecount with
// Completed < 0 and Round set): the dispatcher recounts the step from its
// barriers and pokes every dispatched child whose completion has no
// barrier (ReconcileParent); each poked child answers from its own state
// (ReconcileChild).
const ReasonStaleBulk = "stale bulk step"

// UncountedChildren lists the children of a running bulk step that were
// dispatched (index below the cursor) and whose completion has no barrier
// (barrier reports the indexes that have one): the children a
// reconciliation pokes (ReconcileParent). Each carries MsgID, the
// message id of its poke in this round, so the trigger stream does not
// drop a poke as a duplicate of the child's first pointer or of an
// earlier round's poke.
func UncountedChildren(def *Definition, inst *Instance, step, round string, barrier func(int) bool) []Child {
	s, ok := def.index[step]
	st := inst.Steps[step]
	if !ok || (s.Kind != KindBulk && s.Kind != KindWorkflow) || st == nil || st.Status != StepRunning {
		return nil
	}
	from, to := 0, st.Cursor
	if s.Kind == KindWorkflow {
		from, to = st.Attempt, st.Attempt+1 // its one child, never counted by barriers
		barrier = func(int) bool { return false }
	}
	var out []Child
	for i := from; i < to; i++ {
		if ReconcileParent(barrier(i)) == PokeChild {
			c := childFor(inst, s, i)
			c.Reconcile = round
			c.MsgID = ReconcileMsgID(ChildInstanceID(s.Workflow, inst.ID, s.Name, i), round)
			out = append(out, c)
		}
	}
	return out
}

func childFor(inst *Instance, s *Step, i int) Child {
	return Child{
		Workflow: s.Workflow,
		EventKey: ChildEventKey(inst.ID, s.Name, i),
		InputRef: ChildInputKey(inst.ID, s.Name, i),
		Parent:   ParentRef{ID: inst.ID, Step: s.Name, Index: i},
		Trace:    inst.Trace,
	}
}

// continueFor returns the self-event that dispatches the next chunk, when
// children remain and the window has room.
func continueFor(inst *Instance, s *Step, st *StepState) (OutEvent, bool) {
	if st.Cursor >= st.Total || (s.MaxInFlight > 0 && st.InFlight() >= s.MaxInFlight) {
		return OutEvent{}, false
	}
	return OutEvent{
		Event: Event{Kind: EventContinue, Instance: inst.ID, Step: s.Name, Index: st.Cursor},
		MsgID: fmt.Sprintf("continue/%s/%s/%d", inst.ID, s.Name, st.Cursor),
	}, true
}

func (t *transition) bulkEvent(ev Event) {
	s, ok := t.def.index[ev.Step]
	st := t.inst.Steps[ev.Step]
	if ok && s.Kind == KindWorkflow && st != nil && st.Status == StepRunning {
		t.childDone(s, st, ev)
		return
	}
	if !ok || s.Kind != KindBulk || st == nil {
		t.ignored = fmt.Sprintf("%s for step %q that is not a bulk step", ev.Kind, ev.Step)
		return
	}
	if st.Status != StepRunning {
		t.ignored = fmt.Sprintf("%s for bulk step %q that is %s", ev.Kind, ev.Step, st.Status)
		return
	}
	switch ev.Kind {
	case EventContinue:
		if ev.Index != st.Cursor {
			t.ignored = fmt.Sprintf("stale continue at %d: cursor is %d", ev.Index, st.Cursor)
			return
		}
		list, ok := t.bulkItems(s, st)
		t.changed = true
		if ok {
			t.dispatchChildren(s, st, list)
		}
		return
	case EventChildDone:
		if ev.Index < 0 || ev.Index >= st.Cursor {
			t.ignored = fmt.Sprintf("child %d of step %q was never dispatched (cursor %d)", ev.Index, ev.Step, st.Cursor)
			return
		}
		t.changed = true
		st.Moved = t.now
		if ev.ChildStatus == StatusCompleted {
			st.Done++
		} else {
			st.ChildFailed++
			if s.OnChildFailure == FailFast {
				t.failStep(s, st, fmt.Sprintf("child %d %s: %s", ev.Index, ev.ChildStatus, ev.Error))
				return
			}
		}
	case EventRecount:
		if ev.Completed+ev.Failed > st.Cursor || (ev.Completed <= st.Done && ev.Failed <= st.ChildFailed) {
			t.ignored = "recount changes nothing"
			return
		}
		t.changed = true
		st.Moved = t.now
		st.Done = max(st.Done, ev.Completed)
		st.ChildFailed = max(st.ChildFailed, ev.Failed)
		st.Recounts++
		if st.ChildFailed > 0 && s.OnChildFailure == FailFast {
			t.failStep(s, st, fmt.Sprintf("%d children failed", st.ChildFailed))
			return
		}
	}
	if st.Done+st.ChildFailed >= st.Total {
		t.completeBulk(s, st)
		return
	}
	// The window slid: dispatch more.
	if st.Cursor < st.Total && (s.MaxInFlight > 0 && st.InFlight() < s.MaxInFlight) {
		if list, ok := t.bulkItems(s, st); ok {
			t.dispatchChildren(s, st, list)
		}
	}
}

func (t *transition) completeBulk(s *Step, st *StepState) {
	st.Status = StepCompleted
	st.Ended = t.now
	st.OutputRef = BulkOutputKey(t.inst.ID, s.Name)
	t.writes = append(t.writes, Write{Key: st.OutputRef, Value: map[string]any{
		"total":     int64(st.Total),
		"completed": int64(st.Done),
		"failed":    int64(st.ChildFailed),
		"workflow":  s.Workflow,
		"parent":    t.inst.ID,
		"step":      s.Name,
	}})
	t.follow(s)
}
