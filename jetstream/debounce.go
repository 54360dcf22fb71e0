package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/workflow"
)

// Debounce windows (workflow.DebounceState) live in BucketSchedules under
// "debounce.<workflow>.<key digest>"; the timer of a window is a one-shot
// message schedule on jetflow.schedule.<workflow>.debounce.<key digest>
// that fires on jetflow.fire.<workflow>.debounce.<key digest>. A new
// timer on the subject replaces the one before.

const debounceToken = "debounce"

// DebounceID is the token that stands for an event key in debounce
// subjects and keys.
func DebounceID(eventKey string) string { return workflow.Digest([]byte(eventKey)) }

func debounceKey(workflowName, id string) string {
	return debounceToken + "." + workflowName + "." + id
}

// ParseDebounceFire reads the workflow and key token from the subject
// of a debounce timer's fire.
func ParseDebounceFire(subject string) (workflowName, id string, ok bool) {
	rest, ok := strings.CutPrefix(subject, firePrefix)
	if !ok {
		return "", "", false
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 || parts[1] != debounceToken || workflow.ValidateName("workflow name", parts[0]) != nil || workflow.ValidateName("key", parts[2]) != nil {
		return "", "", false
	}
	return parts[0], parts[2], true
}

// DebounceWindow reads a debounce window (nil when none is open) and its
// revision.
func (c *Client) DebounceWindow(ctx context.Context, workflowName, id string) (*workflow.DebounceState, uint64, error) {
	b, err := c.schedulesBucket(ctx)
	if err != nil {
		return nil, 0, err
	}
	e, err := c.get(ctx, b, debounceKey(workflowName, id))
	if errors.Is(err, natsjs.ErrKeyNotFound) || errors.Is(err, natsjs.ErrKeyDeleted) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read debounce window %s/%s: %w", workflowName, id, translate(err))
	}
	var st workflow.DebounceState
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, 0, fmt.Errorf("read debounce window %s/%s: %w: %v", workflowName, id, workflow.ErrMalformed, err)
	}
	return &st, e.Revision(), nil
}

// PutDebounceWindow writes a window if its revision is still rev (0: if
// none is open); st nil deletes it. A lost race matches
// workflow.ErrConflict.
func (c *Client) PutDebounceWindow(ctx context.Context, workflowName, id string, st *workflow.DebounceState, rev uint64) error {
	b, err := c.schedulesBucket(ctx)
	if err != nil {
		return err
	}
	key := debounceKey(workflowName, id)
	err = c.bounded(ctx, func(ctx context.Context) error {
		if st == nil {
			return b.kv().Delete(ctx, key, natsjs.LastRevision(rev))
		}
		v, err := json.Marshal(st)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = b.kv().Create(ctx, key, v)
			if errors.Is(err, natsjs.ErrKeyExists) {
				return fmt.Errorf("%w: %v", workflow.ErrConflict, err)
			}
			return err
		}
		_, err = b.kv().Update(ctx, key, v, rev)
		return err
	}, keySubject(BucketSchedules, key))
	if err != nil {
		return fmt.Errorf("write debounce window %s/%s: %w", workflowName, id, translate(err))
	}
	return nil
}

// ArmDebounce sets the timer of a window to fire at due (rounded up to
// the second), replacing the timer it had.
func (c *Client) ArmDebounce(ctx context.Context, workflowName, id string, due time.Time) error {
	m := &nats.Msg{Subject: schedulePrefix + workflowName + "." + debounceToken + "." + id, Header: nats.Header{}}
	if _, err := c.publishMsg(ctx, m, natsjs.WithScheduleAt(scheduleTime(due)), natsjs.WithScheduleTarget(firePrefix+workflowName+"."+debounceToken+"."+id)); err != nil {
		return fmt.Errorf("arm debounce timer of %s/%s: %w", workflowName, id, err)
	}
	return nil
}

// TriggerMessage reads the trigger message stored at seq: its payload
// and Content-Type header. A message gone from the stream (past the
// trigger retention, or erased) matches workflow.ErrNotFound.
func (c *Client) TriggerMessage(ctx context.Context, seq uint64) (data []byte, contentType string, err error) {
	var m *natsjs.RawStreamMsg
	err = c.bounded(ctx, func(ctx context.Context) error {
		s, err := c.js.Stream(ctx, StreamTriggers)
		if err != nil {
			return err
		}
		m, err = s.GetMsg(ctx, seq)
		return err
	}, readSubjects(StreamTriggers)...)
	if errors.Is(err, natsjs.ErrMsgNotFound) {
		return nil, "", fmt.Errorf("trigger message %d: %w", seq, workflow.ErrNotFound)
	}
	if err != nil {
		return nil, "", fmt.Errorf("trigger message %d: %w", seq, err)
	}
	return m.Data, m.Header.Get(HeaderContentType), nil
}
