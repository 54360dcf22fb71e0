package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// Debounce (trigger.debounce; docs/schedules.md): an event of a debounced
// workflow joins its key's window (a record changed by compare-and-swap)
// and (re)arms the window's timer; when the timer fires and the window is
// due, the window is closed (compare-and-swap), one instance starts with
// its last event's payload, under an id derived from (workflow, key, the
// window's first trigger sequence), and the record is deleted, or turned
// into the next window if events came after the close. Every step can be
// repeated: a redelivered event is already in the window, a redelivered
// fire finds the window closed and starts the same instance again, which
// the instance Create turns into a duplicate.

func (d *Dispatcher) debounceEvent(ctx context.Context, def *workflow.Definition, key string, seq uint64, debounce, maxWait time.Duration) error {
	id := jetstream.DebounceID(key)
	for range maxConflicts {
		st, rev, err := d.client.DebounceWindow(ctx, def.Name, id)
		if err != nil {
			return err
		}
		next, changed := workflow.DebounceEvent(st, key, seq, time.Now(), debounce, maxWait)
		if changed {
			err := d.client.PutDebounceWindow(ctx, def.Name, id, &next, rev)
			if errors.Is(err, workflow.ErrConflict) {
				continue
			}
			if err != nil {
				return err
			}
		}
		if next.Closing != 0 {
			return nil // the closing window's fire opens and arms the next one
		}
		return d.client.ArmDebounce(ctx, def.Name, id, next.Due)
	}
	return fmt.Errorf("debounce window of %s key %q: %d conflicts in a row", def.Name, key, maxConflicts)
}

// onDebounceFire handles the timer of window id of workflow wf: once the
// window is due it is closed and one instance starts with its last
// event's payload; the window is resolved (deleted, or turned into the
// next one) once the start is applied.
func (d *Dispatcher) onDebounceFire(hctx context.Context, m jetstream.Delivery, wf, id string) {
	ctx, cancel := context.WithTimeout(hctx, d.cfg.OpTimeout)
	defer cancel()
	def := d.latestDefinition(ctx, wf)
	if def == nil {
		d.reject(hctx, "schedule", m, reasonUnknownWorkflow, fmt.Sprintf("debounce timer of unknown workflow %q", wf))
		return
	}
	st, o := d.closeDebounceWindow(ctx, wf, id)
	if st == nil {
		d.settle(hctx, "schedule", m, o)
		return
	}
	debounce := debounceOf(def)
	resolve := func() error {
		ctx, cancel := context.WithTimeout(hctx, d.cfg.OpTimeout)
		defer cancel()
		return d.debounceStarted(ctx, wf, id, st.First, debounce)
	}
	data, input, err := d.debounceInput(ctx, st)
	switch {
	case err == nil:
		d.startDebounced(hctx, m, def, st, data, input, resolve)
	case errors.Is(err, workflow.ErrNotFound) || errors.Is(err, workflow.ErrMalformed):
		// The window's last event cannot be had: nothing can start.
		if err := resolve(); err != nil {
			d.settle(hctx, "schedule", m, failure(err))
			return
		}
		d.reject(hctx, "schedule", m, reasonBadPayload, fmt.Sprintf("debounce window of %s key %q: its last event (trigger sequence %d): %v", wf, st.Key, st.Closing, err))
	default:
		d.settle(hctx, "schedule", m, failure(err))
	}
}

// debounceOf returns the quiet time of def's trigger, or a second when a
// later version dropped debounce, so that a window left open closes soon.
func debounceOf(def *workflow.Definition) time.Duration {
	debounce, _ := def.Trigger.Debounces()
	if debounce == 0 {
		debounce = time.Second // a later version dropped debounce: close what is open soon
	}
	return debounce
}

// closeDebounceWindow closes window id of workflow wf by compare-and-swap
// when it is due, and returns it closed (also when an earlier delivery
// of the fire closed it). It returns nil and the outcome to settle the
// fire with when there is nothing to start now: the window is resolved
// already, is not due yet (its timer is armed again for its due time),
// or cannot be read or written.
func (d *Dispatcher) closeDebounceWindow(ctx context.Context, wf, id string) (*workflow.DebounceState, outcome) {
	for range maxConflicts {
		w, rev, err := d.client.DebounceWindow(ctx, wf, id)
		if err != nil {
			return nil, failure(err)
		}
		if w == nil {
			return nil, outcome{} // started and resolved already
		}
		if w.Closing != 0 {
			return w, outcome{}
		}
		if time.Now().Before(w.Due) {
			// An earlier timer fired (timers of one window may be armed
			// out of order): arm it for the window's time.
			if err := d.client.ArmDebounce(ctx, wf, id, w.Due); err != nil {
				return nil, failure(err)
			}
			return nil, outcome{}
		}
		closed := *w
		closed.Closing = w.Last
		err = d.client.PutDebounceWindow(ctx, wf, id, &closed, rev)
		if errors.Is(err, workflow.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, failure(err)
		}
		return &closed, outcome{}
	}
	return nil, outcome{err: fmt.Errorf("debounce window %s/%s: %d conflicts in a row", wf, id, maxConflicts)}
}

// debounceInput reads the last event of the closed window st and returns
// its payload as published (data) and as the instance input.
func (d *Dispatcher) debounceInput(ctx context.Context, st *workflow.DebounceState) (data, input []byte, err error) {
	data, contentType, err := d.client.TriggerMessage(ctx, st.Closing)
	if err != nil {
		return nil, nil, err
	}
	input, err = payloadOfData(data, contentType, d.client.Config().MaxPayload)
	return data, input, err
}

// startDebounced queues the start of the instance of the closed window
// st and settles m once the start is applied and the window resolved.
func (d *Dispatcher) startDebounced(ctx context.Context, m jetstream.Delivery, def *workflow.Definition, st *workflow.DebounceState, data, input []byte, resolve func() error) {
	key := workflow.DebounceEventKey(st.Key, st.First)
	instance := workflow.InstanceID(def.Name, key)
	it := &item{
		ev: workflow.Event{
			Kind: workflow.EventStart, Instance: instance, Workflow: def.Name, Version: def.Version,
			EventKey: key, InputRef: workflow.InputKey(instance), InputDigest: workflow.Digest(data),
			TriggerSeq: st.Closing, Trace: d.traceOf(m),
		},
		msg:   m,
		input: input,
	}
	it.done = func(o outcome) {
		if o.err == nil {
			if err := resolve(); err != nil {
				o = outcome{err: err}
			}
		}
		d.settle(ctx, "schedule", m, o)
	}
	if !d.enqueue(it) {
		_ = m.Nak(0)
	}
}

// debounceStarted resolves the window whose first event is first once
// its instance started: deleted, or the next window when events came
// after the close (then armed).
func (d *Dispatcher) debounceStarted(ctx context.Context, wf, id string, first uint64, debounce time.Duration) error {
	for range maxConflicts {
		w, rev, err := d.client.DebounceWindow(ctx, wf, id)
		if err != nil {
			return err
		}
		if w == nil || w.First != first || w.Closing == 0 {
			return nil // resolved already
		}
		next := workflow.DebounceAfterStart(*w, time.Now(), debounce)
		err = d.client.PutDebounceWindow(ctx, wf, id, next, rev)
		if errors.Is(err, workflow.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		if next != nil {
			return d.client.ArmDebounce(ctx, wf, id, next.Due)
		}
		return nil
	}
	return fmt.Errorf("debounce window %s/%s: %d conflicts in a row", wf, id, maxConflicts)
}
