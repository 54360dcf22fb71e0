package jetstream

import (
	"context"
	"errors"
	"fmt"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/workflow"
)

// Msg is a message received from a jetflow consumer. It hides the NATS
// message type from the layers above the adapter.
type Msg struct {
	m natsjs.Msg
}

// Data is the payload.
func (m *Msg) Data() []byte { return m.m.Data() }

// Subject the message was published on.
func (m *Msg) Subject() string { return m.m.Subject() }

// Header returns one header value.
func (m *Msg) Header(key string) string { return m.m.Headers().Get(key) }

// Deliveries is how many times this message has been delivered, from 1.
func (m *Msg) Deliveries() uint64 {
	md, err := m.m.Metadata()
	if err != nil {
		return 1
	}
	return md.NumDelivered
}

// StreamSeq is the message's sequence in its stream: the same on every
// redelivery of the message, and different for every message stored (0 if
// the metadata cannot be read).
func (m *Msg) StreamSeq() uint64 {
	md, err := m.m.Metadata()
	if err != nil {
		return 0
	}
	return md.Sequence.Stream
}

// Ack acknowledges the message.
func (m *Msg) Ack() error { return m.m.Ack() }

// Nak asks for redelivery after delay (at once when delay is 0).
func (m *Msg) Nak(delay time.Duration) error {
	if delay <= 0 {
		return m.m.Nak()
	}
	return m.m.NakWithDelay(delay)
}

// InProgress extends the ack deadline.
func (m *Msg) InProgress() error { return m.m.InProgress() }

// Term stops redelivery for good.
func (m *Msg) Term(reason string) error { return m.m.TermWithReason(reason) }

// DecodeEvent decodes an event message.
func DecodeEvent(b []byte) (workflow.Event, error) {
	var ev workflow.Event
	if err := decode(b, &ev); err != nil {
		return ev, err
	}
	if ev.Instance == "" || ev.Kind == "" {
		return ev, fmt.Errorf("%w: event without kind or instance", ErrMalformed)
	}
	return ev, nil
}

// DecodeTask decodes a task message.
func DecodeTask(b []byte) (workflow.Task, error) {
	var t workflow.Task
	if err := decode(b, &t); err != nil {
		return t, err
	}
	if t.Instance == "" || t.Step == "" || t.Type == "" || t.Attempt < 1 || t.InputRef == "" {
		return t, fmt.Errorf("%w: task without instance, step, type, attempt or input", ErrMalformed)
	}
	return t, nil
}

// Pull requests of the dispatcher and worker consumers expire after
// pullExpiry, and the server sends a heartbeat on an idle one every
// pullHeartbeat; a pull that sees neither messages nor heartbeats for two
// heartbeats is presumed lost and replaced. With nats.go's defaults (30s,
// 15s) a lost pull stalled a worker for 30s: seen in 100,000-child
// fan-outs on two saturated cores, where the worker reported "no
// heartbeat received" and the run took 70s instead of 40s.
const (
	pullExpiry    = 5 * time.Second
	pullHeartbeat = 2 * time.Second
)

// Subscription is a running consumer; Stop ends delivery.
type Subscription struct {
	cc natsjs.ConsumeContext
}

// Stop stops delivering messages. Messages already handed to the handler
// are not affected.
func (s *Subscription) Stop() { s.cc.Stop() }

// ConsumeDispatcher delivers messages of the dispatcher consumer on stream
// (StreamTriggers or StreamEvents) to handler, keeping at most buffer
// messages in flight in the client.
func (c *Client) ConsumeDispatcher(ctx context.Context, stream string, buffer int, handler func(*Msg)) (*Subscription, error) {
	gctx, done := c.guard(ctx, jsAPI)
	cons, err := c.js.Consumer(gctx, stream, ConsumerDispatcher)
	if err = done(err); err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", ConsumerDispatcher, stream, err)
	}
	cc, err := cons.Consume(func(m natsjs.Msg) { handler(&Msg{m: m}) },
		natsjs.PullMaxMessages(buffer), natsjs.PullExpiry(pullExpiry), natsjs.PullHeartbeat(pullHeartbeat),
		natsjs.ConsumeErrHandler(func(_ natsjs.ConsumeContext, err error) {
			if errors.Is(err, natsjs.ErrNoHeartbeat) {
				c.pullStalls.Add(1) // nats.go asks for a new pull itself
			} else {
				c.log.Debug().Err(err).Str("stream", stream).Msg("consume")
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", stream, err)
	}
	return &Subscription{cc: cc}, nil
}

// TaskConsumer is the pull consumer of one task type.
type TaskConsumer struct {
	cons natsjs.Consumer
	c    *Client
}

// EnsureTaskConsumer creates or updates the durable consumer of a task
// type, shared by every worker that handles the type.
func (c *Client) EnsureTaskConsumer(ctx context.Context, taskType string) (*TaskConsumer, error) {
	if err := workflow.ValidateName("task type", taskType); err != nil {
		return nil, err
	}
	if c.noProvision.Load() {
		return c.bindTaskConsumer(ctx, taskType)
	}
	gctx, done := c.guard(ctx, jsAPI)
	cons, err := c.js.CreateOrUpdateConsumer(gctx, StreamTasks, natsjs.ConsumerConfig{
		Durable:       WorkerConsumer(taskType),
		Description:   "jetflow workers of task type " + taskType,
		FilterSubject: TaskSubject(taskType),
		AckPolicy:     natsjs.AckExplicitPolicy,
		AckWait:       c.cfg.WorkerAckWait,
		MaxAckPending: 10000,
		MaxDeliver:    -1,
		// Replicas 0 inherits the stream's count, as work-queue streams require.
		Replicas: 0,
	})
	if err = done(err); errors.Is(err, ErrPermissionDenied) {
		// A worker of a secured deployment: the consumer is provisioned.
		c.log.Info().Str("task_type", taskType).Msg("this NATS user may not create task consumers; binding the provisioned one")
		c.noProvision.Store(true)
		return c.bindTaskConsumer(ctx, taskType)
	}
	if err != nil {
		return nil, fmt.Errorf("task consumer %s: %w", taskType, err)
	}
	return &TaskConsumer{cons: cons, c: c}, nil
}

// TaskStream is a flow of tasks from one task consumer with a bounded
// client-side buffer.
type TaskStream struct {
	it natsjs.MessagesContext
	c  *Client
}

// Stream starts pulling tasks, keeping at most buffer of them in the
// client beyond those being handled.
func (tc *TaskConsumer) Stream(buffer int) (*TaskStream, error) {
	it, err := tc.cons.Messages(natsjs.PullMaxMessages(buffer), natsjs.PullExpiry(pullExpiry), natsjs.PullHeartbeat(pullHeartbeat))
	if err != nil {
		return nil, fmt.Errorf("pull tasks: %w", err)
	}
	return &TaskStream{it: it, c: tc.c}, nil
}

// ErrStreamClosed is returned by Next once the stream was drained.
var ErrStreamClosed = errors.New("task stream closed")

// Next blocks for the next task until ctx ends.
func (ts *TaskStream) Next(ctx context.Context) (*Msg, error) {
	for {
		m, err := ts.it.Next(natsjs.NextContext(ctx))
		switch {
		case errors.Is(err, natsjs.ErrNoHeartbeat) && ctx.Err() == nil:
			// The pull was presumed lost; the iterator has already asked
			// for a new one (see pullHeartbeat).
			ts.c.pullStalls.Add(1)
			continue
		case errors.Is(err, natsjs.ErrMsgIteratorClosed):
			return nil, ErrStreamClosed
		case err != nil:
			return nil, err
		}
		return &Msg{m: m}, nil
	}
}

// PullStalls is how often a pull request of this client's dispatcher or
// task consumers was presumed lost (no message and no heartbeat for two
// heartbeats, see pullHeartbeat) and replaced.
func (c *Client) PullStalls() uint64 { return c.pullStalls.Load() }

// Drain stops pulling and returns the buffered tasks, which the caller
// hands back (Nak) so other workers get them at once.
func (ts *TaskStream) Drain() []*Msg {
	ts.it.Drain()
	var out []*Msg
	for {
		m, err := ts.it.Next(natsjs.NextMaxWait(100 * time.Millisecond))
		if err != nil {
			return out
		}
		out = append(out, &Msg{m: m})
	}
}
