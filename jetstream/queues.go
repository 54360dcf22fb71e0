package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
)

// TaskQueue is the state of the tasks of one task type in StreamTasks.
type TaskQueue struct {
	// TaskType is the type (the last token of the task subject).
	TaskType string `json:"task_type"`
	// Stored is how many tasks of the type the stream holds: waiting or
	// held by a worker (a work-queue stream removes a task when it is
	// acknowledged).
	Stored uint64 `json:"stored"`
	// Pending is how many were not delivered to any worker yet; without a
	// consumer (no worker of the type ever started), every stored one.
	Pending uint64 `json:"pending"`
	// AckPending is how many a worker holds (delivered, not acknowledged).
	AckPending int `json:"ack_pending"`
	// Redelivered is how many of those were delivered more than once.
	Redelivered int `json:"redelivered"`
	// PullsWaiting is how many pull requests of workers wait at the server
	// for tasks of the type right now: 0 while no worker pulls it.
	PullsWaiting int `json:"pulls_waiting"`
	// Consumer reports whether the type's durable consumer exists.
	Consumer bool `json:"consumer"`
}

// TaskQueues reads, in two requests, the state of every task type that
// has a consumer or stored tasks, sorted by type.
func (c *Client) TaskQueues(ctx context.Context) (_ []TaskQueue, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	s, err := c.js.Stream(ctx, StreamTasks)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamTasks, err)
	}
	info, err := s.Info(ctx, natsjs.WithSubjectFilter(TaskSubjects))
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamTasks, err)
	}
	queues := map[string]*TaskQueue{}
	queue := func(t string) *TaskQueue {
		q := queues[t]
		if q == nil {
			q = &TaskQueue{TaskType: t}
			queues[t] = q
		}
		return q
	}
	for subj, n := range info.State.Subjects {
		if t, ok := strings.CutPrefix(subj, taskPrefix); ok {
			q := queue(t)
			q.Stored, q.Pending = n, n
		}
	}
	list := s.ListConsumers(ctx)
	for ci := range list.Info() {
		t, ok := strings.CutPrefix(ci.Name, workerConsumerPrefix)
		if !ok {
			continue
		}
		q := queue(t)
		q.Consumer = true
		q.Pending = ci.NumPending
		q.AckPending = ci.NumAckPending
		q.Redelivered = ci.NumRedelivered
		q.PullsWaiting = ci.NumWaiting
	}
	if err := list.Err(); err != nil && !errors.Is(err, natsjs.ErrEndOfData) {
		return nil, fmt.Errorf("consumers of %s: %w", StreamTasks, err)
	}
	out := make([]TaskQueue, 0, len(queues))
	for _, q := range queues {
		out = append(out, *q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TaskType < out[j].TaskType })
	return out, nil
}

// TaskQueue reads the state of the tasks of one type.
func (c *Client) TaskQueue(ctx context.Context, taskType string) (_ TaskQueue, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	q := TaskQueue{TaskType: taskType}
	s, err := c.js.Stream(ctx, StreamTasks)
	if err != nil {
		return q, fmt.Errorf("stream %s: %w", StreamTasks, err)
	}
	info, err := s.Info(ctx, natsjs.WithSubjectFilter(TaskSubject(taskType)))
	if err != nil {
		return q, fmt.Errorf("stream %s: %w", StreamTasks, err)
	}
	q.Stored = info.State.Subjects[TaskSubject(taskType)]
	q.Pending = q.Stored
	cons, err := s.Consumer(ctx, WorkerConsumer(taskType))
	if errors.Is(err, natsjs.ErrConsumerNotFound) {
		return q, nil
	}
	if err != nil {
		return q, fmt.Errorf("consumer %s: %w", WorkerConsumer(taskType), err)
	}
	ci := cons.CachedInfo()
	q.Consumer = true
	q.Pending, q.AckPending, q.Redelivered, q.PullsWaiting = ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting
	return q, nil
}

// Connected reports whether the client is connected to a NATS server now.
func (c *Client) Connected() bool { return c.nc.IsConnected() }

// Stored is when the message was stored in its stream (zero if the
// metadata cannot be read).
func (m *Msg) Stored() time.Time {
	md, err := m.m.Metadata()
	if err != nil {
		return time.Time{}
	}
	return md.Timestamp
}

// TaskMessage is what FindTask found of one task message.
type TaskMessage struct {
	// Found: the message is in StreamTasks.
	Found bool
	// Seq and Stored: its stream sequence and store time.
	Seq    uint64
	Stored time.Time
	// Delivered: the type's consumer has delivered it at least once
	// (it is held by a worker, or waits for its redelivery).
	Delivered bool
	// Ahead: tasks of the type stored before it and not delivered yet.
	Ahead int
}

// maxTaskScan bounds how many messages FindTask reads.
const maxTaskScan = 2000

// FindTask looks for the task message with Nats-Msg-Id msgID among the
// stored tasks of its type, oldest first, reading at most 2000 of them
// (a message further back is reported not found). It reads, never
// consumes: a direct read by subject, then the type's consumer state.
func (c *Client) FindTask(ctx context.Context, taskType, msgID string) (_ TaskMessage, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	var out TaskMessage
	s, err := c.js.Stream(ctx, StreamTasks)
	if err != nil {
		return out, fmt.Errorf("stream %s: %w", StreamTasks, err)
	}
	subject := TaskSubject(taskType)
	var seqs []uint64
	for seq, n := uint64(1), 0; n < maxTaskScan; n++ {
		m, err := s.GetMsg(ctx, seq, natsjs.WithGetMsgSubject(subject))
		if errors.Is(err, natsjs.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return out, fmt.Errorf("read %s: %w", subject, err)
		}
		if m.Header.Get(HeaderMsgID) == msgID {
			out.Found, out.Seq, out.Stored = true, m.Sequence, m.Time
			break
		}
		seqs = append(seqs, m.Sequence)
		seq = m.Sequence + 1
	}
	if !out.Found {
		return out, nil
	}
	cons, err := s.Consumer(ctx, WorkerConsumer(taskType))
	if errors.Is(err, natsjs.ErrConsumerNotFound) {
		out.Ahead = len(seqs)
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("consumer %s: %w", WorkerConsumer(taskType), err)
	}
	delivered := cons.CachedInfo().Delivered.Stream
	out.Delivered = out.Seq <= delivered
	for _, q := range seqs {
		if q > delivered {
			out.Ahead++
		}
	}
	return out, nil
}
