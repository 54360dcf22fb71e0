package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
)

// DeadLetter is one record of the dead-letter stream.
type DeadLetter struct {
	Seq           uint64
	Time          time.Time
	Subject       string // jetflow.dlq.<source>
	Reason        string
	Component     string
	SourceSubject string
	SourceStream  string
	SourceSeq     uint64
	// Deliveries is how often the source message had been delivered
	// when it was dead-lettered (1: on its first delivery).
	Deliveries uint64
	Data       []byte
}

// DeadLetters reads up to limit dead letters, oldest first.
func (c *Client) DeadLetters(ctx context.Context, limit int) (_ []DeadLetter, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	s, err := c.js.Stream(ctx, StreamDLQ)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamDLQ, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && len(out) < limit && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			if errors.Is(err, natsjs.ErrMsgNotFound) {
				continue
			}
			return nil, err
		}
		src, _ := strconv.ParseUint(m.Header.Get(HeaderSourceSeq), 10, 64)
		deliveries, _ := strconv.ParseUint(m.Header.Get(HeaderDeliveries), 10, 64)
		out = append(out, DeadLetter{
			Seq: m.Sequence, Time: m.Time, Subject: m.Subject,
			Reason: m.Header.Get(HeaderReason), Component: m.Header.Get(HeaderComponent),
			SourceSubject: m.Header.Get(HeaderSourceSubject), SourceStream: m.Header.Get(HeaderSourceStream),
			SourceSeq: src, Deliveries: deliveries, Data: m.Data,
		})
	}
	return out, nil
}

// StreamCounts reports how many messages each jetflow stream holds.
func (c *Client) StreamCounts(ctx context.Context) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, name := range []string{StreamTriggers, StreamEvents, StreamTasks, StreamDLQ} {
		s, err := c.js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return nil, err
		}
		out[name] = info.State.Msgs
	}
	return out, nil
}

// PublishRaw publishes bytes to any subject through JetStream (tests and
// tools use it to inject malformed messages).
func (c *Client) PublishRaw(ctx context.Context, subject string, data []byte) error {
	return c.guarded(ctx, []string{subject}, func(ctx context.Context) error {
		_, err := c.js.Publish(ctx, subject, data)
		return err
	})
}

// PurgeSubject deletes every message of a stream on subject (operators
// and fault-injection tests use it to lose tasks or timers on purpose).
func (c *Client) PurgeSubject(ctx context.Context, stream, subject string) (err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	return s.Purge(ctx, natsjs.WithPurgeSubject(subject))
}

// DetachStream makes a stream stop accepting publishes until the returned
// restore is called: its subjects are replaced by one nobody publishes
// to, so a publish gets "no responders" at once — what a client sees while
// a clustered stream has no leader. Fault-injection tests use it.
func (c *Client) DetachStream(ctx context.Context, stream string) (restore func(context.Context) error, err error) {
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	cfg := s.CachedInfo().Config
	detached := cfg
	detached.Subjects = []string{"jetflow.detached." + stream}
	if _, err := c.js.UpdateStream(ctx, detached); err != nil {
		return nil, fmt.Errorf("detach stream %s: %w", stream, err)
	}
	return func(ctx context.Context) error {
		if _, err := c.js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("reattach stream %s: %w", stream, err)
		}
		return nil
	}, nil
}

// PullsWaiting is how many pull requests the durable consumer of stream
// has waiting at the server: how many clients are ready for its messages
// right now (0 when the consumer does not exist yet).
func (c *Client) PullsWaiting(ctx context.Context, stream, consumer string) (int, error) {
	cons, err := c.js.Consumer(ctx, stream, consumer)
	if errors.Is(err, natsjs.ErrConsumerNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("consumer %s on %s: %w", consumer, stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s on %s: %w", consumer, stream, err)
	}
	return info.NumWaiting, nil
}
