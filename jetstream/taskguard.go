package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
)

// JETFLOW_TASKS captures jetflow.task.> and only workers consume it, one
// consumer per task type they serve. A message on the subject of a task
// type no workflow uses (published by anyone who may publish there) is
// read by nobody and would stay for good: dispatchers remove such
// messages (TaskTypesStored, RemoveTasks) and keep them as dead letters.

// TaskTypesStored returns, for every task type with messages stored in
// JETFLOW_TASKS, how many there are.
func (c *Client) TaskTypesStored(ctx context.Context) (map[string]uint64, error) {
	s, err := c.js.Stream(ctx, StreamTasks)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamTasks, err)
	}
	info, err := s.Info(ctx, natsjs.WithSubjectFilter(TaskSubjects))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamTasks, err)
	}
	out := make(map[string]uint64, len(info.State.Subjects))
	for subj, n := range info.State.Subjects {
		if t, ok := strings.CutPrefix(subj, taskPrefix); ok {
			out[t] = n
		}
	}
	return out, nil
}

// RemoveTasks dead-letters (source "task") and deletes up to limit
// messages of a task type that were stored before olderThan, oldest
// first, with reason; it returns how many it removed. Messages stored
// later are left for a later call, so a task type that becomes known
// meanwhile (its definition registered) keeps them.
func (c *Client) RemoveTasks(ctx context.Context, taskType string, olderThan time.Time, reason string, limit int) (int, error) {
	s, err := c.js.Stream(ctx, StreamTasks)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", StreamTasks, err)
	}
	subject := TaskSubject(taskType)
	removed := 0
	var seq uint64
	for removed < limit {
		m, err := s.GetMsg(ctx, seq, natsjs.WithGetMsgSubject(subject))
		if errors.Is(err, natsjs.ErrMsgNotFound) {
			return removed, nil
		}
		if err != nil {
			return removed, fmt.Errorf("read %s: %w", subject, err)
		}
		if !m.Time.Before(olderThan) {
			return removed, nil
		}
		r := rejected{data: m.Data, subject: m.Subject, header: m.Header, stream: StreamTasks, seq: m.Sequence}
		if err := c.deadLetter(ctx, "task", r, "dispatcher", reason); err != nil {
			return removed, err
		}
		if err := s.DeleteMsg(ctx, m.Sequence); err != nil && !errors.Is(err, natsjs.ErrMsgNotFound) {
			return removed, fmt.Errorf("remove message %d of %s: %w", m.Sequence, StreamTasks, err)
		}
		removed++
		seq = m.Sequence + 1
	}
	return removed, nil
}
