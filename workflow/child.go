package workflow

import (
	"fmt"
	"time"
)

// Workflow steps (kind workflow) start one child instance and complete
// with its output. They reuse the bulk step's machinery: the child's
// input goes to a write-once key, the child is started by a pointer
// message after the parent's CAS, its id derives from (parent, step,
// attempt) (ChildInstanceID with the attempt as the index; a workflow
// step has one attempt, and one more per operator retry that reaches
// it), and it tells its parent that it ended with the
// same completion notice (parentNotice). A single completion needs no
// barrier: it moves the step out of running, so a second copy of the
// notice finds the step ended and changes nothing. A lost notice or a
// lost pointer is recovered like a bulk child's: a workflow step that
// has not moved for StaleBulk is reconciled (Repairs), and the poked
// child answers from its own state (ReconcileChild).

func (t *transition) activateChild(s *Step, st *StepState) {
	st.Attempt++ // 1; an operator's retry starts a new child (jetflow retry)
	st.Moved = t.now
	var in any
	if s.Input != "" {
		v, err := t.def.eval(s.Name, "input", t.inst, t)
		if err != nil {
			t.exprFailed(s, st, err)
			return
		}
		in = v
	} else {
		v, err := t.Load(t.inst.InputRef)
		if err != nil {
			t.err = err
			return
		}
		in = v
	}
	t.writes = append(t.writes, Write{Key: ChildInputKey(t.inst.ID, s.Name, st.Attempt), Value: in})
	t.children = append(t.children, childFor(t.inst, s, st.Attempt))
}

// childDone completes (or fails) a workflow step from its child's notice.
func (t *transition) childDone(s *Step, st *StepState, ev Event) {
	if ev.Kind != EventChildDone {
		t.ignored = fmt.Sprintf("%s for workflow step %q changes nothing", ev.Kind, s.Name)
		return
	}
	if ev.Index != st.Attempt {
		t.ignored = fmt.Sprintf("notice of child %d of workflow step %q, the child of its attempt is %d", ev.Index, s.Name, st.Attempt)
		return
	}
	t.changed = true
	st.Moved = t.now
	if ev.ChildStatus == StatusCompleted {
		st.Status, st.Ended, st.OutputRef = StepCompleted, t.now, ev.OutputRef
		t.follow(s)
		return
	}
	why := fmt.Sprintf("child workflow %s %s", s.Workflow, ev.ChildStatus)
	if ev.Error != "" {
		why += ": " + ev.Error
	}
	t.failStep(s, st, why)
}

// childCancels are the cancellations an ended instance sends the children
// of its running workflow steps.
func childCancels(def *Definition, inst *Instance) []OutEvent {
	var out []OutEvent
	for _, name := range sortedKeys(inst.Steps) {
		st := inst.Steps[name]
		s, ok := def.index[name]
		if !ok || s.Kind != KindWorkflow || st.Status != StepRunning {
			continue
		}
		child := ChildInstanceID(s.Workflow, inst.ID, s.Name, st.Attempt)
		// The cancel names the child's workflow and parent, so a child
		// whose start is still on its way is created cancelled (and its
		// late start changes nothing).
		out = append(out, OutEvent{
			Event: Event{Kind: EventCancel, Instance: child, Workflow: s.Workflow, Reason: fmt.Sprintf("parent %s %s", inst.ID, inst.Status),
				Parent: &ParentRef{ID: inst.ID, Step: s.Name, Index: st.Attempt}},
			MsgID: "cancel/" + child + "/parent",
		})
	}
	return out
}

// ChildOfStep is the instance id of the child a workflow step's attempt
// starts.
func ChildOfStep(def *Definition, parent, step string, attempt int) string {
	s, ok := def.index[step]
	if !ok {
		return ""
	}
	return ChildInstanceID(s.Workflow, parent, step, attempt)
}

// cancelledChild applies a parent's cancel to a child workflow that does
// not exist yet (its start message is still on its way): the child is
// created cancelled, so its start, when it comes, finds the instance and
// changes nothing.
func cancelledChild(def *Definition, ev Event, now time.Time, data Data) (Decision, error) {
	p := *ev.Parent
	inst := &Instance{
		ID: ev.Instance, Workflow: def.Name, Version: def.Version,
		EventKey: ChildEventKey(p.ID, p.Step, p.Index), InputRef: ChildInputKey(p.ID, p.Step, p.Index),
		Status: StatusRunning, Created: now, Steps: map[string]*StepState{}, Parent: &p,
	}
	t := &transition{def: def, inst: inst, now: now, data: data, changed: true}
	reason := ev.Reason
	if reason == "" {
		reason = "cancelled"
	}
	t.finish(StatusCancelled, "", reason+" before the child started")
	return t.decision(nil)
}
