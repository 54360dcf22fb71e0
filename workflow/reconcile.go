package workflow

import (
	"strconv"
	"time"
)

// Reconciliation of a bulk step from its children's own states.
//
// A bulk step counts a child's completion when the child's notice passes
// the child's write-once barrier and the parent's CAS. A crash can leave
// a child's completion uncounted in three ways: its barrier exists but
// the count was never committed (the dispatcher died between the two);
// its notice was never published (the child's final CAS committed and the
// process died before the publish); or the child never started (its
// pointer was lost). Delivery counts cannot tell these apart from a first
// delivery: after a crash of the process that embeds the server, acked
// messages come back with a delivery count of 1. So the repair loop looks
// at state instead. A bulk step that has not moved for StaleBulk is
// reconciled in rounds (StaleBulk, then 2, 4 and 8 times it after it last
// moved, then every 8 times it), each with message ids of its own:
//
//   - the parent recounts the step from its barriers, so every barrier is
//     counted (a recount never counts one twice: counts only grow to the
//     number of barriers);
//   - the parent pokes every dispatched child that has no barrier
//     (ReconcileParent);
//   - each poked child answers from its own state (ReconcileChild): not
//     there, it starts (its input was written before its pointer); running,
//     nothing (its completion will come when it ends); ended, it sends its
//     completion notice again, which passes the barrier and the CAS like
//     any notice.
//
// After a round whose messages all arrive, counts equal barriers and
// every ended child has a barrier; a round whose messages are lost (the
// process dies again) is followed by the next.

// ParentAction is what a reconciling parent does for one dispatched child.
type ParentAction int

// Parent actions.
const (
	// CountedByRecount: the child's completion passed its barrier; the
	// round's recount counts it if it was not counted.
	CountedByRecount ParentAction = iota
	// PokeChild: no barrier; ask the child for its state.
	PokeChild
)

// ReconcileParent decides what a reconciling parent does for a dispatched
// child, from whether the child's barrier exists.
func ReconcileParent(barrier bool) ParentAction {
	if barrier {
		return CountedByRecount
	}
	return PokeChild
}

// ChildAction is how a poked child answers.
type ChildAction int

// Child actions.
const (
	// ChildNothing: the child is running; its notice comes when it ends.
	ChildNothing ChildAction = iota
	// ChildStart: the child does not exist (its pointer was lost): start it.
	ChildStart
	// ChildNotify: the child ended: send its completion notice again.
	ChildNotify
)

// ReconcileChild decides how a poked child answers, from its stored
// state (nil: it does not exist).
func ReconcileChild(child *Instance) ChildAction {
	switch {
	case child == nil:
		return ChildStart
	case child.Status.Terminal():
		return ChildNotify
	default:
		return ChildNothing
	}
}

// reconcileRound is the round of a step's reconciliation that is due at
// idle (how long the step has not moved): 0 up to StaleBulk; then 1, 2,
// 3, 4 after 1, 2, 4 and 8 times StaleBulk, and one more every 8 times
// StaleBulk after that (roundStart). Rounds grow apart so a step whose children are
// merely slow is not poked every sweep.
func reconcileRound(idle, stale time.Duration) int {
	if stale <= 0 || idle <= stale {
		return 0
	}
	n := int((idle - 1) / stale) // a round is due once its start has passed

	switch {
	case n < 2:
		return 1
	case n < 4:
		return 2
	case n < 8:
		return 3
	}
	return 4 + (n-8)/8
}

// roundStart is when round r (from 1) of a step idle since moved is due.
func roundStart(moved time.Time, r int, stale time.Duration) time.Time {
	switch {
	case r <= 1:
		return moved.Add(stale)
	case r <= 4:
		return moved.Add(stale << (r - 1))
	}
	return moved.Add(stale * time.Duration(8+8*(r-4)))
}

// bulkMoved is when a bulk step last moved (its start, for a step
// written before StepState.Moved existed).
func bulkMoved(st *StepState) time.Time {
	if st.Moved.After(st.Started) {
		return st.Moved
	}
	return st.Started
}

// roundID names round r of the reconciliation of a step idle since
// moved: the same in every repair loop, different for every round.
func roundID(moved time.Time, r int) string {
	return strconv.FormatInt(moved.UnixMilli(), 10) + "-" + strconv.Itoa(r)
}

// ReconcileMsgID is the message id of a round's poke of a child.
func ReconcileMsgID(child, round string) string { return "reconcile/" + child + "/" + round }

// reconcileEvent is round r's event for a bulk step.
func reconcileEvent(inst *Instance, step string, moved time.Time, r int) OutEvent {
	round := roundID(moved, r)
	return OutEvent{
		Event: Event{Kind: EventRecount, Instance: inst.ID, Step: step, Completed: -1, Failed: -1, Reason: ReasonStaleBulk, Round: round},
		MsgID: "reconcile/" + inst.ID + "/" + step + "/" + round,
	}
}
