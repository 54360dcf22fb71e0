package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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
	Deliveries  uint64
	SourceMsgID string // the rejected message's Nats-Msg-Id
	EventKey    string // its Jetflow-Event-Key header (explicit starts)
	// Size and SHA256 describe the whole rejected payload; Data holds at
	// most Config.DLQMaxPayload bytes of it (Truncated when less than all).
	Size      int
	SHA256    string
	Truncated bool
	Data      []byte
	// Header holds the rejected message's own headers (except NATS's
	// Nats-* headers), which a replay publishes again.
	Header nats.Header
	// Replayed: `jetflow dlq replay` published it again (DeadLetters
	// fills it in).
	Replayed bool
}

// dlqHeaders are the headers the dead-letter stream adds; the rest of a
// dead letter's headers are the rejected message's own.
var dlqHeaders = map[string]bool{
	HeaderReason: true, HeaderComponent: true, HeaderSourceSubject: true, HeaderSourceStream: true,
	HeaderSourceSeq: true, HeaderDeliveries: true, HeaderSourceMsgID: true, HeaderPayloadSize: true,
	HeaderPayloadSHA256: true, HeaderPayloadTruncated: true,
}

// deadLetterOf reads a dead letter from a stored DLQ message.
func deadLetterOf(seq uint64, at time.Time, subject string, h nats.Header, data []byte) DeadLetter {
	src, _ := strconv.ParseUint(h.Get(HeaderSourceSeq), 10, 64)
	deliveries, _ := strconv.ParseUint(h.Get(HeaderDeliveries), 10, 64)
	size, err := strconv.Atoi(h.Get(HeaderPayloadSize))
	if err != nil {
		size = len(data) // recorded before sizes were
	}
	return DeadLetter{
		Seq: seq, Time: at, Subject: subject,
		Reason: h.Get(HeaderReason), Component: h.Get(HeaderComponent),
		SourceSubject: h.Get(HeaderSourceSubject), SourceStream: h.Get(HeaderSourceStream),
		SourceSeq: src, Deliveries: deliveries, SourceMsgID: h.Get(HeaderSourceMsgID), EventKey: h.Get(HeaderEventKey),
		Size: size, SHA256: h.Get(HeaderPayloadSHA256), Truncated: h.Get(HeaderPayloadTruncated) == "true",
		Data: data, Header: ownHeaders(h),
	}
}

// ownHeaders returns the headers of h that the rejected message carried.
func ownHeaders(h nats.Header) nats.Header {
	var out nats.Header
	for k, vs := range h {
		if dlqHeaders[k] || strings.HasPrefix(k, "Nats-") {
			continue
		}
		if out == nil {
			out = nats.Header{}
		}
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// DeadLettersSince reads the dead letters of source ("trigger", "event",
// "task") recorded at or after since, oldest first, at most limit.
func (c *Client) DeadLettersSince(ctx context.Context, source string, since time.Time, limit int) ([]DeadLetter, error) {
	cons, err := c.js.OrderedConsumer(ctx, StreamDLQ, natsjs.OrderedConsumerConfig{
		FilterSubjects: []string{DLQSubject(source)},
		DeliverPolicy:  natsjs.DeliverByStartTimePolicy,
		OptStartTime:   &since,
	})
	if err != nil {
		return nil, fmt.Errorf("read stream %s: %w", StreamDLQ, err)
	}
	var out []DeadLetter
	for len(out) < limit {
		batch, err := cons.FetchNoWait(min(limit-len(out), 256))
		if err != nil {
			return nil, fmt.Errorf("read stream %s: %w", StreamDLQ, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			out = append(out, deadLetterOf(md.Sequence.Stream, md.Timestamp, m.Subject(), m.Headers(), m.Data()))
		}
		if err := batch.Error(); err != nil {
			return nil, fmt.Errorf("read stream %s: %w", StreamDLQ, err)
		}
		if n == 0 {
			break
		}
	}
	return out, nil
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
	replayed := map[uint64]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && len(out) < limit && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			if errors.Is(err, natsjs.ErrMsgNotFound) {
				continue
			}
			return nil, err
		}
		if isReplayMark(m.Subject) {
			if n, err := strconv.ParseUint(m.Header.Get(HeaderSourceSeq), 10, 64); err == nil {
				replayed[n] = true
			}
			continue
		}
		out = append(out, deadLetterOf(m.Sequence, m.Time, m.Subject, m.Header, m.Data))
	}
	if len(out) > 0 {
		// A mark comes after its letter, maybe beyond limit: one stream
		// info lists every marked sequence.
		marks, err := s.Info(ctx, natsjs.WithSubjectFilter(dlqReplayedPrefix+"*"))
		if err != nil {
			return nil, err
		}
		for subj := range marks.State.Subjects {
			if n, err := strconv.ParseUint(strings.TrimPrefix(subj, dlqReplayedPrefix), 10, 64); err == nil {
				replayed[n] = true
			}
		}
	}
	for i := range out {
		out[i].Replayed = replayed[out[i].Seq]
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

// PublishSchedule publishes a message schedule (a "Nats-Schedule" such as
// "@every 1s", firing on target) on subject, as any client could (tests
// use it to publish schedules jetflow did not make).
func (c *Client) PublishSchedule(ctx context.Context, subject, schedule, target string, data []byte) error {
	m := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	m.Header.Set(natsjs.ScheduleHeader, schedule)
	m.Header.Set(natsjs.ScheduleTargetHeader, target)
	_, err := c.js.PublishMsg(ctx, m)
	return err
}

// SetDuplicateWindow changes how long stream remembers a Nats-Msg-Id
// (tests use it to get past a window they began with a long one).
// Provisioning sets Config.DuplicateWindow again when it updates the
// stream.
func (c *Client) SetDuplicateWindow(ctx context.Context, stream string, window time.Duration) error {
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	cfg := s.CachedInfo().Config
	cfg.Duplicates = window
	if _, err := c.js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("set the duplicate window of %s: %w", stream, err)
	}
	return nil
}

// StreamUsage is how much a stream holds.
type StreamUsage struct {
	Msgs, Bytes uint64
}

// StreamState reads how many messages and bytes a stream holds.
func (c *Client) StreamState(ctx context.Context, stream string) (StreamUsage, error) {
	s, err := c.js.Stream(ctx, stream)
	if err != nil {
		return StreamUsage{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return StreamUsage{}, fmt.Errorf("stream %s: %w", stream, err)
	}
	return StreamUsage{Msgs: info.State.Msgs, Bytes: info.State.Bytes}, nil
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
	detached.Subjects = []string{detachedPrefix + stream}
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
	info, err := c.consumerInfo(ctx, stream, consumer)
	if info == nil || err != nil {
		return 0, err
	}
	return info.NumWaiting, nil
}

// AckPending is how many messages the durable consumer of stream has
// delivered that are not acknowledged yet: tasks some worker holds, for
// a task consumer (0 when the consumer does not exist yet).
func (c *Client) AckPending(ctx context.Context, stream, consumer string) (int, error) {
	info, err := c.consumerInfo(ctx, stream, consumer)
	if info == nil || err != nil {
		return 0, err
	}
	return info.NumAckPending, nil
}

// consumerInfo reads the state of the durable consumer of stream at the
// server; nil when the consumer does not exist (yet).
func (c *Client) consumerInfo(ctx context.Context, stream, consumer string) (*natsjs.ConsumerInfo, error) {
	cons, err := c.js.Consumer(ctx, stream, consumer)
	if errors.Is(err, natsjs.ErrConsumerNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", consumer, stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", consumer, stream, err)
	}
	return info, nil
}
