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
	// bar counts bulk children's completions (barriers.go).
	bar *barriers
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
		newRev, again, o := s.commit(ctx, inst, rev, res, assumeNew)
		if again {
			continue // another writer won: re-read and apply again
		}
		if o != nil {
			settleAll(*o)
			return
		}
		// Only now, with the state committed, is the work published.
		if err = s.publish(ctx, res.decided); err != nil {
			// A flow record that cannot be decoded (something other than
			// jetflow wrote it) fails every retry the same: failure
			// dead-letters it; anything else is retried.
			settleAll(failure(fmt.Errorf("publish after commit: %w", err)))
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

// commit writes what a pass decided: its data values first (the
// instance must never point at a value that is not there), then the
// instance with a CAS on rev (a Create for a new one). again reports a
// lost CAS (or a start that found its instance created meanwhile): the
// pass starts over from a fresh read. A non-nil outcome ends the pass
// with it. A pass that changed nothing writes nothing and keeps rev.
func (s *shard) commit(ctx context.Context, before *workflow.Instance, rev uint64, res *applied, assumeNew bool) (newRev uint64, again bool, _ *outcome) {
	d := s.d
	if !res.changed {
		return rev, false, nil
	}
	if len(res.writes) > 0 {
		if err := d.client.PutDataBatch(ctx, res.writes); err != nil {
			// A computed value over the payload limit can only fail
			// again: dead-letter the events (failure).
			o := failure(err)
			return 0, false, &o
		}
	}
	newRev, err := d.client.PutInstance(ctx, res.inst, rev, s.expires(ctx, res.inst))
	if err != nil {
		delete(s.cache, res.inst.ID)
		if errors.Is(err, workflow.ErrConflict) || errors.Is(err, workflow.ErrExists) {
			if !assumeNew {
				d.stats.conflicts.Add(1)
			}
			return 0, true, nil
		}
		return 0, false, &outcome{err: err}
	}
	d.stats.commits.Add(1)
	s.remember(res.inst, newRev)
	s.count(before, res)
	if res.inst.Status.Terminal() {
		d.client.NotifyDone(res.inst)
	}
	return newRev, false, nil
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

// apply runs the transition function over the group's events in order.
func (s *shard) apply(ctx context.Context, inst *workflow.Instance, items []*item) (*applied, error) {
	d := s.d
	res := &applied{inst: inst, outcomes: make([]outcome, len(items))}
	now := d.cfg.Clock()
	data := d.client.DataView(ctx)
	for _, it := range items {
		it.bar.mark = 0 // barriers of earlier passes predate this one
	}
	if err := s.bar.pre(ctx, inst, items, now, data); err != nil {
		return nil, err
	}
	// recounts: how many recounts this pass applied so far. A recount
	// counts every barrier that exists when it runs, so it covers the
	// completions whose barriers were created before it, also those not
	// yet counted: they must not be counted again (barriers.admit).
	recounts := 0
	for i, it := range items {
		def, o := s.definitionFor(ctx, res.inst, it.ev)
		if def == nil {
			res.outcomes[i] = o
			continue
		}
		if o, ok := s.storeInput(ctx, res.inst, it); !ok {
			res.outcomes[i] = o
			continue
		}
		adm, err := s.bar.admit(ctx, def, res.inst, it, recounts, now, data)
		if adm.duplicate {
			res.foundApplied = true
		}
		if err != nil {
			res.outcomes[i] = outcome{err: err}
			continue
		}
		if adm.skip {
			continue
		}
		ev, counted, err := s.bar.recountRequest(ctx, def, adm.ev, now)
		if err != nil {
			res.outcomes[i] = outcome{err: err}
			continue
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
			s.poke(res, def, dec, ev.Step, it.ev.Round, counted)
		}
		if ev.Kind == workflow.EventRecount && dec.Changed {
			recounts++
		}
		s.account(ev, dec)
		if !dec.Changed {
			res.unchanged(it, ev, dec.Ignored)
			continue
		}
		res.add(dec)
	}
	if res.inst != nil && res.inst.Status.Terminal() {
		res.ended()
	}
	return res, nil
}

// definitionFor returns the definition an event applies under: its
// instance's, or for an event without one, the definition a start names,
// or that of the child workflow a parent's cancel creates cancelled (the
// start has not arrived; workflow.Apply). Without one, the outcome says
// why (a reject or a retry).
func (s *shard) definitionFor(ctx context.Context, inst *workflow.Instance, ev workflow.Event) (*workflow.Definition, outcome) {
	d := s.d
	var def *workflow.Definition
	var err error
	switch {
	case inst != nil:
		def, err = d.definition(ctx, inst.Workflow, inst.Version)
	case ev.Kind == workflow.EventStart:
		def, err = d.definition(ctx, ev.Workflow, ev.Version)
	case ev.Kind == workflow.EventCancel && ev.Parent != nil && ev.Workflow != "":
		if def = d.latestDefinition(ctx, ev.Workflow); def == nil {
			return nil, outcome{reject: fmt.Sprintf("cancel of child %s of unknown workflow %s", ev.Instance, ev.Workflow), class: reasonUnknownWorkflow}
		}
	default:
		return nil, outcome{reject: fmt.Sprintf("%s event for unknown instance %s", ev.Kind, ev.Instance), class: reasonUnknownInstance}
	}
	if errors.Is(err, workflow.ErrNotFound) {
		return nil, outcome{reject: fmt.Sprintf("unknown workflow %s version %d", ev.Workflow, ev.Version), class: reasonUnknownWorkflow}
	}
	if err != nil {
		return nil, outcome{err: err}
	}
	return def, outcome{}
}

// storeInput writes the input of a start that creates its instance to
// the data bucket, before the instance that points at it exists. ok is
// false when it could not: the outcome says whether to retry.
func (s *shard) storeInput(ctx context.Context, inst *workflow.Instance, it *item) (_ outcome, ok bool) {
	ev := it.ev
	if ev.Kind != workflow.EventStart || inst != nil || it.input == nil {
		return outcome{}, true
	}
	if err := s.d.client.PutDataEncoded(ctx, ev.InputRef, it.input, nil); err != nil {
		if !isPermanent(err) {
			return outcome{err: err}, false
		}
		return outcome{reject: fmt.Sprintf("cannot store input: %v", err), class: reasonPermanent}, false
	}
	return outcome{}, true
}

// poke adds to the pass the pokes of a reconciliation round: every
// dispatched child of the bulk step without a barrier (counted).
func (s *shard) poke(res *applied, def *workflow.Definition, dec workflow.Decision, step, round string, counted func(int) bool) {
	state := res.inst
	if dec.Changed {
		state = dec.Instance
	}
	if state == nil {
		return
	}
	pokes := workflow.UncountedChildren(def, state, step, round, counted)
	res.decided.Children = append(res.decided.Children, pokes...)
	s.d.stats.reconcilePokes.Add(uint64(len(pokes)))
}

// account counts the applied events the metrics name by kind.
func (s *shard) account(ev workflow.Event, dec workflow.Decision) {
	st := s.d.stats
	switch {
	case ev.Kind == workflow.EventRepair && dec.Changed:
		st.repairsApplied.Add(1)
	case ev.Kind == workflow.EventRepair:
		st.repairsLost.Add(1)
	case ev.Kind == workflow.EventTimer && dec.Changed:
		st.timersFired.Add(1)
	case ev.Kind == workflow.EventSignal && dec.Changed:
		st.signals.Add(1)
	}
}

// unchanged records an event of the pass that changed nothing (why).
func (res *applied) unchanged(it *item, ev workflow.Event, why string) {
	res.ignored = append(res.ignored, ignoredEvent{res.inst, it, why})
	if it.reconcile != "" && ev.Kind == workflow.EventStart {
		// A poke: the child answers from its own state.
		if workflow.ReconcileChild(res.inst) == workflow.ChildNotify {
			res.notifyParent = true
		}
		return
	}
	if res.inst != nil && !otherTrigger(res.inst, ev) {
		res.foundApplied = true
	}
}

// add folds a decision that changed the instance into the pass.
func (res *applied) add(dec workflow.Decision) {
	res.inst = dec.Instance
	res.changed = true
	res.writes = append(res.writes, dec.Writes...)
	res.decided.Tasks = append(res.decided.Tasks, dec.Tasks...)
	res.decided.Timers = append(res.decided.Timers, dec.Timers...)
	res.decided.Children = append(res.decided.Children, dec.Children...)
	res.decided.Events = append(res.decided.Events, dec.Events...)
	res.decided.Gates = append(res.decided.Gates, dec.Gates...)
}

// ended drops the work decided earlier in the pass that is moot once the
// instance is over: only the notice to a parent, the cancels of its
// children and the release of its slots remain.
func (res *applied) ended() {
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
