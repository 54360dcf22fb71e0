package dispatcher

import (
	"sync/atomic"

	"github.com/rs/zerolog"
)

// Stats are the dispatcher's counters since it started.
type Stats struct {
	Triggers          uint64 `json:"triggers"`           // trigger messages received
	Events            uint64 `json:"events"`             // event messages received
	Started           uint64 `json:"started"`            // instances created
	Completed         uint64 `json:"completed"`          // instances that reached completed
	Failed            uint64 `json:"failed"`             // instances that reached failed
	Cancelled         uint64 `json:"cancelled"`          // instances that reached cancelled
	DuplicateTriggers uint64 `json:"duplicate_triggers"` // starts for an existing instance (KV guard)
	DuplicateDiffer   uint64 `json:"duplicate_differ"`   // ...whose payload differed from the first
	Reruns            uint64 `json:"reruns"`             // new runs started by on_duplicate: rerun (also in Started)
	StaleEvents       uint64 `json:"stale_events"`       // results/timers that changed nothing
	Conflicts         uint64 `json:"conflicts"`          // CAS attempts lost to another writer
	Commits           uint64 `json:"commits"`            // successful instance writes
	TasksPublished    uint64 `json:"tasks_published"`
	TimersScheduled   uint64 `json:"timers_scheduled"`
	Republished       uint64 `json:"republished"` // owed work published again after an event was found already applied
	Retried           uint64 `json:"retried"`     // events NAKed for a later retry
	DeadLettered      uint64 `json:"dead_lettered"`
	ChildrenStarted   uint64 `json:"children_started"`   // bulk children published
	DuplicateChildren uint64 `json:"duplicate_children"` // child completions stopped by their barrier
	Recounts          uint64 `json:"recounts"`           // bulk counts rebuilt from barriers
	RecountsScheduled uint64 `json:"recounts_scheduled"` // recounts deferred while throttled (a message schedule)
	ReconcilePokes    uint64 `json:"reconcile_pokes"`    // children without a barrier poked by a stale bulk step's reconciliation
	RepairsSent       uint64 `json:"repairs_sent"`       // repair events published by the repair loop
	RepairsApplied    uint64 `json:"repairs_applied"`    // repairs that changed an instance
	RepairsLost       uint64 `json:"repairs_lost"`       // repairs that lost their race (the work had finished)
	TimersFired       uint64 `json:"timers_fired"`       // timer events that changed an instance
	Signals           uint64 `json:"signals"`            // signals applied
	PullStalls        uint64 `json:"pull_stalls"`        // pulls from NATS presumed lost (no heartbeat) and replaced
}

type counters struct {
	triggers, events, started, completed, failed, cancelled        atomic.Uint64
	duplicateTriggers, duplicateDiffer, staleEvents, conflicts     atomic.Uint64
	commits, tasksPublished, timersScheduled, republished, retried atomic.Uint64
	deadLettered, childrenStarted, duplicateChildren, recounts     atomic.Uint64
	repairsSent, repairsApplied, repairsLost, timersFired, signals atomic.Uint64
	reruns, recountsScheduled, reconcilePokes                      atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Triggers: c.triggers.Load(), Events: c.events.Load(), Started: c.started.Load(),
		Completed: c.completed.Load(), Failed: c.failed.Load(), Cancelled: c.cancelled.Load(),
		DuplicateTriggers: c.duplicateTriggers.Load(), DuplicateDiffer: c.duplicateDiffer.Load(), Reruns: c.reruns.Load(),
		StaleEvents: c.staleEvents.Load(), Conflicts: c.conflicts.Load(), Commits: c.commits.Load(),
		TasksPublished: c.tasksPublished.Load(), TimersScheduled: c.timersScheduled.Load(),
		Republished: c.republished.Load(), Retried: c.retried.Load(), DeadLettered: c.deadLettered.Load(),
		ChildrenStarted: c.childrenStarted.Load(), DuplicateChildren: c.duplicateChildren.Load(), Recounts: c.recounts.Load(),
		RecountsScheduled: c.recountsScheduled.Load(), ReconcilePokes: c.reconcilePokes.Load(),
		RepairsSent: c.repairsSent.Load(), RepairsApplied: c.repairsApplied.Load(), RepairsLost: c.repairsLost.Load(),
		TimersFired: c.timersFired.Load(), Signals: c.signals.Load(),
	}
}

// MarshalZerologObject logs the counters as one object.
func (s Stats) MarshalZerologObject(e *zerolog.Event) {
	e.Uint64("triggers", s.Triggers).Uint64("events", s.Events).Uint64("started", s.Started).
		Uint64("completed", s.Completed).Uint64("failed", s.Failed).Uint64("cancelled", s.Cancelled).
		Uint64("duplicate_triggers", s.DuplicateTriggers).Uint64("duplicate_differ", s.DuplicateDiffer).Uint64("reruns", s.Reruns).
		Uint64("stale_events", s.StaleEvents).Uint64("conflicts", s.Conflicts).Uint64("commits", s.Commits).
		Uint64("tasks_published", s.TasksPublished).Uint64("timers_scheduled", s.TimersScheduled).
		Uint64("republished", s.Republished).Uint64("retried", s.Retried).Uint64("dead_lettered", s.DeadLettered).
		Uint64("children_started", s.ChildrenStarted).Uint64("duplicate_children", s.DuplicateChildren).Uint64("recounts", s.Recounts).
		Uint64("recounts_scheduled", s.RecountsScheduled).Uint64("reconcile_pokes", s.ReconcilePokes).
		Uint64("repairs_sent", s.RepairsSent).Uint64("repairs_applied", s.RepairsApplied).Uint64("repairs_lost", s.RepairsLost).
		Uint64("timers_fired", s.TimersFired).Uint64("signals", s.Signals).Uint64("pull_stalls", s.PullStalls)
}
