package workflow

import (
	"sort"
	"strconv"
	"time"
)

// RepairPolicy says when the repair loop presumes work lost.
type RepairPolicy struct {
	// StaleTask: a running attempt of a task step without a timeout that
	// started longer ago than this is presumed lost. (Steps with a timeout
	// are covered by their timeout timer.)
	StaleTask time.Duration
	// TimerGrace: a pending timer this far past due is presumed lost and
	// fired by the repair loop.
	TimerGrace time.Duration
	// StaleBulk: a running bulk step with children not counted that has
	// not moved (StepState.Moved) for this long is reconciled: counted
	// again from its barriers, and its children without a barrier poked
	// (see ReconcileParent); again at 2, 4 and 8 times StaleBulk, then
	// every 8 times it, while it does not move.
	StaleBulk time.Duration
	// StaleGate: an instance or attempt waiting at a gate (a concurrency
	// slot, a rate-limit start) for this long is sent an EventRepair that
	// changes nothing, so the dispatcher republishes what the wait owes
	// (its acquire or rate op: workflow.Outstanding); again every
	// StaleGate while it waits.
	StaleGate time.Duration
	// Force repairs every running attempt below ForcedAttempts, whatever
	// its age (a test mode that makes repairs race real completions).
	Force bool
}

// ForcedAttempts caps forced repairs (RepairPolicy.Force): attempts from
// this one on are left to finish. Every repair that wins fails its attempt
// and the retry waits for a timer (whole seconds), so without a cap a
// step whose results keep losing the race, as they do on a loaded
// machine, would go on for dozens of attempts.
const ForcedAttempts = 5

// Repairs decides which repair events to send a running instance at time
// now. It is pure: the events go through the same read -> Apply -> CAS
// path as every other event, so a repair that races a real completion
// loses (its attempt is no longer running) and changes nothing. Message
// ids are deterministic, so several repair loops deciding the same repair
// publish it once (within the duplicate window) and apply it once.
func Repairs(def *Definition, inst *Instance, now time.Time, p RepairPolicy) []OutEvent {
	if inst == nil || inst.Status.Terminal() {
		return nil
	}
	var out []OutEvent
	names := make([]string, 0, len(inst.Steps))
	for n := range inst.Steps {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		st := inst.Steps[name]
		s, ok := def.index[name]
		if !ok || st.Status != StepRunning {
			continue
		}
		switch s.Kind {
		case KindTask:
			if st.Gate != "" {
				continue // waits for a slot or a rate start, not for a worker
			}
			stale := s.Timeout == 0 && p.StaleTask > 0 && now.Sub(st.AttemptStarted) > p.StaleTask
			forced := p.Force && st.Attempt < ForcedAttempts
			if !forced && !stale {
				continue
			}
			reason := "no result within " + p.StaleTask.String()
			if forced {
				reason = "forced repair"
			}
			out = append(out, OutEvent{
				Event: Event{Kind: EventRepair, Instance: inst.ID, Step: name, Attempt: st.Attempt, Reason: reason},
				MsgID: "repair/" + inst.ID + "/" + name + "/" + strconv.Itoa(st.Attempt),
			})
		case KindBulk:
			if st.Done+st.ChildFailed >= st.Cursor {
				continue
			}
			moved := bulkMoved(st)
			if r := reconcileRound(now.Sub(moved), p.StaleBulk); r > 0 {
				out = append(out, reconcileEvent(inst, name, moved, r))
			}
		case KindWorkflow:
			moved := bulkMoved(st)
			if r := reconcileRound(now.Sub(moved), p.StaleBulk); r > 0 {
				out = append(out, reconcileEvent(inst, name, moved, r))
			}
		}
	}
	out = append(out, gateRepairs(inst, now, p)...)
	timers := make([]string, 0, len(inst.Timers))
	for id := range inst.Timers {
		timers = append(timers, id)
	}
	sort.Strings(timers)
	for _, id := range timers {
		if at := inst.Timers[id]; p.TimerGrace > 0 && now.Sub(at) > p.TimerGrace {
			out = append(out, OutEvent{
				Event: Event{Kind: EventTimer, Instance: inst.ID, Timer: id},
				MsgID: "repair-timer/" + inst.ID + "/" + id,
			})
		}
	}
	return out
}

// NextRepair is the time after which Repairs may first find work for inst
// as it is: the earliest moment a running task attempt goes stale, a
// running bulk step with uncounted children has not moved for StaleBulk,
// or a pending timer is past its grace. It
// is zero when only a change of the instance could make a repair due (no
// rule applies, or the instance ended). Repairs(def, inst, now, p) is
// empty for every now that is not after it (p.Force aside, which repairs
// at once). The repair loop uses it to look at an instance again only
// when something can be due, instead of decoding every running instance
// on every sweep.
func NextRepair(def *Definition, inst *Instance, p RepairPolicy) time.Time {
	if inst == nil || inst.Status.Terminal() {
		return time.Time{}
	}
	var next time.Time
	consider := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for name, st := range inst.Steps {
		s, ok := def.index[name]
		if !ok || st.Status != StepRunning {
			continue
		}
		switch s.Kind {
		case KindTask:
			if s.Timeout == 0 && p.StaleTask > 0 && st.Gate == "" {
				consider(st.AttemptStarted.Add(p.StaleTask))
			}
		case KindBulk:
			if p.StaleBulk > 0 && st.Done+st.ChildFailed < st.Cursor {
				consider(roundStart(bulkMoved(st), 1, p.StaleBulk))
			}
		case KindWorkflow:
			if p.StaleBulk > 0 {
				consider(roundStart(bulkMoved(st), 1, p.StaleBulk))
			}
		}
	}
	for _, g := range gateWaits(inst) {
		if p.StaleGate > 0 {
			consider(g.since.Add(p.StaleGate))
		}
	}
	if p.TimerGrace > 0 {
		for _, at := range inst.Timers {
			consider(at.Add(p.TimerGrace))
		}
	}
	return next
}

// gateWait is one wait at a gate: the instance's (step "") or an
// attempt's, since when.
type gateWait struct {
	step    string
	attempt int
	since   time.Time
}

func gateWaits(inst *Instance) []gateWait {
	var out []gateWait
	if inst.Gate != "" {
		out = append(out, gateWait{since: inst.Created})
	}
	for _, name := range sortedKeys(inst.Steps) {
		st := inst.Steps[name]
		// An attempt held by a pause owes no op: the resume releases it
		// (PauseReleases).
		if st.Status == StepRunning && st.Gate != "" && st.Gate != GatePaused && !hasRateTimer(inst, name, st.Attempt) {
			out = append(out, gateWait{step: name, attempt: st.Attempt, since: st.GateSince})
		}
	}
	return out
}

// gateRepairs are the repairs of waits at a gate older than StaleGate: an
// EventRepair that changes nothing, so the dispatcher finds the event
// applied and republishes what the instance owes (its gate ops among
// it). One per StaleGate of waiting (round r in the message id).
func gateRepairs(inst *Instance, now time.Time, p RepairPolicy) []OutEvent {
	if p.StaleGate <= 0 {
		return nil
	}
	var out []OutEvent
	for _, g := range gateWaits(inst) {
		waited := now.Sub(g.since)
		if waited <= p.StaleGate {
			continue
		}
		r := int64(waited / p.StaleGate)
		h := Holder{Instance: inst.ID, Step: g.step, Attempt: g.attempt}
		out = append(out, OutEvent{
			Event: Event{Kind: EventRepair, Instance: inst.ID, Step: g.step, Attempt: g.attempt, Reason: "waiting at a gate"},
			MsgID: "repair-gate/" + h.String() + "/" + strconv.FormatInt(r, 10),
		})
	}
	return out
}
