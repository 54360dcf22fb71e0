package dispatcher

import (
	"context"
	"time"

	"github.com/jetflow/jetflow/workflow"
)

// The bulk completion protocol: how a bulk step counts each child's
// completion exactly once, whatever is redelivered, retried or lost.
//
//   - Barrier: a child's completion counts only behind its write-once
//     barrier key (workflow.ChildBarrierKey, "<parent>.<step>.ok.<i>" or
//     ".fail.<i>"); the pass that creates it adds one to the step's counts
//     in the same CAS as the rest of its events. Only a completion the
//     parent would accept creates a barrier (Apply is pure, so it is asked
//     first): a premature or stale one must not burn the real one's.
//   - Recount: a completion whose barrier already exists was counted, or
//     is being counted by the pass that created it, or that pass died
//     between the barrier and its commit; no delivery count tells which
//     (after a crash of the server a redelivery says 1). So the step's
//     counts are rebuilt from the barriers that exist (an EventRecount
//     with the totals); a recount never counts a barrier twice.
//     StepState.Recounts (the epoch) counts the recounts that changed the
//     counts, so a pass whose barrier predates a committed recount counts
//     again from the barriers instead of adding one.
//   - Throttle: recounts of a step run at most every RecountInterval; a
//     completion arriving meanwhile schedules one durably (a message
//     schedule to the instance's event subject) before it is acked.
//   - Batches: a parent receives its children's completions in batches;
//     their barriers are created in one pipelined round (pre) and the rest
//     one by one as the evolving state accepts them (admit).
//
// A barriers is owned by one shard; its maps are not shared.
type barriers struct {
	d *Dispatcher
	// recounted: when the last recount of each bulk step started.
	recounted map[string]time.Time
	// scheduled: when the scheduled recount of each bulk step fires
	// (later).
	scheduled map[string]time.Time
}

// defaultRecountInterval is Config.RecountInterval's default.
const defaultRecountInterval = 2 * time.Second

// maxRecountKeys bounds the bookkeeping maps; they are cleared when full
// (an entry only throttles).
const maxRecountKeys = 10000

func newBarriers(d *Dispatcher) *barriers {
	return &barriers{d: d, recounted: map[string]time.Time{}, scheduled: map[string]time.Time{}}
}

// barrierState is what one item learned of its child barrier in this
// dispatcher, kept across the CAS retries of its pass.
type barrierState struct {
	// created is set once this item's barrier was created by this
	// dispatcher, so a CAS retry still counts it.
	created bool
	// exists is set when a batched create (barriers.pre) found this
	// item's barrier already there.
	exists bool
	// epoch is the step's Recounts in the state the barrier was created
	// against; mark how many recounts the current pass had applied when
	// it was created (0 when it was created before the pass).
	epoch, mark int
}

// bulkStep reports whether a step of def is a bulk step: only its
// children's completions pass barriers and recounts (a workflow step's
// single child needs neither).
func bulkStep(def *workflow.Definition, step string) bool {
	s, ok := def.Step(step)
	return ok && s.Kind == workflow.KindBulk
}

// recountKey names a bulk step in the bookkeeping.
func recountKey(ev workflow.Event) string { return ev.Instance + "/" + ev.Step }

// recountEpoch is how many recounts changed a bulk step's counts
// (StepState.Recounts); 0 for a missing instance or step.
func recountEpoch(inst *workflow.Instance, step string) int {
	if inst == nil || inst.Steps[step] == nil {
		return 0
	}
	return inst.Steps[step].Recounts
}

// due reports whether a recount of the event's bulk step may run now.
func (b *barriers) due(ev workflow.Event, now time.Time) bool {
	last, ok := b.recounted[recountKey(ev)]
	return !ok || now.Sub(last) >= b.d.cfg.RecountInterval
}

// later makes sure a recount of the step starts after now, for a
// redelivered completion whose barrier exists while recounts are
// throttled: the recount that throttles it may have started before that
// barrier was created, and then covers nothing. It schedules the recount
// durably (a message schedule delivers it to the instance's event
// subject), before the completion is acked; one schedule serves every
// completion that arrives until it fires.
func (b *barriers) later(ctx context.Context, ev workflow.Event, now time.Time) error {
	key := recountKey(ev)
	if at, ok := b.scheduled[key]; ok && at.After(now) {
		return nil
	}
	at := b.recounted[key].Add(b.d.cfg.RecountInterval)
	if at.Before(now) {
		at = now
	}
	at, err := b.d.client.ScheduleRecount(ctx, ev.Instance, ev.Step, at)
	if err != nil {
		return err
	}
	if len(b.scheduled) > maxRecountKeys {
		clear(b.scheduled)
	}
	b.scheduled[key] = at
	b.d.stats.recountsScheduled.Add(1)
	return nil
}

// recount turns a child completion or a recount request into a recount
// of the step's barriers; counted reports the indexes that have one.
func (b *barriers) recount(ctx context.Context, ev workflow.Event, now time.Time) (_ workflow.Event, counted func(int) bool, _ error) {
	if len(b.recounted) > maxRecountKeys {
		clear(b.recounted)
	}
	b.recounted[recountKey(ev)] = now
	ok, failed, err := b.d.client.BarrierIndexes(ctx, ev.Instance, ev.Step)
	if err != nil {
		return ev, nil, err
	}
	b.d.stats.recounts.Add(1)
	counted = func(i int) bool { return ok[i] || failed[i] }
	return workflow.Event{Kind: workflow.EventRecount, Instance: ev.Instance, Step: ev.Step, Completed: len(ok), Failed: len(failed)}, counted, nil
}

// pre creates, in one pipelined round, the barriers of the child
// completions in items that the instance as read would accept. One
// synchronous KV create per child, in the parent's shard, serialised a
// fan-out. admit then goes through the items one by one and creates the
// barriers that were not decided here (a completion the evolving state
// accepts but the state as read did not, or a create whose outcome is
// unknown). A barrier created here for a completion that an earlier item
// of the same batch made moot (the step or instance ended) is harmless:
// nothing counts that step's children any more.
func (b *barriers) pre(ctx context.Context, inst *workflow.Instance, items []*item, now time.Time, data workflow.Data) error {
	if inst == nil {
		return nil
	}
	var idx []int
	var keys []string
	var def *workflow.Definition
	for i, it := range items {
		ev := it.ev
		if ev.Kind != workflow.EventChildDone || it.bar.created || it.bar.exists {
			continue
		}
		if def == nil {
			var err error
			if def, err = b.d.definition(ctx, inst.Workflow, inst.Version); err != nil {
				return nil // apply reports it
			}
		}
		if !bulkStep(def, ev.Step) {
			continue
		}
		probe, err := workflow.Apply(def, inst, ev, now, data)
		if err != nil || !probe.Changed {
			continue
		}
		idx = append(idx, i)
		keys = append(keys, workflow.ChildBarrierKey(ev.Instance, ev.Step, ev.Index, ev.ChildStatus == workflow.StatusCompleted))
	}
	if len(keys) < 2 {
		return nil // admit's own create is as good
	}
	created, errs := b.d.client.CreateBarriers(ctx, keys)
	for j, i := range idx {
		switch {
		case errs[j] != nil:
			// Unknown whether it landed: the whole group is retried, and
			// a redelivered completion whose barrier exists is recounted
			// from the barriers (as after a failed single create).
			return errs[j]
		case created[j]:
			items[i].bar.created = true
			items[i].bar.epoch = recountEpoch(inst, items[i].ev.Step)
		default:
			items[i].bar.exists = true
		}
	}
	return nil
}

// admitted is what admit decided for one child completion.
type admitted struct {
	// ev is the event to apply: the completion, or a recount that
	// replaces it.
	ev workflow.Event
	// skip: apply nothing for this item (it is covered by a recount, or
	// one is scheduled); its message is acked.
	skip bool
	// duplicate: its barrier existed, so it was counted or is being
	// counted by another pass (see settleOwed).
	duplicate bool
}

// admit passes a bulk child's completion, about to be applied to inst in
// a pass that applied recounts recounts so far, through its barrier:
// the completion itself when this pass may count it, a recount when
// whether it was counted cannot be known, or nothing. Any other event is
// returned as it is.
func (b *barriers) admit(ctx context.Context, def *workflow.Definition, inst *workflow.Instance, it *item, recounts int, now time.Time, data workflow.Data) (admitted, error) {
	ev := it.ev
	if ev.Kind != workflow.EventChildDone || inst == nil || !bulkStep(def, ev.Step) {
		return admitted{ev: ev}, nil
	}
	if it.bar.created {
		// This dispatcher created the barrier, and the increment is not
		// committed (a CAS retry, or a barrier created before this pass
		// or earlier in it). A recount since may have counted it.
		switch {
		case recounts > it.bar.mark:
			// A recount of this pass ran after the barrier existed.
			return admitted{ev: ev, skip: true}, nil
		case recountEpoch(inst, ev.Step) != it.bar.epoch:
			// A committed recount that may or may not have seen the
			// barrier: count again from the barriers, which now include
			// it, instead of adding one.
			rc, _, err := b.recount(ctx, ev, now)
			return admitted{ev: rc}, err
		}
		return admitted{ev: ev}, nil
	}
	// A child's completion counts once: it must pass its write-once
	// barrier first — but only a completion the parent would accept, or a
	// premature or stale one would burn the barrier of the real one.
	// Apply is pure, so ask it first.
	probe, err := workflow.Apply(def, inst, ev, now, data)
	if err != nil || !probe.Changed {
		return admitted{ev: ev}, err
	}
	created := false
	if !it.bar.exists {
		key := workflow.ChildBarrierKey(ev.Instance, ev.Step, ev.Index, ev.ChildStatus == workflow.StatusCompleted)
		if created, err = b.d.client.CreateBarrier(ctx, key); err != nil {
			return admitted{ev: ev}, err
		}
	}
	if created {
		it.bar = barrierState{created: true, epoch: recountEpoch(inst, ev.Step), mark: recounts}
		return admitted{ev: ev}, nil
	}
	// The barrier exists: this completion was counted, or is being
	// counted by the pass that created the barrier, or that pass died
	// between the barrier and its commit. Recount from the barriers, now
	// or, when a recount just ran, soon. The pass that counted it may
	// also have died before publishing what it decided: settleOwed
	// republishes.
	b.d.stats.duplicateChildren.Add(1)
	if !b.due(ev, now) {
		return admitted{ev: ev, skip: true, duplicate: true}, b.later(ctx, ev, now)
	}
	rc, _, err := b.recount(ctx, ev, now)
	return admitted{ev: rc, duplicate: true}, err
}

// recountRequest turns a recount request (a reconciliation round or a
// scheduled recount: EventRecount without totals) into a recount of the
// step's barriers; counted reports the children that have one. A
// workflow step's one child has no barrier to count: its reconciliation
// only pokes the child (UncountedChildren). Any other event is returned
// as it is, with counted nil.
func (b *barriers) recountRequest(ctx context.Context, def *workflow.Definition, ev workflow.Event, now time.Time) (_ workflow.Event, counted func(int) bool, _ error) {
	if ev.Kind != workflow.EventRecount || ev.Completed >= 0 {
		return ev, nil, nil
	}
	if !bulkStep(def, ev.Step) {
		return ev, func(int) bool { return false }, nil
	}
	return b.recount(ctx, ev, now)
}
