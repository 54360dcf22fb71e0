package workflow

import "time"

// Pausing a workflow (jetflow pause): while a workflow is paused, its
// instances are created and move on as usual, but an attempt of a task
// step that is to start waits at the gate GatePaused instead of having its
// task published; no timeout runs while it waits. Whether the workflow is
// paused is an input of Apply (Event.Paused), filled in by the dispatcher
// from the pause records it watches. The order of the gates is pause,
// slot, rate: an attempt held by a pause takes no slot and no rate start.
// An attempt already waiting at a slot or a rate limit when the pause is
// set is held when that gate grants it (keeping its slot, giving up its
// rate start, which it takes again when released).
//
// A held attempt is released by a grant of GatePaused (PauseRelease),
// applied while the workflow is not paused; applied while it is (again),
// the grant changes nothing. Releases are sent by the dispatchers when
// they see the resume and by their repair loops while an attempt is held
// and its workflow is not paused, so an attempt held by a dispatcher that
// had not seen the resume yet is released too. A release is idempotent: it
// moves only an attempt that waits at the pause gate, once.

// PausedAttempts lists the attempts of inst that wait at GatePaused, in
// step order.
func PausedAttempts(inst *Instance) []Holder {
	if inst == nil || inst.Status.Terminal() {
		return nil
	}
	var out []Holder
	for _, name := range sortedKeys(inst.Steps) {
		st := inst.Steps[name]
		if st.Status == StepRunning && st.Gate == GatePaused {
			out = append(out, Holder{Instance: inst.ID, Step: name, Attempt: st.Attempt})
		}
	}
	return out
}

// PauseRelease is the grant that releases an attempt held by a pause.
// round tells releases apart (the resume's revision, a repair round), so
// that a release applied while the workflow was paused again does not
// suppress, as a duplicate message, one sent after the next resume.
func PauseRelease(h Holder, round string) OutEvent {
	ev := GrantEvent(GatePaused, h, false, time.Time{})
	ev.MsgID += "/" + round
	return ev
}

// hold makes the current attempt of st wait at the pause gate; held is
// the gate it has passed (StepState.Held).
func (t *transition) hold(st *StepState, held string) {
	st.Gate, st.GateSince, st.Held = GatePaused, t.now, held
}

// releasePaused applies a release to an attempt held by a pause: it goes
// on from the gate it had passed (slot, rate, then its task).
func (t *transition) releasePaused(s *Step, st *StepState) {
	if t.paused {
		t.ignored = "release of a paused attempt while its workflow is still paused"
		return
	}
	t.changed = true
	held := st.Held
	st.Gate, st.Held = "", ""
	switch {
	case held == GateSlot && st.Rate != "":
		st.Gate, st.GateSince = GateRate, t.now
		t.gates = append(t.gates, rateOp(s, st, Holder{Instance: t.inst.ID, Step: s.Name, Attempt: st.Attempt}))
	case held == GateSlot:
		t.publishAttempt(s, st)
	default:
		t.enterGates(s, st)
	}
}
