package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetflow/jetflow/workflow"
)

// runGates carries out the flow-control ops of a committed decision: a
// CAS on each slot or rate record, then the grants (or denials) to the
// holders whose outcome is now known. Every op is idempotent by holder,
// so a republish (workflow.Outstanding) repeats it harmlessly; grants
// carry message ids derived from (gate, holder), and a grant the holder
// no longer waits for changes nothing.
func (d *Dispatcher) runGates(ctx context.Context, ops []workflow.GateOp) error {
	var events []workflow.OutEvent
	for _, op := range ops {
		switch op.Kind {
		case workflow.OpAcquire:
			var granted bool
			var promoted []workflow.Holder
			rec, err := d.client.UpdateSlot(ctx, op.Key, func(r workflow.SlotRecord) (workflow.SlotRecord, bool) {
				out, g, changed, p := r.Acquire(op.Holder, op.Limit, op.Queue)
				granted, promoted = g, p
				return out, changed
			})
			if err != nil {
				return fmt.Errorf("acquire slot %s for %s: %w", op.Key, op.Holder, err)
			}
			if granted {
				events = append(events, workflow.GrantEvent(workflow.GateSlot, op.Holder, false, timeZero))
			} else if !op.Queue && !waits(rec, op.Holder) {
				events = append(events, workflow.GrantEvent(workflow.GateSlot, op.Holder, true, timeZero))
			}
			for _, p := range promoted {
				events = append(events, workflow.GrantEvent(workflow.GateSlot, p, false, timeZero))
			}
			d.stats.slotOps.Add(1)
		case workflow.OpRelease:
			var promoted []workflow.Holder
			_, err := d.client.UpdateSlot(ctx, op.Key, func(r workflow.SlotRecord) (workflow.SlotRecord, bool) {
				out, changed, p := r.Release(op.Holder, op.Limit)
				promoted = p
				return out, changed
			})
			if err != nil {
				return fmt.Errorf("release slot %s of %s: %w", op.Key, op.Holder, err)
			}
			for _, p := range promoted {
				events = append(events, workflow.GrantEvent(workflow.GateSlot, p, false, timeZero))
			}
			d.stats.slotOps.Add(1)
		case workflow.OpRate:
			now := d.cfg.Clock()
			var granted bool
			var gateAt = timeZero
			err := d.client.UpdateRate(ctx, op.Key, func(r workflow.RateRecord) (workflow.RateRecord, bool) {
				out, g, changed, at := r.Take(op.Holder, op.Limit, op.Per, now)
				granted, gateAt = g, at
				return out, changed
			})
			if err != nil {
				return fmt.Errorf("rate limit %s for %s: %w", op.Key, op.Holder, err)
			}
			if granted {
				// gateAt: the holder's start in the record (a start granted
				// again keeps its first time), recorded as the attempt's start.
				// Each grant is news too: an attempt held by a pause gives
				// its start up and takes one again when released, and
				// the record may grant it the same start again, which
				// must not be dropped as a duplicate message. A second
				// grant changes nothing once the attempt passed the gate.
				ev := workflow.GrantEvent(workflow.GateRate, op.Holder, false, gateAt)
				ev.MsgID += fmt.Sprintf("/%d", now.UnixNano())
				events = append(events, ev)
			} else {
				ev := workflow.GrantEvent(workflow.GateRate, op.Holder, true, gateAt)
				ev.MsgID += fmt.Sprintf("/%d", now.UnixNano()) // each denial is news
				events = append(events, ev)
				d.stats.rateDenied.Add(1)
			}
		}
	}
	if len(events) == 0 {
		return nil
	}
	return d.client.PublishEvents(ctx, events)
}

func waits(r workflow.SlotRecord, h workflow.Holder) bool {
	for _, w := range r.Waiters {
		if w == h {
			return true
		}
	}
	return false
}

// reconcileSlots is the repair loop's pass over the slot records: every
// holder or waiter whose instance no longer holds or waits for the slot
// (it ended, vanished, or its attempt moved on: a release was lost) is
// dropped, waiters are promoted into the freed slots, and every holder
// whose instance still waits for its grant is sent the grant again. The
// instance states decide; the records follow.
func (r *repairLoop) reconcileSlots(ctx context.Context) {
	d := r.d
	keys, err := d.client.SlotKeys(ctx)
	if err != nil {
		d.log.Warn().Err(err).Msg("repair loop: cannot list slot records")
		return
	}
	insts := map[string]*workflow.Instance{}
	read := func(id string) (*workflow.Instance, error) {
		if in, ok := insts[id]; ok {
			return in, nil
		}
		in, _, err := d.client.GetInstance(ctx, id)
		if errors.Is(err, workflow.ErrNotFound) {
			in, err = nil, nil
		}
		if err != nil {
			return nil, err
		}
		insts[id] = in
		return in, nil
	}
	var events []workflow.OutEvent
	for _, key := range keys {
		rec, err := d.client.GetSlot(ctx, key)
		if err != nil {
			d.log.Warn().Err(err).Str("slot", key).Msg("repair loop: cannot read slot record")
			continue
		}
		live := map[workflow.Holder]bool{}
		limit := 0
		failed := false
		for _, h := range append(append([]workflow.Holder{}, rec.Holders...), rec.Waiters...) {
			in, err := read(h.Instance)
			if err != nil {
				failed = true
				break
			}
			live[h] = workflow.SlotLive(in, h)
			if in != nil && limit == 0 {
				if def, err := d.definition(ctx, in.Workflow, in.Version); err == nil {
					limit = workflow.SlotLimit(def, h.Step)
				}
			}
		}
		if failed {
			continue
		}
		if limit == 0 {
			anyLive := false
			for _, l := range live {
				anyLive = anyLive || l
			}
			if anyLive {
				continue // its definition cannot be read now
			}
			limit = 1 // every entry is dropped; nobody to promote
		}
		var promoted []workflow.Holder
		cur, err := d.client.UpdateSlot(ctx, key, func(now workflow.SlotRecord) (workflow.SlotRecord, bool) {
			// A holder that joined since the reads above is live: it
			// was added after its instance committed its wait.
			out, changed, p := now.Reconcile(func(h workflow.Holder) bool {
				l, seen := live[h]
				return !seen || l
			}, limit)
			promoted = p
			return out, changed
		})
		if err != nil {
			d.log.Warn().Err(err).Str("slot", key).Msg("repair loop: cannot reconcile slot record")
			continue
		}
		for _, h := range cur.Holders {
			in := insts[h.Instance]
			waiting := in != nil && workflow.SlotWaiting(in, h)
			if _, known := insts[h.Instance]; !known {
				waiting = true // promoted just now, or joined since: a grant is harmless
			}
			for _, p := range promoted {
				if p == h {
					waiting = true
				}
			}
			if waiting {
				ev := workflow.GrantEvent(workflow.GateSlot, h, false, timeZero)
				ev.MsgID += "/repair/" + fmt.Sprint(d.cfg.Clock().Unix()/60)
				events = append(events, ev)
			}
		}
		if len(cur.Holders) < len(rec.Holders) || len(cur.Waiters) < len(rec.Waiters) {
			d.stats.slotsRepaired.Add(uint64(len(rec.Holders) + len(rec.Waiters) - len(cur.Holders) - len(cur.Waiters)))
		}
	}
	if len(events) > 0 {
		if err := d.client.PublishEvents(ctx, events); err != nil {
			d.log.Warn().Err(err).Msg("repair loop: publishing slot grants failed; the next pass retries")
		}
	}
}

var timeZero time.Time
