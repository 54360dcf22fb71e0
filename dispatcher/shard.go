package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// maxConflicts is how many lost CAS rounds a group tolerates in one pass
// before its events are NAKed for a later retry.
const maxConflicts = 20

// defaultRecountInterval is Config.RecountInterval's default.
const defaultRecountInterval = 2 * time.Second

// recountDue reports whether a recount of the event's bulk step may run
// now.
func (s *shard) recountDue(ev workflow.Event, now time.Time) bool {
	last, ok := s.recounted[recountKey(ev)]
	return !ok || now.Sub(last) >= s.d.cfg.RecountInterval
}

// recountLater makes sure a recount of the step starts after now, for a
// redelivered completion whose barrier exists while recounts are
// throttled: the recount that throttles it may have started before that
// barrier was created, and then covers nothing. It schedules the recount
// durably (a message schedule delivers it to the instance's event
// subject), before the completion is acked; one schedule serves every
// completion that arrives until it fires.
func (s *shard) recountLater(ctx context.Context, ev workflow.Event, now time.Time) error {
	key := recountKey(ev)
	if at, ok := s.scheduled[key]; ok && at.After(now) {
		return nil
	}
	at := s.recounted[key].Add(s.d.cfg.RecountInterval)
	if at.Before(now) {
		at = now
	}
	at, err := s.d.client.ScheduleRecount(ctx, ev.Instance, ev.Step, at)
	if err != nil {
		return err
	}
	if len(s.scheduled) > 10000 {
		clear(s.scheduled)
	}
	s.scheduled[key] = at
	s.d.stats.recountsScheduled.Add(1)
	return nil
}

type cached struct {
	inst *workflow.Instance
	rev  uint64
}

// shard applies the events of the instances hashed to it, one instance at
// a time.
type shard struct {
	d     *Dispatcher
	in    chan *item
	cache map[string]*cached
	// recounted: when the last recount of each bulk step started.
	recounted map[string]time.Time
	// scheduled: when the scheduled recount of each bulk step fires
	// (recountLater).
	scheduled map[string]time.Time
	// owed: for an instance, the revision whose owed work
	// (workflow.Outstanding) this shard knows to have been published:
	// it published all of it, or committed that revision from one it
	// knew and published the difference. An event found already applied
	// to that very revision needs no republish. Cleared when the
	// connection was re-established (owedEpoch): a server that crashed
	// may have lost what it acknowledged.
	owed      map[string]uint64
	owedEpoch uint64
}

// maxOwed bounds the shard's owed map; it is cleared when full (an
// entry only saves a republish).
const maxOwed = 4096

// owedKnown reports whether the work owed by revision rev of id is known
// to be published.
func (s *shard) owedKnown(id string, rev uint64) bool {
	if e := s.d.client.Reconnects(); e != s.owedEpoch {
		clear(s.owed)
		s.owedEpoch = e
	}
	r, ok := s.owed[id]
	return ok && r == rev && rev != 0
}

// setOwed records that the work owed by revision rev of id is published.
func (s *shard) setOwed(id string, rev uint64) {
	if len(s.owed) >= maxOwed {
		clear(s.owed)
	}
	s.owed[id] = rev
}

func (s *shard) run(ctx context.Context) {
	for first := range s.in {
		batch := []*item{first}
		if s.d.cfg.BatchWait > 0 {
			time.Sleep(s.d.cfg.BatchWait)
		}
	drain:
		for len(batch) < s.d.cfg.BatchSize {
			select {
			case it, ok := <-s.in:
				if !ok {
					break drain
				}
				batch = append(batch, it)
			default:
				break drain
			}
		}
		// Group by instance, keeping arrival order within each.
		var order []string
		groups := map[string][]*item{}
		for _, it := range batch {
			if _, ok := groups[it.ev.Instance]; !ok {
				order = append(order, it.ev.Instance)
			}
			groups[it.ev.Instance] = append(groups[it.ev.Instance], it)
		}
		for _, id := range order {
			start := time.Now()
			s.process(ctx, id, groups[id])
			s.d.stats.applySeconds.Observe(sinceSeconds(start))
		}
	}
}

// process applies a group of events to one instance with read -> apply ->
// write data -> CAS -> publish -> settle.
// The pass is bounded by Config.PassTimeout.
func (s *shard) process(ctx context.Context, id string, items []*item) {
	d := s.d
	ctx, cancel := context.WithTimeout(ctx, d.cfg.PassTimeout)
	defer cancel()
	var traced *workflow.Instance // the instance as the pass left it (tracing)
	if d.tracer != nil {
		start := time.Now()
		defer func() { d.tracePass(id, traced, items, start) }()
	}
	settleAll := func(o outcome) {
		for _, it := range items {
			it.done(o)
		}
	}
	for round := 0; ; round++ {
		if round >= maxConflicts {
			settleAll(outcome{err: fmt.Errorf("instance %s: %d CAS conflicts in a row", id, round)})
			return
		}
		_, cached := s.cache[id]
		// A start for an instance this shard does not hold is almost
		// always for a new one: skip the read and let the Create decide
		// (ErrExists sends us back here to read).
		assumeNew := round == 0 && !cached && items[0].ev.Kind == workflow.EventStart
		var inst *workflow.Instance
		var rev uint64
		if !assumeNew {
			var err error
			if inst, rev, err = s.read(ctx, id); err != nil {
				settleAll(failure(err))
				return
			}
		}
		res, err := s.apply(ctx, inst, items)
		if err != nil {
			settleAll(outcome{err: err})
			return
		}
		traced = res.inst
		if (cached || assumeNew) && len(res.ignored) > 0 {
			// The cache is stale when another dispatcher replica wrote the
			// instance: ignore (and ack) an event only on the stored state.
			delete(s.cache, id)
			continue
		}
		if assumeNew && len(res.writes) > 0 {
			// Data keys are write-once and the first value stands: a
			// duplicate start must not write values the real instance
			// may want under the same keys later. Read first.
			continue
		}
		newRev := rev
		if res.changed {
			// Data first: the instance must never point at a value that
			// is not there.
			if len(res.writes) > 0 {
				if err := d.client.PutDataBatch(ctx, res.writes); err != nil {
					// A computed value over the payload limit can only
					// fail again: dead-letter the events (failure).
					settleAll(failure(err))
					return
				}
			}
			newRev, err = d.client.PutInstance(ctx, res.inst, rev, s.expires(ctx, res.inst))
			if err != nil {
				delete(s.cache, id)
				if errors.Is(err, workflow.ErrConflict) || errors.Is(err, workflow.ErrExists) {
					if !assumeNew {
						d.stats.conflicts.Add(1)
					}
					continue // another writer won: re-read and apply again
				}
				settleAll(outcome{err: err})
				return
			}
			d.stats.commits.Add(1)
			s.remember(res.inst, newRev)
			s.count(inst, res)
			if res.inst.Status.Terminal() {
				d.client.NotifyDone(res.inst)
			}
		}
		// Only now, with the state committed, is the work published.
		if err = s.publish(ctx, res.decided); err != nil {
			// A flow record that cannot be decoded (something other than
			// jetflow wrote it) fails every retry the same: dead-letter.
			if errors.Is(err, jetstream.ErrMalformed) {
				settleAll(failure(fmt.Errorf("publish after commit: %w", err)))
				return
			}
			settleAll(outcome{err: fmt.Errorf("publish after commit: %w", err)})
			return
		}
		if err := s.settleOwed(ctx, id, inst, rev, newRev, res); err != nil {
			settleAll(outcome{err: err})
			return
		}
		for _, ig := range res.ignored {
			s.ignored(ig.inst, ig.it, ig.why)
		}
		for i, it := range items {
			it.done(res.outcomes[i])
		}
		return
	}
}

// settleOwed makes sure what the instance owes is published, after a
// pass that committed revision newRev from rev (newRev == rev: the pass
// changed nothing) and published its own decision.
//
// An event found already applied to the stored instance (a duplicate
// start, a stale result or timer, a repeated notice whose barrier
// exists) may be the redelivery of a pass that committed and then died
// before it published: its work exists only in the instance. Delivery
// counts do not say so (after a crash of the process that embeds the
// server, acked messages come back with a delivery count of 1), so the
// state does: whenever a pass found an event already applied, it
// publishes again everything the instance owes (workflow.Outstanding: its
// running tasks, timers, last chunk of children, continuation and, once
// it ended, its parent's notice), unless this shard knows that revision's
// work to be published already. Message ids make copies of what was
// published harmless.
//
// A reconciliation's poke of a bulk child (workflow.ReconcileChild)
// answers from the child's state: an ended child sends its notice again
// whatever this shard knows (the parent found no barrier for it), a
// running one does nothing.
func (s *shard) settleOwed(ctx context.Context, id string, before *workflow.Instance, rev, newRev uint64, res *applied) error {
	d := s.d
	// known: the work owed by the revision this pass started from was
	// published, so with this pass's decision that of newRev is too.
	known := before == nil || s.owedKnown(id, rev)
	republish := res.foundApplied && !known && res.inst != nil
	if !republish && !res.notifyParent {
		if known {
			s.setOwed(id, newRev)
		} else {
			delete(s.owed, id)
		}
		return nil
	}
	def, err := d.definition(ctx, res.inst.Workflow, res.inst.Version)
	if err != nil {
		return err
	}
	out := workflow.Outstanding(def, res.inst)
	if !republish {
		// Only a poke's answer: the notice of an ended child.
		out = workflow.Decision{Events: out.Events}
	}
	if err := s.publish(ctx, out); err != nil {
		return fmt.Errorf("publish owed work: %w", err)
	}
	d.stats.republished.Add(uint64(len(out.Tasks) + len(out.Timers) + len(out.Children) + len(out.Events) + len(out.Gates)))
	if republish || known {
		s.setOwed(id, newRev)
	}
	return nil
}

// expires reports whether an instance's write may carry the instance
// retention TTL: only an ended instance, and never a run of a workflow
// with on_duplicate: rerun (a missing run 1 would restart the chain while
// later runs exist).
func (s *shard) expires(ctx context.Context, inst *workflow.Instance) bool {
	if !inst.Status.Terminal() || inst.Run > 1 {
		return false
	}
	def, err := s.d.definition(ctx, inst.Workflow, inst.Version)
	return err == nil && !def.Reruns()
}

func (s *shard) read(ctx context.Context, id string) (*workflow.Instance, uint64, error) {
	if c, ok := s.cache[id]; ok {
		return c.inst, c.rev, nil
	}
	inst, rev, err := s.d.client.GetInstance(ctx, id)
	if errors.Is(err, workflow.ErrNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	return inst, rev, nil
}

func (s *shard) remember(inst *workflow.Instance, rev uint64) {
	if inst.Status.Terminal() {
		delete(s.cache, inst.ID)
		return
	}
	if len(s.cache) >= s.d.cfg.CacheSize/len(s.d.shards)+1 {
		for k := range s.cache { // drop an arbitrary entry
			delete(s.cache, k)
			break
		}
	}
	s.cache[inst.ID] = &cached{inst: inst, rev: rev}
}

type applied struct {
	inst    *workflow.Instance
	changed bool
	// foundApplied: an event of the pass was already applied to the
	// stored instance (see settleOwed).
	foundApplied bool
	// notifyParent: a reconciliation poked this ended child; its notice
	// must go out again (workflow.ChildNotify).
	notifyParent bool
	writes       []workflow.Write
	decided      workflow.Decision // tasks, timers, children, events to publish
	outcomes     []outcome
	ignored      []ignoredEvent // counted and logged once, when settled
}

type ignoredEvent struct {
	inst *workflow.Instance
	it   *item
	why  string
}

// preBarriers creates, in one pipelined round, the barriers of the child
// completions in items that the instance as read would accept. A parent
// receives its children's completions in batches; one synchronous KV
// create per child, in the parent's shard, serialised a fan-out. apply
// then goes through the items one by one as before and creates the
// barriers that were not decided here (a completion the evolving state
// accepts but the state as read did not, or a create whose outcome is
// unknown). A barrier created here for a completion that an earlier item
// of the same batch made moot (the step or instance ended) is harmless:
// nothing counts that step's children any more.
func (s *shard) preBarriers(ctx context.Context, inst *workflow.Instance, items []*item, now time.Time, data workflow.Data) error {
	if inst == nil {
		return nil
	}
	var idx []int
	var keys []string
	var def *workflow.Definition
	for i, it := range items {
		ev := it.ev
		if ev.Kind != workflow.EventChildDone || it.barrier || it.barrierExists {
			continue
		}
		if def == nil {
			var err error
			if def, err = s.d.definition(ctx, inst.Workflow, inst.Version); err != nil {
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
		return nil // apply's own create is as good
	}
	created, errs := s.d.client.CreateBarriers(ctx, keys)
	for j, i := range idx {
		switch {
		case errs[j] != nil:
			// Unknown whether it landed: the whole group is retried, and
			// a redelivered completion whose barrier exists is recounted
			// from the barriers (as after a failed single create).
			return errs[j]
		case created[j]:
			items[i].barrier = true
			items[i].barrierEpoch = recountEpoch(inst, items[i].ev.Step)
		default:
			items[i].barrierExists = true
		}
	}
	return nil
}

// apply runs the transition function over the group's events in order.
func (s *shard) apply(ctx context.Context, inst *workflow.Instance, items []*item) (*applied, error) {
	d := s.d
	res := &applied{inst: inst, outcomes: make([]outcome, len(items))}
	now := d.cfg.Clock()
	data := d.client.DataView(ctx)
	for _, it := range items {
		it.barrierMark = 0 // barriers of earlier passes predate this one
	}
	if err := s.preBarriers(ctx, inst, items, now, data); err != nil {
		return nil, err
	}
	// recounts: how many recounts this pass applied so far. A recount
	// counts every barrier that exists when it runs, so it covers the
	// completions whose barriers were created before it, also those not
	// yet counted: they must not be counted again (see below).
	recounts := 0
	for i, it := range items {
		ev := it.ev
		var def *workflow.Definition
		var err error
		switch {
		case res.inst != nil:
			def, err = d.definition(ctx, res.inst.Workflow, res.inst.Version)
		case ev.Kind == workflow.EventStart:
			def, err = d.definition(ctx, ev.Workflow, ev.Version)
		case ev.Kind == workflow.EventCancel && ev.Parent != nil && ev.Workflow != "":
			// A parent cancels a child workflow whose start has not
			// arrived: it is created cancelled (workflow.Apply).
			if def = d.defs.latestOf(ev.Workflow); def == nil {
				def = d.latestFromStore(ctx, ev.Workflow)
			}
			if def == nil {
				res.outcomes[i] = outcome{reject: fmt.Sprintf("cancel of child %s of unknown workflow %s", ev.Instance, ev.Workflow), class: reasonUnknownWorkflow}
				continue
			}
		default:
			res.outcomes[i] = outcome{reject: fmt.Sprintf("%s event for unknown instance %s", ev.Kind, ev.Instance), class: reasonUnknownInstance}
			continue
		}
		if err != nil {
			if errors.Is(err, workflow.ErrNotFound) {
				res.outcomes[i] = outcome{reject: fmt.Sprintf("unknown workflow %s version %d", ev.Workflow, ev.Version), class: reasonUnknownWorkflow}
			} else {
				res.outcomes[i] = outcome{err: err}
			}
			continue
		}
		if ev.Kind == workflow.EventStart && res.inst == nil && it.input != nil {
			if err := d.client.PutDataEncoded(ctx, ev.InputRef, it.input, nil); err != nil {
				res.outcomes[i] = outcome{reject: fmt.Sprintf("cannot store input: %v", err), class: reasonPermanent}
				if !isPermanent(err) {
					res.outcomes[i] = outcome{err: err}
				}
				continue
			}
		}
		if ev.Kind == workflow.EventChildDone && res.inst != nil && it.barrier && bulkStep(def, ev.Step) {
			// This dispatcher created the barrier, and the increment is
			// not committed (a CAS retry, or a barrier created before this
			// pass or earlier in it). A recount since may have counted it.
			switch {
			case recounts > it.barrierMark:
				// A recount of this pass ran after the barrier existed.
				continue
			case recountEpoch(res.inst, ev.Step) != it.barrierEpoch:
				// A committed recount that may or may not have seen the
				// barrier: count again from the barriers, which now
				// include it, instead of adding one.
				if ev, _, err = s.recount(ctx, ev, now); err != nil {
					res.outcomes[i] = outcome{err: err}
					continue
				}
			}
		}
		if ev.Kind == workflow.EventChildDone && res.inst != nil && !it.barrier && bulkStep(def, ev.Step) {
			// A child's completion counts once: it must pass its
			// write-once barrier first — but only a completion the parent
			// would accept, or a premature or stale one would burn the
			// barrier of the real one. Apply is pure, so ask it first.
			probe, err := workflow.Apply(def, res.inst, ev, now, data)
			if err != nil {
				res.outcomes[i] = outcome{err: err}
				continue
			}
			if probe.Changed {
				created := false
				if !it.barrierExists {
					key := workflow.ChildBarrierKey(ev.Instance, ev.Step, ev.Index, ev.ChildStatus == workflow.StatusCompleted)
					if created, err = d.client.CreateBarrier(ctx, key); err != nil {
						res.outcomes[i] = outcome{err: err}
						continue
					}
				}
				if !created {
					// The barrier exists: this completion was counted, or
					// is being counted by the pass that created the
					// barrier, or that pass died between the barrier and
					// its commit. Which one, no delivery count can tell
					// (after a crash of the server the redelivery of an
					// applied notice says 1), so recount from the
					// barriers, now or, when a recount just ran, soon; a
					// recount never counts a barrier twice. The pass that
					// counted it may also have died before publishing
					// what it decided: settleOwed republishes.
					d.stats.duplicateChildren.Add(1)
					res.foundApplied = true
					if !s.recountDue(ev, now) {
						if err := s.recountLater(ctx, ev, now); err != nil {
							res.outcomes[i] = outcome{err: err}
						}
						continue
					}
					if ev, _, err = s.recount(ctx, ev, now); err != nil {
						res.outcomes[i] = outcome{err: err}
						continue
					}
				}
				if created {
					it.barrier = true
					it.barrierEpoch = recountEpoch(res.inst, ev.Step)
					it.barrierMark = recounts
				}
			}
		}
		var counted func(int) bool // the barriers, when this item recounted them
		if ev.Kind == workflow.EventRecount && ev.Completed < 0 && !bulkStep(def, ev.Step) {
			// A workflow step's one child has no barrier to count: its
			// reconciliation only pokes the child (UncountedChildren).
			counted = func(int) bool { return false }
		} else if ev.Kind == workflow.EventRecount && ev.Completed < 0 {
			if ev, counted, err = s.recount(ctx, ev, now); err != nil {
				res.outcomes[i] = outcome{err: err}
				continue
			}
		}
		ev.Paused = d.pauses.is(def.Name) // jetflow pause: attempts wait
		dec, err := workflow.Apply(def, res.inst, ev, now, data)
		if err != nil {
			res.outcomes[i] = failure(err)
			continue
		}
		if counted != nil && it.ev.Reason == workflow.ReasonStaleBulk && it.ev.Round != "" {
			// A reconciliation round (workflow.ReconcileParent): the
			// recount counted every barrier; poke every dispatched child
			// without one, and each answers from its own state.
			state := res.inst
			if dec.Changed {
				state = dec.Instance
			}
			if state != nil {
				pokes := workflow.UncountedChildren(def, state, ev.Step, it.ev.Round, counted)
				res.decided.Children = append(res.decided.Children, pokes...)
				d.stats.reconcilePokes.Add(uint64(len(pokes)))
			}
		}
		if ev.Kind == workflow.EventRecount && dec.Changed {
			recounts++
		}
		switch {
		case ev.Kind == workflow.EventRepair && dec.Changed:
			d.stats.repairsApplied.Add(1)
		case ev.Kind == workflow.EventRepair:
			d.stats.repairsLost.Add(1)
		case ev.Kind == workflow.EventTimer && dec.Changed:
			d.stats.timersFired.Add(1)
		case ev.Kind == workflow.EventSignal && dec.Changed:
			d.stats.signals.Add(1)
		}
		if !dec.Changed {
			res.ignored = append(res.ignored, ignoredEvent{res.inst, it, dec.Ignored})
			if it.reconcile != "" && ev.Kind == workflow.EventStart {
				// A poke: the child answers from its own state.
				if workflow.ReconcileChild(res.inst) == workflow.ChildNotify {
					res.notifyParent = true
				}
				continue
			}
			if res.inst != nil && !otherTrigger(res.inst, ev) {
				res.foundApplied = true
			}
			continue
		}
		res.inst = dec.Instance
		res.changed = true
		res.writes = append(res.writes, dec.Writes...)
		res.decided.Tasks = append(res.decided.Tasks, dec.Tasks...)
		res.decided.Timers = append(res.decided.Timers, dec.Timers...)
		res.decided.Children = append(res.decided.Children, dec.Children...)
		res.decided.Events = append(res.decided.Events, dec.Events...)
		res.decided.Gates = append(res.decided.Gates, dec.Gates...)
	}
	if res.inst != nil && res.inst.Status.Terminal() {
		// Work decided earlier in the group is moot once the instance is
		// over; only the notice to a parent remains.
		res.decided.Tasks, res.decided.Timers, res.decided.Children = nil, nil, nil
		var keep []workflow.OutEvent
		for _, e := range res.decided.Events {
			if e.Event.Kind == workflow.EventChildDone || e.Event.Kind == workflow.EventCancel {
				keep = append(keep, e)
			}
		}
		res.decided.Events = keep
		var releases []workflow.GateOp
		for _, g := range res.decided.Gates {
			if g.Kind == workflow.OpRelease {
				releases = append(releases, g)
			}
		}
		res.decided.Gates = releases
	}
	return res, nil
}

// otherTrigger reports a start that is not the message that started inst
// (another trigger stream sequence): a duplicate trigger. Only the
// redelivery of the message that started an instance can find it without
// the work its start decided (the pass died before publishing, or a
// crashed server lost the ack); that message's own redelivery republishes
// it. A duplicate from elsewhere republishes nothing: after a server
// restart the task stream forgets the ids of tasks workers acked, and a
// republished task whose result is still on its way would run twice.
func otherTrigger(inst *workflow.Instance, ev workflow.Event) bool {
	return ev.Kind == workflow.EventStart && inst.TriggerSeq != 0 && ev.TriggerSeq != 0 && ev.TriggerSeq != inst.TriggerSeq
}

// recountEpoch is how many recounts changed a bulk step's counts
// (StepState.Recounts); 0 for a missing instance or step.
func recountEpoch(inst *workflow.Instance, step string) int {
	if inst == nil || inst.Steps[step] == nil {
		return 0
	}
	return inst.Steps[step].Recounts
}

// recount turns a child completion or a recount request into a recount
// of the step's barriers; counted reports the indexes that have one.
func (s *shard) recount(ctx context.Context, ev workflow.Event, now time.Time) (_ workflow.Event, counted func(int) bool, _ error) {
	if len(s.recounted) > 10000 {
		clear(s.recounted)
	}
	s.recounted[recountKey(ev)] = now
	ok, failed, err := s.d.client.BarrierIndexes(ctx, ev.Instance, ev.Step)
	if err != nil {
		return ev, nil, err
	}
	s.d.stats.recounts.Add(1)
	counted = func(i int) bool { return ok[i] || failed[i] }
	return workflow.Event{Kind: workflow.EventRecount, Instance: ev.Instance, Step: ev.Step, Completed: len(ok), Failed: len(failed)}, counted, nil
}

// recountKey names a bulk step in the shard's recount bookkeeping.
func recountKey(ev workflow.Event) string { return ev.Instance + "/" + ev.Step }

// isPermanent reports an error that retrying the event can only repeat:
// a value too large to store, or a stored value (an instance, an input
// or output) that cannot be decoded, because something other than
// jetflow wrote it or it was corrupted.
func isPermanent(err error) bool {
	return errors.Is(err, jetstream.ErrTooLarge) || errors.Is(err, jetstream.ErrMalformed)
}

// failure is the outcome of an event whose pass failed with err: a
// permanent error dead-letters the event with err as the reason (the
// instance stays as it is, wedged on that value, for an operator); any
// other is retried.
func failure(err error) outcome {
	if isPermanent(err) {
		return outcome{reject: err.Error(), class: reasonPermanent}
	}
	return outcome{err: err}
}

func (s *shard) ignored(inst *workflow.Instance, it *item, why string) {
	d := s.d
	ev := it.ev
	log := d.log.Debug()
	if ev.Kind == workflow.EventStart && inst != nil {
		d.stats.duplicateTriggers.Add(1)
		log = d.log.Info()
		if ev.InputDigest != "" && inst.InputDigest != "" && ev.InputDigest != inst.InputDigest {
			d.stats.duplicateDiffer.Add(1)
			log = d.log.Warn().Str("first_digest", inst.InputDigest).Str("duplicate_digest", ev.InputDigest)
			why = "duplicate trigger with a different payload; the first one wins"
		}
		log.Str("instance_id", ev.Instance).Str("event_key", ev.EventKey).Msg(why)
		return
	}
	d.stats.staleEvents.Add(1)
	log.Str("instance_id", ev.Instance).Str("kind", string(ev.Kind)).Str("step", ev.Step).Int("attempt", ev.Attempt).Msg(why)
}

func (s *shard) count(before *workflow.Instance, res *applied) {
	d := s.d
	d.stats.finishedSteps(before, res.inst)
	d.traceCommit(before, res.inst)
	if before == nil {
		d.stats.started.WithLabelValues(res.inst.Workflow).Inc()
		d.log.Debug().Str("instance_id", res.inst.ID).Str("workflow", res.inst.Workflow).Msg("instance started")
		if res.inst.Run > 1 {
			// Counted here, where the run's create committed: exactly once.
			d.stats.reruns.WithLabelValues(res.inst.Workflow).Inc()
			d.log.Info().Str("instance_id", res.inst.ID).Str("workflow", res.inst.Workflow).Str("event_key", res.inst.EventKey).
				Int("run", res.inst.Run).Uint64("trigger_seq", res.inst.TriggerSeq).
				Str("previous_run", workflow.RunID(workflow.InstanceID(res.inst.Workflow, res.inst.EventKey), res.inst.Run-1)).
				Msg("rerun started: a duplicate trigger arrived after the latest run ended")
		}
	}
	if res.inst.Status.Terminal() && (before == nil || !before.Status.Terminal()) {
		d.stats.finished.WithLabelValues(res.inst.Workflow, string(res.inst.Status)).Inc()
		d.stats.observeDuration(res.inst)
		d.log.Debug().Str("instance_id", res.inst.ID).Str("status", string(res.inst.Status)).Str("error", res.inst.Error).Msg("instance finished")
	}
}

// publish carries out what a committed decision asks for.
func (s *shard) publish(ctx context.Context, dec workflow.Decision) error {
	c := s.d.client
	if len(dec.Tasks) > 0 {
		tokens := s.d.cfg.TaskTokens
		now := s.d.cfg.Clock()
		for i := range dec.Tasks {
			t := &dec.Tasks[i]
			if raw, ok := c.InlineData(t.InputRef); ok {
				t.Input = raw
			}
			if tokens != nil {
				t.Token = tokens.Sign(t.Instance, t.Step, t.Attempt, now)
			}
		}
		if err := c.PublishTasks(ctx, dec.Tasks); err != nil {
			return err
		}
		for _, t := range dec.Tasks {
			s.d.stats.tasksPublished.WithLabelValues(t.Type).Inc()
		}
	}
	if len(dec.Timers) > 0 {
		if err := c.ScheduleTimers(ctx, dec.Timers); err != nil {
			return err
		}
		s.d.stats.timersScheduled.Add(uint64(len(dec.Timers)))
	}
	if len(dec.Children) > 0 {
		if err := c.PublishChildren(ctx, dec.Children); err != nil {
			return err
		}
		s.d.stats.childrenStarted.Add(uint64(len(dec.Children)))
	}
	if len(dec.Events) > 0 {
		if err := c.PublishEvents(ctx, dec.Events); err != nil {
			return err
		}
	}
	if len(dec.Gates) > 0 {
		if err := s.d.runGates(ctx, dec.Gates); err != nil {
			return err
		}
	}
	return nil
}

// bulkStep reports whether a step of def is a bulk step: only its
// children's completions pass barriers and recounts (a workflow step's
// single child needs neither).
func bulkStep(def *workflow.Definition, step string) bool {
	s, ok := def.Step(step)
	return ok && s.Kind == workflow.KindBulk
}
