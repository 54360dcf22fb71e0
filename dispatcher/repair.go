package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// repairLoop finds instances that stopped making progress and sends them
// repair events. It decides from the instance states it watches (the KV
// watch delivers every write), and it never writes an instance itself:
// every repair is an event that goes through the shard's read -> Apply ->
// CAS path, like any other. Several repair loops (one per dispatcher
// replica) may run at once; they publish the same deterministic message
// ids, and a repair that arrives after the work finished changes nothing.
type repairLoop struct {
	d  *Dispatcher
	mu sync.Mutex
	// running holds the latest write of every running instance.
	running map[string]*watched
	// sent remembers the repair message ids this loop already published
	// for each running instance, so a sweep does not publish the same
	// repair again while the first is still on its way.
	sent map[string]map[string]bool
	// slotsReconciled: when the slot records were last reconciled.
	slotsReconciled time.Time
	// held: the instances with attempts held by a pause (pause.go).
	held map[string]heldAttempts
}

// watched is the latest write of one running instance. A sweep decodes
// a write once, to learn when a repair could first be due
// (workflow.NextRepair), and then keeps only that time: most instances
// change again or end before it. Before, every sweep decoded every
// running instance and kept the decoded copy: in a 100,000-child fan-out
// whose children queue up for their worker, that is up to 100,000 decodes
// every RepairInterval and as many decoded instances held in memory.
type watched struct {
	id     string
	events uint64 // the write's event count (a late, older write is ignored)
	// update is the write until a sweep has looked at it (always, with
	// forced repairs); then nil, and due is when a repair can first be
	// due (zero: not until the instance changes). Once due has passed the
	// instance is read again from the store.
	update *jetstream.InstanceUpdate
	due    time.Time
	// bulk counts the children of the instance's running bulk steps as
	// of the write a sweep last decoded (jetflow_bulk_children).
	bulk bulkCounts
}

func (r *repairLoop) run(ctx context.Context) error {
	r.running = map[string]*watched{}
	r.sent = map[string]map[string]bool{}
	r.held = map[string]heldAttempts{}
	ready := make(chan struct{})
	var once sync.Once
	errc := make(chan error, 1)
	go func() {
		errc <- r.d.client.WatchInstanceUpdates(ctx, true, func() { once.Do(func() { close(ready) }) }, r.observe)
	}()
	select {
	case <-ready:
	case err := <-errc:
		return err
	case <-ctx.Done():
		return <-errc
	}
	t := time.NewTicker(r.d.cfg.RepairInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return <-errc
		case err := <-errc:
			return err
		case <-t.C:
			r.sweep(ctx)
		case <-r.d.pauses.resumed:
			r.releaseHeld(ctx, fmt.Sprintf("resume-%d", r.d.pauses.rev.Load()))
		}
	}
}

func (r *repairLoop) observe(u *jetstream.InstanceUpdate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u.Status.Terminal() {
		r.forget(u.ID)
		return
	}
	if cur, ok := r.running[u.ID]; ok && cur.events > u.Events {
		return // an older revision delivered late
	}
	r.running[u.ID] = &watched{id: u.ID, events: u.Events, update: u}
}

// forget stops following an instance; r.mu is held.
func (r *repairLoop) forget(id string) {
	delete(r.running, id)
	delete(r.sent, id)
	delete(r.held, id)
}

// load returns the instance of a watched write that a sweep must look
// at, or nil when there is nothing to look at now. An error means the
// store could not be read.
func (r *repairLoop) load(ctx context.Context, w *watched, now time.Time) (*workflow.Instance, error) {
	r.mu.Lock()
	u, due := w.update, w.due
	r.mu.Unlock()
	if u != nil {
		in, err := u.Decode()
		if err != nil {
			// Not a read error: the write itself is bad. Look at it no
			// more until the instance changes.
			r.d.log.Warn().Err(err).Str("instance_id", w.id).Msg("repair loop: undecodable instance")
			r.mu.Lock()
			w.update, w.due = nil, time.Time{}
			r.mu.Unlock()
			return nil, nil
		}
		return in, nil
	}
	// Only a write a sweep has looked at is nil here (never with forced
	// repairs, which keep every write).
	if due.IsZero() || !now.After(due) {
		return nil, nil
	}
	rctx, cancel := context.WithTimeout(ctx, r.d.cfg.OpTimeout)
	defer cancel()
	in, _, err := r.d.client.GetInstance(rctx, w.id)
	switch {
	case errors.Is(err, workflow.ErrNotFound):
		in = nil // expired or gone: nothing to repair
	case err != nil:
		return nil, err
	}
	if in == nil || in.Status.Terminal() {
		r.mu.Lock()
		if r.running[w.id] == w {
			r.forget(w.id)
		}
		r.mu.Unlock()
		return nil, nil
	}
	return in, nil
}

func (r *repairLoop) sweep(ctx context.Context) {
	d := r.d
	now := d.cfg.Clock()
	policy := workflow.RepairPolicy{
		StaleTask:  d.cfg.StaleTask,
		TimerGrace: d.cfg.TimerGrace,
		StaleBulk:  d.cfg.StaleBulk,
		StaleGate:  d.cfg.StaleGate,
		Force:      d.cfg.ForceRepairs,
	}
	r.mu.Lock()
	snapshot := make([]*watched, 0, len(r.running))
	for _, w := range r.running {
		snapshot = append(snapshot, w)
	}
	r.mu.Unlock()
	if d.slots.Load() && now.Sub(r.slotsReconciled) >= d.cfg.SlotRepairInterval {
		r.slotsReconciled = now
		r.reconcileSlots(ctx)
	}
	var events []workflow.OutEvent
	defer r.countChildren()
	defer r.releaseHeld(ctx, releaseRound(now))
	for _, w := range snapshot {
		in, err := r.load(ctx, w, now)
		if err != nil {
			// NATS is unwell: one failed read per sweep, not one per
			// instance; the next sweep goes on.
			d.log.Warn().Err(err).Str("instance_id", w.id).Msg("repair loop: cannot read instance; sweep cut short")
			break
		}
		if in == nil {
			continue
		}
		r.noteHeld(in)
		def, err := d.definition(ctx, in.Workflow, in.Version)
		if err != nil {
			continue
		}
		r.mu.Lock()
		w.bulk = bulkChildren(def, in)
		r.mu.Unlock()
		if !policy.Force {
			due := workflow.NextRepair(def, in, policy)
			r.mu.Lock()
			w.update, w.due = nil, due
			r.mu.Unlock()
		}
		r.mu.Lock()
		for _, ev := range workflow.Repairs(def, in, now, policy) {
			if !r.sent[in.ID][ev.MsgID] {
				events = append(events, ev)
			}
		}
		r.mu.Unlock()
	}
	if len(events) == 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := d.client.PublishEvents(pctx, events); err != nil {
		// Nothing is marked sent: the next sweep publishes them again.
		d.log.Warn().Err(err).Int("repairs", len(events)).Msg("publishing repairs failed; the next sweep retries")
		return
	}
	r.mu.Lock()
	for _, ev := range events {
		if _, running := r.running[ev.Event.Instance]; !running {
			continue // it ended meanwhile
		}
		seen := r.sent[ev.Event.Instance]
		if seen == nil {
			seen = map[string]bool{}
			r.sent[ev.Event.Instance] = seen
		}
		seen[ev.MsgID] = true
	}
	r.mu.Unlock()
	d.stats.repairsSent(events)
	d.log.Debug().Int("repairs", len(events)).Msg("repairs sent")
}
