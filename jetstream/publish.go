package jetstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/tracing"
	"github.com/jetflow/jetflow/workflow"
)

// PublishTasks publishes task pointer messages with deterministic ids
// (instance/step/attempt), pipelined, and waits for every ack. A task that
// was already published in the duplicate window is acknowledged as a
// duplicate and not stored twice.
func (c *Client) PublishTasks(ctx context.Context, tasks []workflow.Task) error {
	mark := c.perms.mark()
	futures := make([]natsjs.PubAckFuture, 0, len(tasks))
	for _, t := range tasks {
		b, err := encode(t)
		if err != nil {
			return err
		}
		m := &nats.Msg{Subject: TaskSubject(t.Type), Data: b, Header: nats.Header{}}
		m.Header.Set(HeaderMsgID, workflow.TaskMsgID(t.Instance, t.Step, t.Attempt))
		if t.Trace != "" {
			m.Header.Set(tracing.Header, tracing.StepParent(t.Trace, t.Instance, t.Step))
		}
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish task %s/%s/%d: %w", t.Instance, t.Step, t.Attempt, err)
		}
		futures = append(futures, f)
	}
	return c.waitAcks(ctx, mark, futures)
}

// waitAcks waits for the acknowledgements of pipelined publishes; each
// one that does not come within Config.RequestTimeout of its publish
// fails with ErrRequestTimeout. mark is c.perms.mark() from before the
// publishes: a permissions violation on one of their subjects since
// fails the wait at once with that *PermissionError.
func (c *Client) waitAcks(ctx context.Context, mark uint64, futures []natsjs.PubAckFuture) error {
	denied, stop := c.watchPublishes(mark, futures)
	defer stop()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", f.Msg().Subject, c.ackErr(err))
		case pe := <-denied:
			return pe
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// watchPublishes watches for permissions violations since mark on the
// subjects of pipelined publishes. A batch can hold thousands of
// subjects (one per key or instance), so it watches their first two
// tokens: a violation on jetflow.task.x fails a batch of tasks of other
// types too, which is right for a role that lacks one of them.
func (c *Client) watchPublishes(mark uint64, futures []natsjs.PubAckFuture) (<-chan *PermissionError, func()) {
	var patterns []string
	for _, f := range futures {
		if f == nil {
			continue
		}
		p := subjectFamily(f.Msg().Subject)
		if !slices.Contains(patterns, p) {
			patterns = append(patterns, p)
		}
	}
	w, stop := c.perms.watch(mark, patterns...)
	return w.ch, stop
}

// subjectFamily is the wildcard of a subject's first two tokens
// ("$KV.jetflow_data.>" for a data key), or the subject itself when it
// has fewer than three.
func subjectFamily(s string) string {
	i := strings.IndexByte(s, '.')
	if i < 0 {
		return s
	}
	j := strings.IndexByte(s[i+1:], '.')
	if j < 0 {
		return s
	}
	return s[:i+1+j] + ".>"
}

// PublishEvent publishes an event for an instance with a message id, on
// the subject of its kind (EventKindSubject): a worker's result, an
// operator's cancel or signal, each under its own NATS permission.
func (c *Client) PublishEvent(ctx context.Context, ev workflow.Event, msgID string) error {
	b, err := encode(ev)
	if err != nil {
		return err
	}
	m := &nats.Msg{Subject: EventKindSubject(ev.Instance, ev.Kind), Data: b, Header: nats.Header{}}
	if msgID != "" {
		m.Header.Set(HeaderMsgID, msgID)
	}
	if _, err := c.publishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish %s event for %s: %w", ev.Kind, ev.Instance, err)
	}
	return nil
}

// ScheduleTimers publishes one message schedule per timer; each fires an
// EventTimer on the instance's event subject. Schedules have one-second
// precision, so the time is rounded up: a timer never fires early. A
// timer scheduled again replaces the earlier schedule on its subject.
func (c *Client) ScheduleTimers(ctx context.Context, timers []workflow.Timer) error {
	mark := c.perms.mark()
	futures := make([]natsjs.PubAckFuture, 0, len(timers))
	for _, t := range timers {
		b, err := encode(workflow.Event{Kind: workflow.EventTimer, Instance: t.Instance, Timer: t.ID})
		if err != nil {
			return err
		}
		f, err := c.js.PublishAsync(TimerSubject(t.Instance, t.ID), b,
			natsjs.WithScheduleAt(scheduleTime(t.At)), natsjs.WithScheduleTarget(EventSubject(t.Instance)))
		if err != nil {
			return fmt.Errorf("schedule timer %s of %s: %w", t.ID, t.Instance, err)
		}
		futures = append(futures, f)
	}
	return c.waitAcks(ctx, mark, futures)
}

// scheduleTime is the time a message schedule for t fires: schedules
// have whole seconds, so t rounded up to the next one.
func scheduleTime(t time.Time) time.Time {
	at := t.Truncate(time.Second)
	if at.Before(t) {
		at = at.Add(time.Second)
	}
	return at
}

// ScheduleRecount schedules a recount of a bulk step's counts from its
// barriers (a recount event on the instance's event subject) for at, and
// returns when it fires. A later schedule for the same step replaces an
// earlier one that has not fired.
func (c *Client) ScheduleRecount(ctx context.Context, instance, step string, at time.Time) (time.Time, error) {
	b, err := encode(workflow.Event{Kind: workflow.EventRecount, Instance: instance, Step: step, Completed: -1, Failed: -1})
	if err != nil {
		return time.Time{}, err
	}
	at = scheduleTime(at)
	m := &nats.Msg{Subject: TimerSubject(instance, workflow.RecountTimer(step)), Data: b}
	if _, err := c.publishMsg(ctx, m, natsjs.WithScheduleAt(at), natsjs.WithScheduleTarget(EventSubject(instance))); err != nil {
		return time.Time{}, fmt.Errorf("schedule recount of %s step %s: %w", instance, step, err)
	}
	return at, nil
}

// Start describes an explicit start of a workflow.
type Start struct {
	Workflow string
	// EventKey identifies the event; the same key never starts a second
	// instance.
	EventKey string
	// Payload is the JSON input; empty means null.
	Payload []byte
	// TraceParent, when set, is a W3C traceparent: the instance's spans
	// join that trace as children of that span.
	TraceParent string
}

// PublishStart publishes an explicit start on jetflow.start.<workflow> with
// Nats-Msg-Id derived from the event key (first dedup layer). A payload
// the dispatcher would reject (CheckPayload) is refused here, before it
// is published.
func (c *Client) PublishStart(ctx context.Context, s Start) error {
	if err := workflow.ValidateName("workflow name", s.Workflow); err != nil {
		return err
	}
	if s.EventKey == "" {
		return fmt.Errorf("event key is required")
	}
	if _, err := c.CheckPayload(s.Payload); err != nil {
		return fmt.Errorf("start of %s: payload: %w", s.Workflow, err)
	}
	m := &nats.Msg{Subject: StartSubject(s.Workflow), Data: s.Payload, Header: nats.Header{}}
	m.Header.Set(HeaderEventKey, s.EventKey)
	m.Header.Set(HeaderMsgID, TriggerMsgID(s.Workflow, s.EventKey))
	if s.TraceParent != "" {
		if !tracing.Valid(s.TraceParent) {
			return fmt.Errorf("start of %s: %q is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)", s.Workflow, s.TraceParent)
		}
		m.Header.Set(tracing.Header, s.TraceParent)
	}
	if _, err := c.publishMsg(ctx, m); err != nil {
		return fmt.Errorf("publish start of %s: %w", s.Workflow, err)
	}
	return nil
}

// TriggerMsgID is the Nats-Msg-Id of a trigger with an event key.
func TriggerMsgID(workflowName, eventKey string) string {
	return "start/" + workflow.InstanceID(workflowName, eventKey)
}

// Publish publishes raw bytes to a subject through JetStream with optional
// headers (used by the CLI to fire trigger events).
func (c *Client) Publish(ctx context.Context, subject string, data []byte, headers map[string]string) (duplicate bool, err error) {
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	for k, v := range headers {
		m.Header.Set(k, v)
	}
	ack, err := c.publishMsg(ctx, m)
	if errors.Is(err, natsjs.ErrNoStreamResponse) {
		return false, fmt.Errorf("publish %s: %w", subject, ErrNotStored)
	}
	if err != nil {
		return false, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack.Duplicate, nil
}

// ErrNotStored matches a publish to a subject no stream captures: no
// stream stored the message, so nothing will ever read it.
var ErrNotStored = errors.New("no stream captures the subject")

// DeadLetter records a rejected message in the DLQ stream with the reason
// and where it came from. It keeps at most Config.DLQMaxPayload bytes of
// the payload, with the whole payload's size and SHA-256 in headers. The
// caller then terminates the original.
func (c *Client) DeadLetter(ctx context.Context, source string, d Delivery, component, reason string) error {
	m := d.received()
	r := rejected{data: m.Data(), subject: m.Subject(), header: m.m.Headers()}
	if md, err := m.m.Metadata(); err == nil {
		r.stream, r.seq, r.deliveries = md.Stream, md.Sequence.Stream, md.NumDelivered
	}
	return c.deadLetter(ctx, source, r, component, reason)
}

// rejected is a message on its way to the dead-letter stream: one a
// consumer received, or one read from its stream.
type rejected struct {
	data            []byte
	subject, stream string
	header          nats.Header
	seq, deliveries uint64
}

func (c *Client) deadLetter(ctx context.Context, source string, m rejected, component, reason string) error {
	data := m.data
	sum := sha256.Sum256(data)
	dl := &nats.Msg{Subject: DLQSubject(source), Data: data, Header: ownHeaders(m.header)}
	if dl.Header == nil {
		dl.Header = nats.Header{}
	}
	if len(data) > c.cfg.DLQMaxPayload {
		dl.Data = data[:c.cfg.DLQMaxPayload]
		dl.Header.Set(HeaderPayloadTruncated, "true")
	}
	dl.Header.Set(HeaderPayloadSize, strconv.Itoa(len(data)))
	dl.Header.Set(HeaderPayloadSHA256, hex.EncodeToString(sum[:]))
	dl.Header.Set(HeaderReason, reason)
	dl.Header.Set(HeaderComponent, component)
	dl.Header.Set(HeaderSourceSubject, m.subject)
	if id := m.header.Get(HeaderMsgID); id != "" {
		dl.Header.Set(HeaderSourceMsgID, id)
	}
	if next := m.header.Get(headerScheduleNext); next != "" && strings.HasPrefix(m.subject, firePrefix) {
		// The fire time of a schedule's fire, which a replay needs
		// (FireOf).
		dl.Header.Set(HeaderScheduleFireNext, next)
	}
	if m.stream != "" {
		dl.Header.Set(HeaderSourceStream, m.stream)
		dl.Header.Set(HeaderSourceSeq, strconv.FormatUint(m.seq, 10))
		dl.Header.Set(HeaderDeliveries, strconv.FormatUint(m.deliveries, 10))
		// The same stored message dead-lettered twice is recorded once.
		dl.Header.Set(HeaderMsgID, "dlq/"+m.stream+"/"+strconv.FormatUint(m.seq, 10))
	}
	if _, err := c.publishMsg(ctx, dl); err != nil {
		return fmt.Errorf("dead-letter message from %s: %w", m.subject, err)
	}
	return nil
}

// Signal sends a named signal with a JSON payload to an instance. id
// identifies this signal: sending the same id again is absorbed. The
// payload is checked as a trigger's is (CheckPayload) and stored as it
// is; an empty payload is null.
func (c *Client) Signal(ctx context.Context, instance, name string, payload []byte, id string) error {
	if err := workflow.ValidateName("signal", name); err != nil {
		return err
	}
	if err := workflow.ValidateName("signal id", id); err != nil {
		return err
	}
	payload, err := c.CheckPayload(payload)
	if err != nil {
		return fmt.Errorf("signal %s to %s: payload: %w", name, instance, err)
	}
	ref := workflow.SignalKey(instance, name, id)
	if err := c.PutDataEncoded(ctx, ref, payload, nil); err != nil {
		return err
	}
	return c.PublishEvent(ctx, workflow.Event{Kind: workflow.EventSignal, Instance: instance, Signal: name, OutputRef: ref},
		"signal/"+instance+"/"+name+"/"+id)
}

// Retry asks the dispatchers to continue a failed or cancelled instance
// (workflow.EventRetry) from its failed step, or from the step named by
// from. inst is the instance as the caller read it: the retry is
// applied only if no other retry was applied since (its Retries), and
// once however often it is published.
func (c *Client) Retry(ctx context.Context, inst *workflow.Instance, from string) error {
	ev := workflow.Event{Kind: workflow.EventRetry, Instance: inst.ID, Step: from, Attempt: inst.Retries}
	return c.PublishEvent(ctx, ev, workflow.RetryMsgID(inst.ID, inst.Retries+1))
}

// Cancel asks the dispatchers to cancel a running instance, recording
// reason as its error; cancelling again changes nothing.
func (c *Client) Cancel(ctx context.Context, instance, reason string) error {
	return c.PublishEvent(ctx, workflow.Event{Kind: workflow.EventCancel, Instance: instance, Reason: reason}, "cancel/"+instance)
}
