package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// Schedules (docs/schedules.md): the server fires each schedule of a
// workflow's latest definition; a fire is one message on the schedule's
// fire subject. A fire starts the instance InstanceID(workflow,
// ScheduleEventKey(schedule, fire time)), where the fire time is read
// from the fire itself (its pattern and the server's Nats-Schedule-Next),
// so every delivery of a fire names the same instance and the instance
// Create lets only one exist. Whether a fire starts is decided on the
// schedule's state record by compare-and-swap (workflow.DecideFire):
// paused, out of order, overlap: skip.

// fireWait is how soon a fire that waits for the previous fire's start
// is looked at again.
const fireWait = time.Second

// syncSchedules makes the server hold the schedules of the latest
// definition of def's workflow.
func (d *Dispatcher) syncSchedules(ctx context.Context, def *workflow.Definition) {
	if latest := d.defs.latestOf(def.Name); latest != nil && latest.Version > def.Version {
		return // a later version decides
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	if err := d.client.SyncSchedules(ctx, def); err != nil {
		d.log.Error().Err(err).Str("workflow", def.Name).Int("version", def.Version).Msg("cannot install the schedules")
	}
}

// onFire handles a message of the schedules stream: a debounce timer or
// a fire of a schedule.
func (d *Dispatcher) onFire(ctx context.Context, m jetstream.Delivery) {
	if wf, id, ok := jetstream.ParseDebounceFire(m.Subject()); ok {
		d.onDebounceFire(ctx, m, wf, id)
		return
	}
	d.onScheduleFire(ctx, m)
}

// onScheduleFire starts the instance of one fire of a schedule, unless
// the schedule's state says to skip the fire or to wait for the previous
// fire's start. A fire of a schedule a later version removed is dropped.
func (d *Dispatcher) onScheduleFire(ctx context.Context, m jetstream.Delivery) {
	wf, name, ok := jetstream.ParseFireSubject(m.Subject())
	if !ok {
		d.reject(ctx, "schedule", m, reasonMisrouted, fmt.Sprintf("%s is not a fire subject (jetflow.fire.<workflow>.<schedule>)", m.Subject()))
		return
	}
	def := d.latestDefinition(ctx, wf)
	if def == nil {
		d.reject(ctx, "schedule", m, reasonUnknownWorkflow, fmt.Sprintf("fire of schedule %q of unknown workflow %q", name, wf))
		return
	}
	sched, ok := def.Schedule(name)
	if !ok {
		// Removed by a later version; the server stopped it, but a fire
		// may have been on its way.
		d.stats.scheduleFires.WithLabelValues("removed").Inc()
		d.log.Info().Str("workflow", wf).Str("schedule", name).Msg("fire of a removed schedule dropped")
		_ = m.Ack()
		return
	}
	f, key, err := fireOf(m, wf, name)
	if err != nil {
		d.reject(ctx, "schedule", m, reasonMalformed, err.Error())
		return
	}
	dctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	dec, err := d.decideFire(dctx, wf, sched, f)
	if err != nil {
		d.settle(ctx, "schedule", m, failure(err))
		return
	}
	log := d.log.With().Str("workflow", wf).Str("schedule", name).Str("instance_id", f.ID).Time("fire_time", f.At).Logger()
	switch dec.Action {
	case workflow.FireWait:
		log.Debug().Str("reason", dec.Reason).Msg("fire waits")
		_ = m.Nak(fireWait)
		return
	case workflow.FireSkip:
		d.stats.scheduleFires.WithLabelValues("skipped").Inc()
		log.Info().Str("reason", dec.Reason).Msg("fire skipped")
		_ = m.Ack()
		return
	}
	d.startFire(ctx, m, def, sched, f, key, dec.Action)
}

// fireOf reads the fire time of the fire m of schedule name of workflow
// wf and returns the fire with the id of the instance it starts, and that
// instance's event key. Every delivery of one fire gives the same fire
// time, hence the same instance.
func fireOf(m jetstream.Delivery, wf, name string) (workflow.Fire, string, error) {
	cron, zone, next, manual, err := jetstream.FireOf(m)
	if err != nil {
		return workflow.Fire{}, "", err
	}
	var f workflow.Fire
	var key string
	if !manual.IsZero() {
		key = workflow.ScheduleManualKey(name, manual)
		f = workflow.Fire{At: manual, Manual: true}
	} else {
		spec, err := workflow.ParseScheduleSpec(cron, zone)
		if err != nil {
			return workflow.Fire{}, "", fmt.Errorf("fire of schedule %s of %s: %v", name, wf, err)
		}
		f.At, f.Next = spec.FireTime(next), next
		key = workflow.ScheduleEventKey(name, f.At)
	}
	f.ID = workflow.InstanceID(wf, key)
	return f, key, nil
}

// startFire queues the start of the instance of fire f, decided with
// action, and settles m once the start is applied. The schedule's pending
// start is cleared first, so that the next fire need not wait for this
// one any more.
func (d *Dispatcher) startFire(ctx context.Context, m jetstream.Delivery, def *workflow.Definition, sched *workflow.Schedule, f workflow.Fire, key string, action workflow.FireAction) {
	input := sched.InputJSON()
	it := &item{
		ev: workflow.Event{
			Kind: workflow.EventStart, Instance: f.ID, Workflow: def.Name, Version: def.Version,
			EventKey: key, InputRef: workflow.InputKey(f.ID), InputDigest: workflow.Digest(input),
			TriggerSeq: m.StreamSeq(), Trace: d.traceOf(m),
		},
		msg:   m,
		input: input,
	}
	it.done = func(o outcome) {
		if o.err == nil {
			// Started, a duplicate, or rejected for good: the next fire
			// need not wait for this one any more.
			fctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
			err := d.fireStarted(fctx, def.Name, sched.Name, f.ID)
			cancel()
			if err != nil {
				o = outcome{err: err}
			} else if o.reject == "" && action == workflow.FireStart {
				d.stats.scheduleFires.WithLabelValues("started").Inc()
			}
		}
		d.settle(ctx, "schedule", m, o)
	}
	if !d.enqueue(it) {
		_ = m.Nak(0)
	}
}

// decideFire decides a fire on the schedule's state and writes the
// decision by compare-and-swap, again on a lost race.
func (d *Dispatcher) decideFire(ctx context.Context, wf string, sched *workflow.Schedule, f workflow.Fire) (workflow.FireDecision, error) {
	for range maxConflicts {
		st, rev, err := d.client.ScheduleState(ctx, wf, sched.Name)
		if err != nil {
			return workflow.FireDecision{}, err
		}
		var last workflow.Status
		if sched.Skips() && st.Last != "" && st.Last != f.ID {
			inst, _, err := d.client.GetInstance(ctx, st.Last)
			switch {
			case errors.Is(err, workflow.ErrNotFound):
			case err != nil:
				return workflow.FireDecision{}, err
			default:
				last = inst.Status
			}
		}
		dec := workflow.DecideFire(st, f, sched.Skips(), last)
		if dec.Action == workflow.FireWait || (dec.Action == workflow.FireResume && dec.State == st) {
			return dec, nil
		}
		_, err = d.client.PutScheduleState(ctx, wf, sched.Name, dec.State, rev)
		if errors.Is(err, workflow.ErrConflict) {
			continue
		}
		if err != nil {
			return workflow.FireDecision{}, err
		}
		return dec, nil
	}
	return workflow.FireDecision{}, fmt.Errorf("schedule %s of %s: %d conflicts in a row", sched.Name, wf, maxConflicts)
}

// fireStarted clears the pending start of id in the schedule's state.
func (d *Dispatcher) fireStarted(ctx context.Context, wf, schedule, id string) error {
	for range maxConflicts {
		st, rev, err := d.client.ScheduleState(ctx, wf, schedule)
		if err != nil {
			return err
		}
		st, changed := workflow.FireStarted(st, id)
		if !changed {
			return nil
		}
		_, err = d.client.PutScheduleState(ctx, wf, schedule, st, rev)
		if errors.Is(err, workflow.ErrConflict) {
			continue
		}
		return err
	}
	return fmt.Errorf("schedule %s of %s: %d conflicts in a row", schedule, wf, maxConflicts)
}
