package jetstream

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/workflow"
)

// maxFlowConflicts bounds the CAS rounds of one flow record update.
const maxFlowConflicts = 200

// flow binds BucketFlow on first use.
type flow struct {
	mu sync.Mutex
	b  *bucket
}

func flowBucketConfig(replicas int) natsjs.KeyValueConfig {
	return natsjs.KeyValueConfig{
		Bucket:      BucketFlow,
		Description: "jetflow: concurrency slots and rate-limit windows, CAS-updated",
		History:     1,
		Replicas:    replicas,
		Storage:     natsjs.FileStorage,
	}
}

func (c *Client) flowKV(ctx context.Context) (natsjs.KeyValue, error) {
	c.flw.mu.Lock()
	defer c.flw.mu.Unlock()
	if c.flw.b == nil {
		b, err := c.bindBucket(ctx, BucketFlow)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w (concurrency and rate limits need a dispatcher of this version to provision it)", BucketFlow, err)
		}
		c.flw.b = b
	}
	return c.flw.b.kv(), nil
}

// updateFlow runs read -> fn -> CAS on a flow record until it commits or
// fn says there is nothing to write. A missing key reads as nil. fn
// returns the new value (nil: delete the key) and whether to write.
func (c *Client) updateFlow(ctx context.Context, key string, fn func(cur []byte) (next []byte, write bool, err error)) error {
	kv, err := c.flowKV(ctx)
	if err != nil {
		return err
	}
	for round := 0; round < maxFlowConflicts; round++ {
		var cur []byte
		var rev uint64
		e, err := c.get(ctx, c.flw.b, key)
		switch {
		case err == nil:
			cur, rev = e.Value(), e.Revision()
		case errors.Is(err, natsjs.ErrKeyNotFound), errors.Is(err, natsjs.ErrKeyDeleted):
		default:
			return fmt.Errorf("read flow record %s: %w", key, translate(err))
		}
		next, write, err := fn(cur)
		if err != nil || !write {
			return err
		}
		err = c.bounded(ctx, func(ctx context.Context) (err error) {
			switch {
			case next == nil && rev == 0:
				return nil
			case next == nil:
				return kv.Delete(ctx, key, natsjs.LastRevision(rev))
			case rev == 0:
				_, err = kv.Create(ctx, key, next)
			default:
				_, err = kv.Update(ctx, key, next, rev)
			}
			return err
		}, keySubject(BucketFlow, key))
		if err == nil {
			return nil
		}
		if err = translate(err); errors.Is(err, workflow.ErrConflict) || errors.Is(err, workflow.ErrExists) {
			continue
		}
		return fmt.Errorf("write flow record %s: %w", key, err)
	}
	return fmt.Errorf("flow record %s: %d CAS conflicts in a row: %w", key, maxFlowConflicts, workflow.ErrConflict)
}

// UpdateSlot applies fn to the slot record under key with read -> fn ->
// CAS, retrying on conflicts (fn may run several times: it must only
// compute). fn reports whether the record changed; an emptied record is
// deleted. It returns the record as committed (or as read, unchanged).
func (c *Client) UpdateSlot(ctx context.Context, key string, fn func(workflow.SlotRecord) (workflow.SlotRecord, bool)) (workflow.SlotRecord, error) {
	var out workflow.SlotRecord
	err := c.updateFlow(ctx, key, func(cur []byte) ([]byte, bool, error) {
		var r workflow.SlotRecord
		if cur != nil {
			var err error
			if r, err = DecodeSlotRecord(cur); err != nil {
				return nil, false, fmt.Errorf("slot record %s: %w", key, err)
			}
		}
		next, changed := fn(r)
		out = next
		if !changed {
			return nil, false, nil
		}
		if next.Empty() {
			return nil, true, nil
		}
		b, err := encode(next)
		return b, true, err
	})
	return out, err
}

// UpdateRate is UpdateSlot for a rate record (never deleted).
func (c *Client) UpdateRate(ctx context.Context, key string, fn func(workflow.RateRecord) (workflow.RateRecord, bool)) error {
	return c.updateFlow(ctx, key, func(cur []byte) ([]byte, bool, error) {
		var r workflow.RateRecord
		if cur != nil {
			var err error
			if r, err = DecodeRateRecord(cur); err != nil {
				return nil, false, fmt.Errorf("rate record %s: %w", key, err)
			}
		}
		next, changed := fn(r)
		if !changed {
			return nil, false, nil
		}
		b, err := encode(next)
		return b, true, err
	})
}

// GetSlot reads a slot record (empty when there is none).
func (c *Client) GetSlot(ctx context.Context, key string) (workflow.SlotRecord, error) {
	var r workflow.SlotRecord
	if _, err := c.flowKV(ctx); err != nil {
		return r, err
	}
	e, err := c.get(ctx, c.flw.b, key)
	switch {
	case errors.Is(err, natsjs.ErrKeyNotFound), errors.Is(err, natsjs.ErrKeyDeleted):
		return r, nil
	case err != nil:
		return r, fmt.Errorf("read slot record %s: %w", key, translate(err))
	}
	if r, err = DecodeSlotRecord(e.Value()); err != nil {
		return r, fmt.Errorf("slot record %s: %w", key, err)
	}
	return r, nil
}

// DecodeSlotRecord decodes a slot record; bytes that are not one give an
// error matching ErrMalformed.
func DecodeSlotRecord(b []byte) (workflow.SlotRecord, error) {
	var r workflow.SlotRecord
	if err := decode(b, &r); err != nil {
		return workflow.SlotRecord{}, err
	}
	for _, h := range append(append([]workflow.Holder{}, r.Holders...), r.Waiters...) {
		if h.Instance == "" {
			return workflow.SlotRecord{}, fmt.Errorf("%w: slot record lists a holder without an instance", ErrMalformed)
		}
	}
	return r, nil
}

// DecodeRateRecord decodes a rate record, as DecodeSlotRecord.
func DecodeRateRecord(b []byte) (workflow.RateRecord, error) {
	var r workflow.RateRecord
	if err := decode(b, &r); err != nil {
		return workflow.RateRecord{}, err
	}
	return r, nil
}

// SlotKeys lists the keys of the slot records that exist.
func (c *Client) SlotKeys(ctx context.Context) ([]string, error) {
	kv, err := c.flowKV(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := c.listKeys(ctx, kv)
	if err != nil {
		return nil, fmt.Errorf("list slot records: %w", err)
	}
	out := keys[:0]
	for _, k := range keys {
		if strings.HasPrefix(k, "slot.") {
			out = append(out, k)
		}
	}
	return out, nil
}
