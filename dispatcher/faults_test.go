package dispatcher_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// faulty is a dispatcher.Backend that wraps a real one (a
// *jetstream.Client on an embedded server) and injects the faults of a
// distributed system where a predicate says so; a nil predicate injects
// nothing. It is the dispatcher's test driver: the dispatcher runs
// unchanged against it.
type faulty struct {
	dispatcher.Backend
	// failCommit: the instance write fails without reaching the store,
	// as if the stream leader had died (the pass's barriers and data are
	// written by then); the pass's events are retried with backoff.
	failCommit func(in *workflow.Instance) bool
	// loseCommit: the instance write takes effect and its answer never
	// comes (jetstream.ErrRequestTimeout): the dispatcher does not know.
	loseCommit func(in *workflow.Instance) bool
	// failPublish: the publish fails without reaching the server, as if
	// the connection dropped.
	failPublish func(dec workflow.Decision) bool
	// dropPublish: the publish is skipped and reported as done: what a
	// server that crashed after acknowledging the messages leaves.
	dropPublish func(dec workflow.Decision) bool
	// losePublish: the messages are published and the answer never
	// comes (jetstream.ErrRequestTimeout).
	losePublish func(dec workflow.Decision) bool
	// dropTriggerAck: the ack of a trigger message is not sent (it was
	// applied), as if the dispatcher died first; NATS redelivers it after
	// the ack wait.
	dropTriggerAck func(m jetstream.Delivery) bool
	// redeliverEvent: the first delivery of an event message is NAKed
	// before the dispatcher sees it, so it comes back at once as a
	// redelivery: what a pass that failed after some of its effects
	// leaves.
	redeliverEvent func(m jetstream.Delivery) bool
	// redeliverFire: the ack of the first delivery of a message on
	// JETFLOW_SCHEDULES (a schedule's fire, or a debounce timer) becomes
	// a NAK, so the fire comes back at once after its start was applied:
	// a dispatcher that died before the ack.
	redeliverFire func(m jetstream.Delivery) bool
	// failDeadLetter: writing the dead letter of a message fails, as if
	// the dead-letter stream were unreachable.
	failDeadLetter func(m jetstream.Delivery) bool
	// watchDefinitions, when set, replaces the definitions watch; inner
	// is the real one.
	watchDefinitions func(ctx context.Context, inner dispatcher.Backend, fn func(*workflow.Definition), ready func()) error
	// watchInstances, when set, replaces the watch of instance writes.
	watchInstances func(ctx context.Context, inner dispatcher.Backend, existing bool, ready func(), fn func(*jetstream.InstanceUpdate)) error
	// putInstance, when set, replaces the instance write.
	putInstance func(ctx context.Context, inner dispatcher.Backend, in *workflow.Instance, rev uint64, expires bool) (uint64, error)
}

// errInjected is the error of an injected failure.
var errInjected = errors.New("tests: injected failure")

func (f *faulty) PutInstance(ctx context.Context, in *workflow.Instance, rev uint64, expires bool) (uint64, error) {
	if f.failCommit != nil && f.failCommit(in) {
		return 0, fmt.Errorf("commit dropped: %w", errInjected)
	}
	if f.putInstance != nil {
		return f.putInstance(ctx, f.Backend, in, rev, expires)
	}
	newRev, err := f.Backend.PutInstance(ctx, in, rev, expires)
	if err == nil && f.loseCommit != nil && f.loseCommit(in) {
		return 0, fmt.Errorf("%w: answer of the commit lost", jetstream.ErrRequestTimeout)
	}
	return newRev, err
}

// publish applies the publish faults to one publish call, dec holding
// what it publishes.
func (f *faulty) publish(dec workflow.Decision, do func() error) error {
	if f.failPublish != nil && f.failPublish(dec) {
		return fmt.Errorf("publish dropped: %w", errInjected)
	}
	if f.dropPublish != nil && f.dropPublish(dec) {
		return nil
	}
	if err := do(); err != nil {
		return err
	}
	if f.losePublish != nil && f.losePublish(dec) {
		return fmt.Errorf("%w: answer of the publish lost", jetstream.ErrRequestTimeout)
	}
	return nil
}

func (f *faulty) PublishTasks(ctx context.Context, tasks []workflow.Task) error {
	return f.publish(workflow.Decision{Tasks: tasks}, func() error { return f.Backend.PublishTasks(ctx, tasks) })
}

func (f *faulty) ScheduleTimers(ctx context.Context, timers []workflow.Timer) error {
	return f.publish(workflow.Decision{Timers: timers}, func() error { return f.Backend.ScheduleTimers(ctx, timers) })
}

func (f *faulty) PublishChildren(ctx context.Context, children []workflow.Child) error {
	return f.publish(workflow.Decision{Children: children}, func() error { return f.Backend.PublishChildren(ctx, children) })
}

func (f *faulty) PublishEvents(ctx context.Context, events []workflow.OutEvent) error {
	return f.publish(workflow.Decision{Events: events}, func() error { return f.Backend.PublishEvents(ctx, events) })
}

func (f *faulty) ConsumeDispatcher(ctx context.Context, stream string, buffer int, handler func(jetstream.Delivery)) (*jetstream.Subscription, error) {
	switch {
	case stream == jetstream.StreamTriggers && f.dropTriggerAck != nil:
		inner := handler
		handler = func(m jetstream.Delivery) { inner(&ackDropper{Delivery: m, drop: f.dropTriggerAck}) }
	case stream == jetstream.StreamEvents && f.redeliverEvent != nil:
		inner := handler
		handler = func(m jetstream.Delivery) {
			if m.Deliveries() == 1 && f.redeliverEvent(m) {
				_ = m.Nak(0)
				return
			}
			inner(m)
		}
	case stream == jetstream.StreamSchedules && f.redeliverFire != nil:
		inner := handler
		handler = func(m jetstream.Delivery) { inner(&ackRedeliverer{Delivery: m, redeliver: f.redeliverFire}) }
	}
	return f.Backend.ConsumeDispatcher(ctx, stream, buffer, handler)
}

func (f *faulty) DeadLetter(ctx context.Context, source string, m jetstream.Delivery, component, reason string) error {
	if f.failDeadLetter != nil && f.failDeadLetter(m) {
		return fmt.Errorf("dead letter dropped: %w", errInjected)
	}
	return f.Backend.DeadLetter(ctx, source, m, component, reason)
}

func (f *faulty) WatchDefinitions(ctx context.Context, fn func(*workflow.Definition), ready func()) error {
	if f.watchDefinitions != nil {
		return f.watchDefinitions(ctx, f.Backend, fn, ready)
	}
	return f.Backend.WatchDefinitions(ctx, fn, ready)
}

func (f *faulty) WatchInstanceUpdates(ctx context.Context, existing bool, ready func(), fn func(*jetstream.InstanceUpdate)) error {
	if f.watchInstances != nil {
		return f.watchInstances(ctx, f.Backend, existing, ready, fn)
	}
	return f.Backend.WatchInstanceUpdates(ctx, existing, ready, fn)
}

// ackDropper is a trigger message whose ack is withheld when drop says
// so.
type ackDropper struct {
	jetstream.Delivery
	drop func(jetstream.Delivery) bool
}

func (m *ackDropper) Ack() error {
	if m.drop(m.Delivery) {
		return nil
	}
	return m.Delivery.Ack()
}

// ackRedeliverer is a fire whose first ack is a NAK (redelivered at
// once) when redeliver says so.
type ackRedeliverer struct {
	jetstream.Delivery
	redeliver func(jetstream.Delivery) bool
}

func (m *ackRedeliverer) Ack() error {
	if m.Deliveries() == 1 && m.redeliver(m.Delivery) {
		return m.Nak(0)
	}
	return m.Delivery.Ack()
}

// decisionInstance is the instance whose work a publish call carries: the
// instance of its tasks or timers, the parent of its children, the
// instance its events go to.
func decisionInstance(dec workflow.Decision) string {
	switch {
	case len(dec.Tasks) > 0:
		return dec.Tasks[0].Instance
	case len(dec.Timers) > 0:
		return dec.Timers[0].Instance
	case len(dec.Children) > 0:
		return dec.Children[0].Parent.ID
	case len(dec.Events) > 0:
		return dec.Events[0].Event.Instance
	}
	return ""
}
