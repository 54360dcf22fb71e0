package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// ErrAlreadyReplayed matches a replay of a dead letter that was replayed
// before (its replay mark exists).
var ErrAlreadyReplayed = errors.New("already replayed")

// ErrNotReplayable matches a replay of a dead letter that cannot be
// published again as it was: its payload was truncated, or it records no
// source subject.
var ErrNotReplayable = errors.New("cannot be replayed")

// DLQFilter selects dead letters. Empty fields select everything; a
// filter with no field set selects nothing unless All is set, so an
// empty command line never acts on the whole stream by accident.
type DLQFilter struct {
	// Seqs selects these sequences of JETFLOW_DLQ.
	Seqs []uint64
	// Reason selects dead letters whose reason contains this text.
	Reason string
	// Subject selects dead letters whose source subject matches this
	// NATS subject (wildcards * and > allowed).
	Subject string
	// All selects every dead letter the other fields allow.
	All bool
}

// Empty reports whether the filter selects nothing by itself.
func (f DLQFilter) Empty() bool {
	return len(f.Seqs) == 0 && f.Reason == "" && f.Subject == "" && !f.All
}

// Match reports whether the filter selects a dead letter.
func (f DLQFilter) Match(d DeadLetter) bool {
	if f.Empty() {
		return false
	}
	if len(f.Seqs) > 0 {
		found := false
		for _, s := range f.Seqs {
			found = found || s == d.Seq
		}
		if !found {
			return false
		}
	}
	if f.Reason != "" && !strings.Contains(d.Reason, f.Reason) {
		return false
	}
	if f.Subject != "" && !SubjectMatches(f.Subject, d.SourceSubject) {
		return false
	}
	return true
}

// SubjectMatches reports whether subject matches a NATS subject pattern
// with * (one token) and > (the rest).
func SubjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, t := range p {
		if t == ">" {
			return len(s) > i
		}
		if i >= len(s) || (t != "*" && t != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

// replayedSubject is the subject of the mark that dead letter seq was
// replayed: one message per replayed dead letter, in JETFLOW_DLQ itself,
// written only if the subject holds none yet.
func replayedSubject(seq uint64) string { return dlqReplayedPrefix + strconv.FormatUint(seq, 10) }

// isReplayMark reports whether a JETFLOW_DLQ message is a replay mark
// rather than a dead letter.
func isReplayMark(subject string) bool { return strings.HasPrefix(subject, dlqReplayedPrefix) }

// Replayed reports whether dead letter seq has a replay mark.
func (c *Client) Replayed(ctx context.Context, seq uint64) (bool, error) {
	s, err := c.js.Stream(ctx, StreamDLQ)
	if err != nil {
		return false, fmt.Errorf("stream %s: %w", StreamDLQ, err)
	}
	_, err = s.GetLastMsgForSubject(ctx, replayedSubject(seq))
	switch {
	case errors.Is(err, natsjs.ErrMsgNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("read replay mark of dead letter %d: %w", seq, err)
	}
	return true, nil
}

// replayMsgIDPrefix starts the Nats-Msg-Id of a replayed dead letter.
const replayMsgIDPrefix = "replay/"

// Replayable returns why dead letter d cannot be published again on its
// source subject, an error matching ErrNotReplayable, or nil when it
// can (whether it was replayed already aside). A truncated payload
// cannot. Under jetflow.*, only the subjects
// jetflow reads from a client take one: explicit starts, events, tasks,
// and the fires of schedules and debounce timers. A fire of a schedule
// is read by its fire time, which the server gave it in a header no
// client may publish: it is replayable only when its dead letter kept
// that time (HeaderScheduleFireNext), or when it is a manual fire
// (its time is its own header).
func Replayable(d DeadLetter) error {
	not := func(format string, args ...any) error {
		return fmt.Errorf("dead letter %d: %w: %s", d.Seq, ErrNotReplayable, fmt.Sprintf(format, args...))
	}
	s := d.SourceSubject
	switch {
	case d.Truncated:
		return not("the dead-letter stream kept %d of its %d bytes", len(d.Data), d.Size)
	case s == "":
		return not("it records no source subject")
	case strings.HasPrefix(s, firePrefix):
		if _, _, ok := ParseDebounceFire(s); ok {
			return nil // the window's record decides what starts
		}
		if d.Header.Get(HeaderScheduleManual) == "" && d.Header.Get(HeaderScheduleFireNext) == "" {
			return not("the fire on %s kept no fire time (%s), so a replay could not name its instance", s, HeaderScheduleFireNext)
		}
		return nil
	case !isReserved(s), strings.HasPrefix(s, startPrefix), strings.HasPrefix(s, eventPrefix), strings.HasPrefix(s, taskPrefix):
		return nil
	}
	return not("its source subject %q is not one jetflow reads", s)
}

// ReplayDeadLetter publishes dead letter d again on its source subject,
// with the payload and the headers it was rejected with, as a new message
// (Nats-Msg-Id "replay/<seq>"), and marks it replayed first: a second
// replay of the same dead letter fails with ErrAlreadyReplayed, however
// many operators run it at once. A truncated payload, or a subject
// jetflow does not read from clients, fails with ErrNotReplayable; a
// fire of a schedule is replayed with the fire time its dead letter kept
// (HeaderScheduleFireNext), so it starts the instance the fire named. If the publish fails, the mark is removed again, so
// the replay can be retried.
func (c *Client) ReplayDeadLetter(ctx context.Context, d DeadLetter) error {
	if err := Replayable(d); err != nil {
		return err
	}
	mark := &nats.Msg{Subject: replayedSubject(d.Seq), Header: nats.Header{}}
	mark.Header.Set(HeaderSourceSeq, strconv.FormatUint(d.Seq, 10))
	mark.Header.Set(HeaderSourceSubject, d.SourceSubject)
	if _, err := c.publishMsg(ctx, mark, natsjs.WithExpectLastSequencePerSubject(0)); err != nil {
		var apiErr *natsjs.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == natsjs.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == natsjs.JSErrCodeStreamWrongLastSequenceConstant) {
			return fmt.Errorf("dead letter %d: %w", d.Seq, ErrAlreadyReplayed)
		}
		return fmt.Errorf("mark dead letter %d replayed: %w", d.Seq, err)
	}
	m := &nats.Msg{Subject: d.SourceSubject, Data: d.Data, Header: nats.Header{}}
	for k, vs := range d.Header {
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
	if d.EventKey != "" && m.Header.Get(HeaderEventKey) == "" {
		m.Header.Set(HeaderEventKey, d.EventKey)
	}
	m.Header.Set(HeaderMsgID, replayMsgIDPrefix+strconv.FormatUint(d.Seq, 10))
	if _, err := c.publishMsg(ctx, m); err != nil {
		if uerr := c.unmark(ctx, d.Seq); uerr != nil {
			return fmt.Errorf("replay dead letter %d on %s: %w (and its replay mark could not be removed: %v)", d.Seq, d.SourceSubject, err, uerr)
		}
		return fmt.Errorf("replay dead letter %d on %s: %w", d.Seq, d.SourceSubject, err)
	}
	return nil
}

// PurgeReplayMark removes the replay mark of dead letter seq, so it can
// be replayed again (jetflow dlq replay --force).
func (c *Client) PurgeReplayMark(ctx context.Context, seq uint64) error { return c.unmark(ctx, seq) }

// unmark removes the replay mark of dead letter seq. It deletes the mark
// by its sequence rather than purging its subject, so an operator needs
// no permission to purge the dead-letter stream.
func (c *Client) unmark(ctx context.Context, seq uint64) error {
	s, err := c.js.Stream(ctx, StreamDLQ)
	if err != nil {
		return err
	}
	for {
		m, err := s.GetLastMsgForSubject(ctx, replayedSubject(seq))
		if errors.Is(err, natsjs.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, natsjs.ErrMsgNotFound) && !isNotFoundAPI(err) {
			return err
		}
	}
}

// PurgeDeadLetter removes dead letter seq (and its replay mark) from
// JETFLOW_DLQ. Removing one that is already gone is not an error.
func (c *Client) PurgeDeadLetter(ctx context.Context, seq uint64) error {
	s, err := c.js.Stream(ctx, StreamDLQ)
	if err != nil {
		return fmt.Errorf("stream %s: %w", StreamDLQ, err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, natsjs.ErrMsgNotFound) && !isNotFoundAPI(err) {
		return fmt.Errorf("remove dead letter %d: %w", seq, err)
	}
	if err := c.unmark(ctx, seq); err != nil {
		return fmt.Errorf("remove replay mark of dead letter %d: %w", seq, err)
	}
	return nil
}

// isNotFoundAPI reports a JetStream API error saying the message does not
// exist (deleting a message that is gone).
func isNotFoundAPI(err error) bool {
	var apiErr *natsjs.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == natsjs.JSErrCodeMessageNotFound || apiErr.Code == 404)
}
