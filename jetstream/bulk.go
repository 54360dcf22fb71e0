package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/tracing"
	"github.com/jetflow/jetflow/workflow"
)

// Headers of a bulk child's start message: the parent, step and index.
// The child's event key and the key of the input the parent already wrote
// derive from them (workflow.ChildEventKey, workflow.ChildInputKey), so
// the pointer does not carry them; pointers published by jetflow before
// 2026-12-01 carry both (Jetflow-Event-Key and HeaderInputRef), and they
// must match.
const (
	HeaderInputRef    = "Jetflow-Input-Ref"
	HeaderParent      = "Jetflow-Parent"
	HeaderParentStep  = "Jetflow-Parent-Step"
	HeaderParentIndex = "Jetflow-Parent-Index"
	// HeaderReconcile marks a poke of a bulk step's reconciliation round
	// (workflow.ReconcileChild): its value is the round.
	HeaderReconcile = "Jetflow-Reconcile"
)

// PutDataBatch writes many write-once user values (as PutData does),
// pipelined: each is a publish to the bucket's subject that expects no
// earlier value, which is what KV Create does. A value already there is not an error (keys are derived
// from (instance, step, index), values are deterministic).
func (c *Client) PutDataBatch(ctx context.Context, writes []workflow.Write) error {
	if len(writes) == 1 {
		return c.PutData(ctx, writes[0].Key, writes[0].Value)
	}
	mark := c.perms.mark()
	futures := make([]natsjs.PubAckFuture, 0, len(writes))
	encoded := make([][]byte, 0, len(writes))
	for _, w := range writes {
		b, err := EncodeValue(w.Value)
		if err != nil {
			return fmt.Errorf("put data %s: %w", w.Key, err)
		}
		b = storable(b)
		if len(b) > c.cfg.MaxPayload {
			return fmt.Errorf("%w: value for %s is %d bytes, the limit is %d", ErrTooLarge, w.Key, len(b), c.cfg.MaxPayload)
		}
		f, err := c.js.PublishAsync(keySubject(BucketData, w.Key), b, natsjs.WithExpectLastSequencePerSubject(0))
		if err != nil {
			return fmt.Errorf("put data %s: %w", w.Key, err)
		}
		futures = append(futures, f)
		encoded = append(encoded, b)
	}
	denied, stop := c.watchPublishes(mark, futures)
	defer stop()
	for i, f := range futures {
		select {
		case pe := <-denied:
			return pe
		case <-f.Ok():
			// Cache only what this call stored: an existing value stands.
			// Only the encoding: what later readers see is its decoding
			// (2.0 reads back as the integer 2), whoever reads it.
			c.cache.put(writes[i].Key, encoded[i], nil)
		case err := <-f.Err():
			var apiErr *natsjs.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == natsjs.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == natsjs.JSErrCodeStreamWrongLastSequenceConstant) {
				continue // already written
			}
			return fmt.Errorf("put data %s: %w", f.Msg().Subject, c.ackErr(err))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// PublishChildren publishes the start messages of bulk children: pointer
// messages with the event key and a Nats-Msg-Id derived from
// (parent, step, index), so a re-publish is absorbed; a reconciliation's
// poke carries its round (HeaderReconcile) and an id of its own.
func (c *Client) PublishChildren(ctx context.Context, children []workflow.Child) error {
	mark := c.perms.mark()
	futures := make([]natsjs.PubAckFuture, 0, len(children))
	for _, ch := range children {
		if ch.EventKey != workflow.ChildEventKey(ch.Parent.ID, ch.Parent.Step, ch.Parent.Index) ||
			ch.InputRef != workflow.ChildInputKey(ch.Parent.ID, ch.Parent.Step, ch.Parent.Index) {
			return fmt.Errorf("start child %s: event key and input %s are not the ones derived from the parent", ch.EventKey, ch.InputRef)
		}
		m := &nats.Msg{Subject: StartSubject(ch.Workflow), Header: nats.Header{}}
		id := TriggerMsgID(ch.Workflow, ch.EventKey)
		if ch.MsgID != "" {
			id = ch.MsgID
		}
		m.Header.Set(HeaderMsgID, id)
		if ch.Reconcile != "" {
			m.Header.Set(HeaderReconcile, ch.Reconcile)
		}
		m.Header.Set(HeaderParent, ch.Parent.ID)
		m.Header.Set(HeaderParentStep, ch.Parent.Step)
		m.Header.Set(HeaderParentIndex, strconv.Itoa(ch.Parent.Index))
		if ch.Trace != "" {
			m.Header.Set(tracing.Header, tracing.StepParent(ch.Trace, ch.Parent.ID, ch.Parent.Step))
		}
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("start child %s: %w", ch.EventKey, err)
		}
		futures = append(futures, f)
	}
	return c.waitAcks(ctx, mark, futures)
}

// PublishEvents publishes events to instances with their message ids.
func (c *Client) PublishEvents(ctx context.Context, events []workflow.OutEvent) error {
	mark := c.perms.mark()
	futures := make([]natsjs.PubAckFuture, 0, len(events))
	for _, e := range events {
		b, err := encode(e.Event)
		if err != nil {
			return err
		}
		m := &nats.Msg{Subject: EventSubject(e.Event.Instance), Data: b, Header: nats.Header{}}
		m.Header.Set(HeaderMsgID, e.MsgID)
		f, err := c.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("publish %s event for %s: %w", e.Event.Kind, e.Event.Instance, err)
		}
		futures = append(futures, f)
	}
	return c.waitAcks(ctx, mark, futures)
}

// CreateBarrier writes a write-once marker. It reports false when the
// marker already existed.
func (c *Client) CreateBarrier(ctx context.Context, key string) (bool, error) {
	err := c.createData(ctx, key, nil)
	if err == nil {
		return true, nil
	}
	err = translate(err)
	if errors.Is(err, workflow.ErrExists) || errors.Is(err, workflow.ErrConflict) {
		return false, nil
	}
	return false, fmt.Errorf("barrier %s: %w", key, err)
}

// CreateBarriers is CreateBarrier for many keys at once, pipelined:
// created[i] reports whether keys[i] was created by this call; errs[i] is
// set when that key's outcome is unknown (retry it).
func (c *Client) CreateBarriers(ctx context.Context, keys []string) (created []bool, errs []error) {
	created, errs = make([]bool, len(keys)), make([]error, len(keys))
	mark := c.perms.mark()
	futures := make([]natsjs.PubAckFuture, len(keys))
	for i, k := range keys {
		f, err := c.js.PublishAsync(keySubject(BucketData, k), nil, natsjs.WithExpectLastSequencePerSubject(0))
		if err != nil {
			errs[i] = fmt.Errorf("barrier %s: %w", k, err)
			continue
		}
		futures[i] = f
	}
	denied, stop := c.watchPublishes(mark, futures)
	defer stop()
	var pe *PermissionError
	for i, f := range futures {
		if f == nil {
			continue
		}
		if pe != nil {
			errs[i] = fmt.Errorf("barrier %s: %w", keys[i], pe)
			continue
		}
		select {
		case pe = <-denied:
			errs[i] = fmt.Errorf("barrier %s: %w", keys[i], pe)
		case <-f.Ok():
			created[i] = true
		case err := <-f.Err():
			var apiErr *natsjs.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == natsjs.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == natsjs.JSErrCodeStreamWrongLastSequenceConstant) {
				continue // there before
			}
			errs[i] = fmt.Errorf("barrier %s: %w", keys[i], c.ackErr(err))
		case <-ctx.Done():
			errs[i] = fmt.Errorf("barrier %s: %w", keys[i], ctx.Err())
		}
	}
	return created, errs
}

// BarrierIndexes returns the indexes of a bulk step's children whose
// completion passed its barrier, completed and failed. It asks the server
// for the data bucket stream's subjects under each barrier prefix (one
// request per prefix and 100k subjects); use it for recounts and
// repairs, not on the hot path. Keys of the data bucket are never
// deleted, so every subject is a key.
func (c *Client) BarrierIndexes(ctx context.Context, parent, step string) (completed, failed map[int]bool, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	s, err := c.js.Stream(ctx, "KV_"+BucketData)
	if err != nil {
		return nil, nil, fmt.Errorf("barriers of %s step %s: %w", parent, step, err)
	}
	read := func(ok bool) (map[int]bool, error) {
		prefix := keySubject(BucketData, workflow.ChildBarrierPrefix(parent, step, ok))
		info, err := s.Info(ctx, natsjs.WithSubjectFilter(prefix+"*"))
		if err != nil {
			return nil, fmt.Errorf("barriers of %s step %s: %w", parent, step, err)
		}
		out := make(map[int]bool, len(info.State.Subjects))
		for subj := range info.State.Subjects {
			if i, err := strconv.Atoi(strings.TrimPrefix(subj, prefix)); err == nil {
				out[i] = true
			}
		}
		return out, nil
	}
	if completed, err = read(true); err != nil {
		return nil, nil, err
	}
	if failed, err = read(false); err != nil {
		return nil, nil, err
	}
	return completed, failed, nil
}
