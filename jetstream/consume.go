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
	c *Client // counts and logs unreadable metadata (badMetadata)
}

// Delivery is a message as a consumer of the dispatcher receives it: what
// it reads and how it settles it. *Msg implements it. A type that embeds
// a Delivery implements it too, and may override what it reads or how it
// settles (tests wrap messages this way to withhold an ack); the adapter
// always reaches the received message underneath (DeadLetter, Erase).
type Delivery interface {
	Data() []byte
	Subject() string
	Header(key string) string
	Deliveries() uint64
	StreamSeq() uint64
	Ack() error
	Nak(delay time.Duration) error
	Term(reason string) error
	// received is the message as the consumer received it.
	received() *Msg
}

func (m *Msg) received() *Msg { return m }

// Data is the payload.
func (m *Msg) Data() []byte { return m.m.Data() }

// Subject the message was published on.
func (m *Msg) Subject() string { return m.m.Subject() }

// Header returns one header value.
func (m *Msg) Header(key string) string { return m.m.Headers().Get(key) }

// Deliveries is how many times this message has been delivered, from 1.
// If the JetStream metadata cannot be read (the message did not come
// from a consumer) it is 1, so the message is handled as a first
// delivery; the failure is counted in Client.BadMetadata and logged.
func (m *Msg) Deliveries() uint64 {
	md, err := m.m.Metadata()
	if err != nil {
		m.c.badMetadata(m.m.Subject(), err)
		return 1
	}
	return md.NumDelivered
}

// StreamSeq is the message's sequence in its stream: the same on every
// redelivery of the message, and different for every message stored (0 if
// the metadata cannot be read, counted in Client.BadMetadata and logged).
func (m *Msg) StreamSeq() uint64 {
	md, err := m.m.Metadata()
	if err != nil {
		m.c.badMetadata(m.m.Subject(), err)
		return 0
	}
	return md.Sequence.Stream
}

// badMetadata records a message whose JetStream metadata could not be
// read: counted always, logged as an error the first time and at debug
// level after, so a flood of them does not flood the log.
func (c *Client) badMetadata(subject string, err error) {
	if c == nil {
		return
	}
	ev := c.log.Debug()
	if c.badMeta.Add(1) == 1 {
		ev = c.log.Error()
	}
	ev.Err(err).Str("subject", subject).Msg("cannot read a message's JetStream metadata; it is handled as a first delivery (jetflow_bad_metadata_total counts these)")
}

// BadMetadata is how many times the JetStream metadata (delivery count,
// stream sequence) of a message this client received could not be read.
// It should stay 0; jetflow then treats the message as a first delivery
// with sequence 0.
func (c *Client) BadMetadata() uint64 { return c.badMeta.Load() }

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

// Erase removes m from its stream and overwrites its stored bytes. The
// dispatcher erases a trigger it dead-lettered: the dead letter keeps
// what an operator needs, and the trigger stream (limits retention, kept
// for TriggerRetention) need not keep the whole payload again.
func (c *Client) Erase(ctx context.Context, d Delivery) error {
	md, err := d.received().m.Metadata()
	if err != nil {
		return fmt.Errorf("erase message: %w", err)
	}
	return c.bounded(ctx, func(ctx context.Context) error {
		s, err := c.js.Stream(ctx, md.Stream)
		if err != nil {
			return fmt.Errorf("erase message %d of %s: %w", md.Sequence.Stream, md.Stream, err)
		}
		if err := s.SecureDeleteMsg(ctx, md.Sequence.Stream); err != nil && !errors.Is(err, natsjs.ErrMsgNotFound) {
			return fmt.Errorf("erase message %d of %s: %w", md.Sequence.Stream, md.Stream, err)
		}
		return nil
	})
}

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
// messages in flight in the client. Each delivery is a *Msg.
func (c *Client) ConsumeDispatcher(ctx context.Context, stream string, buffer int, handler func(Delivery)) (*Subscription, error) {
	gctx, done := c.guard(ctx, jsAPI)
	cons, err := c.js.Consumer(gctx, stream, ConsumerDispatcher)
	if err = done(err); err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", ConsumerDispatcher, stream, err)
	}
	cc, err := cons.Consume(func(m natsjs.Msg) { handler(&Msg{m: m, c: c}) },
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

// TaskBatch is the answer to one Fetch.
type TaskBatch struct {
	msgs chan *Msg
	err  error
}

// Messages delivers the tasks as the server sends them; it is closed
// when the request ends.
func (b *TaskBatch) Messages() <-chan *Msg { return b.msgs }

// Err is why the request ended, once Messages is closed: nil when it
// ended as requests do (n tasks came, it expired, ctx ended, or the pull
// was presumed lost and is counted in PullStalls); otherwise the
// server's or the connection's error, for example that the consumer no
// longer exists.
func (b *TaskBatch) Err() error { return b.err }

// Fetch asks the server for up to n tasks and returns at once. The tasks
// arrive on the batch's channel as the server delivers them; it is
// closed when the request ends: n tasks came, the request expired (after
// pullExpiry), ctx ended, the pull was presumed lost (no message and no
// heartbeat for two heartbeats, counted in PullStalls), or it failed
// (TaskBatch.Err). A task is delivered to this worker (and its ack wait
// runs) only once it is on the channel, so a worker that asks for no
// more than it can start or keep alive holds no task it does not
// heartbeat.
func (tc *TaskConsumer) Fetch(ctx context.Context, n int) (*TaskBatch, error) {
	fctx, cancel := context.WithTimeout(ctx, pullExpiry)
	b, err := tc.cons.Fetch(n, natsjs.FetchContext(fctx), natsjs.FetchHeartbeat(pullHeartbeat))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("pull tasks: %w", err)
	}
	out := &TaskBatch{msgs: make(chan *Msg, n)} // never blocks the forwarder: at most n come
	go func() {
		defer cancel()
		defer close(out.msgs)
		for m := range b.Messages() {
			out.msgs <- &Msg{m: m, c: tc.c}
		}
		switch err := b.Error(); {
		case errors.Is(err, natsjs.ErrNoHeartbeat):
			tc.c.pullStalls.Add(1)
		case err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded):
			out.err = fmt.Errorf("pull tasks: %w", err)
		}
	}()
	return out, nil
}

// PullStalls is how often a pull request of this client's dispatcher or
// task consumers was presumed lost (no message and no heartbeat for two
// heartbeats, see pullHeartbeat) and replaced.
func (c *Client) PullStalls() uint64 { return c.pullStalls.Load() }
