package jetstream

import (
	"context"
	"errors"
	"fmt"

	natsjs "github.com/nats-io/nats.go/jetstream"
)

// ErrNoDeadLetter matches a read of a JETFLOW_DLQ sequence that holds no
// dead letter (removed, or a replay mark).
var ErrNoDeadLetter = errors.New("no such dead letter")

// DeadLetterAt reads the dead letter stored at seq of JETFLOW_DLQ, with
// whether it was replayed.
func (c *Client) DeadLetterAt(ctx context.Context, seq uint64) (_ DeadLetter, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	s, err := c.js.Stream(ctx, StreamDLQ)
	if err != nil {
		return DeadLetter{}, fmt.Errorf("stream %s: %w", StreamDLQ, err)
	}
	m, err := s.GetMsg(ctx, seq)
	if errors.Is(err, natsjs.ErrMsgNotFound) {
		return DeadLetter{}, fmt.Errorf("dead letter %d: %w", seq, ErrNoDeadLetter)
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("read dead letter %d: %w", seq, err)
	}
	if isReplayMark(m.Subject) {
		return DeadLetter{}, fmt.Errorf("sequence %d is a replay mark: %w", seq, ErrNoDeadLetter)
	}
	d := deadLetterOf(m.Sequence, m.Time, m.Subject, m.Header, m.Data)
	if d.Replayed, err = c.Replayed(ctx, seq); err != nil {
		return DeadLetter{}, err
	}
	return d, nil
}

// DeadLetterCount is how many dead letters JETFLOW_DLQ holds (replay
// marks not counted).
func (c *Client) DeadLetterCount(ctx context.Context) (_ uint64, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	s, err := c.js.Stream(ctx, StreamDLQ)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", StreamDLQ, err)
	}
	info, err := s.Info(ctx, natsjs.WithSubjectFilter(dlqPrefix+"*"))
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", StreamDLQ, err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}
