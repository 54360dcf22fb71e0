package workflow

import "time"

// ScheduleState is the record of one schedule of a workflow, kept in the
// schedules bucket and changed only by compare-and-swap on its revision:
// that is where the fires of one schedule are decided one at a time, by
// DecideFire, however many dispatchers handle them.
type ScheduleState struct {
	// Paused: fires are skipped until resumed (jetflow schedule pause).
	Paused bool `json:"paused,omitempty"`
	// Last is the id of the instance the last started fire started.
	Last string `json:"last,omitempty"`
	// LastFire is the time of the last scheduled (not manual) fire
	// started.
	LastFire time.Time `json:"last_fire,omitzero"`
	// Pending: Last is being started; the next fire waits for it.
	Pending bool `json:"pending,omitempty"`
	// PendingAt is the time of the fire (or manual trigger) that is
	// pending.
	PendingAt time.Time `json:"pending_at,omitzero"`
	// Next is the server's next fire time, from the last fire seen.
	Next time.Time `json:"next,omitzero"`
	// Started and Skipped count fires (a fire whose skip was retried may
	// be counted twice in Skipped).
	Started uint64 `json:"started,omitempty"`
	Skipped uint64 `json:"skipped,omitempty"`
}

// Fire is one fire of a schedule as the dispatcher received it.
type Fire struct {
	// ID is the instance id the fire starts.
	ID string
	// At is the fire time (ScheduleSpec.FireTime), or the time of a
	// manual trigger.
	At time.Time
	// Next is the server's next fire time (zero for a manual trigger).
	Next time.Time
	// Manual: started by jetflow schedule trigger; it runs while paused
	// and is never "older" than the last fire.
	Manual bool
}

// FireTTL is how long a fire message waits for a dispatcher before it
// expires (the server drops it).
const FireTTL = time.Hour

// pendingLost: a pending start whose fire is this much older than the
// fire being decided cannot come back: its message expired (FireTTL,
// doubled for clocks and delays).
const pendingLost = 2 * FireTTL

// FireAction is what to do with a fire.
type FireAction int

const (
	// FireStart: write the new state (compare-and-swap), then start the
	// instance, then clear Pending.
	FireStart FireAction = iota
	// FireResume: this fire was decided to start before (a redelivery):
	// start the instance again (a duplicate start changes nothing), then
	// clear Pending.
	FireResume
	// FireSkip: write the new state (counts) and drop the fire.
	FireSkip
	// FireWait: another fire's start is pending; decide again later.
	FireWait
)

// FireDecision is DecideFire's answer.
type FireDecision struct {
	Action FireAction
	State  ScheduleState
	// Reason says why a fire is skipped or waits.
	Reason string
}

// DecideFire decides a fire against the schedule's state. skip is the
// schedule's overlap: skip; last is the status of the instance st.Last
// ("" when there is none or it is gone). The rules, in order:
//
//   - the fire already started (st.Last is its id): resume it;
//   - paused: skip (a manual trigger runs anyway);
//   - overlap: allow: start it;
//   - (overlap: skip from here) a fire not after the last started fire:
//     skip (out of order, as after a backlog);
//   - another fire's start is pending (its instance does not exist yet,
//     and its fire has not expired): wait;
//   - the last instance is running: skip;
//   - otherwise start it.
func DecideFire(st ScheduleState, f Fire, skip bool, last Status) FireDecision {
	next := st
	if f.Next.After(next.Next) {
		next.Next = f.Next
	}
	skipped := func(why string) FireDecision {
		next.Skipped++
		return FireDecision{Action: FireSkip, State: next, Reason: why}
	}
	switch {
	case st.Last == f.ID:
		return FireDecision{Action: FireResume, State: next}
	case st.Paused && !f.Manual:
		return skipped("the schedule is paused")
	case !skip:
		// overlap: allow: every fire starts, in any order; the fire time
		// in the id keeps each to one instance.
	case !f.Manual && !st.LastFire.IsZero() && !f.At.After(st.LastFire):
		return skipped("a later fire (" + st.LastFire.UTC().Format(time.RFC3339) + ") already started")
	case st.Pending && last == "" && !f.At.After(st.PendingAt.Add(pendingLost)):
		// (A pending instance that exists was started; one whose fire
		// expired long ago never will be: neither holds this fire.)
		return FireDecision{Action: FireWait, State: st, Reason: "the start of " + st.Last + " is not finished"}
	case skip && st.Last != "" && last != "" && !last.Terminal():
		return skipped("overlap: skip, and the last run " + st.Last + " is still " + string(last))
	}
	next.Last, next.Pending, next.PendingAt = f.ID, skip, f.At
	if !f.Manual && f.At.After(next.LastFire) {
		next.LastFire = f.At
	}
	next.Started++
	return FireDecision{Action: FireStart, State: next}
}

// FireStarted is the state after the start of id finished: Pending
// cleared if id is still the last fire. ok is false when nothing changes.
func FireStarted(st ScheduleState, id string) (ScheduleState, bool) {
	if st.Last != id || !st.Pending {
		return st, false
	}
	st.Pending, st.PendingAt = false, time.Time{}
	return st, true
}
