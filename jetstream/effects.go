package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/workflow"
)

// Effect is the record of one run-at-most-once step (a task step with
// once: true) in BucketEffects, under the step's effect key. A worker
// (with task tokens, a dispatcher on a worker's request: effectservice.go)
// writes it twice at most: the claim, with Create, before it calls the
// handler; the outcome, with a compare-and-swap on the claim's revision,
// after the handler returned. So a key has at most one claim and at most
// one outcome, whatever happens to workers and messages.
type Effect struct {
	Instance string `msgpack:"i"`
	Step     string `msgpack:"s"`
	// Attempt and Delivery identify the task message that claimed.
	Attempt  int    `msgpack:"a"`
	Delivery uint64 `msgpack:"d"`
	// Token is random per execution; it lets a claimer recognise its own
	// claim after an ambiguous write.
	Token   string    `msgpack:"tok"`
	Claimed time.Time `msgpack:"c"`

	// Done is set with the outcome. A claim without an outcome means the
	// claimer died (or hangs) between claiming and recording: the handler
	// may or may not have run, and may or may not have had its effect.
	Done bool `msgpack:"done,omitempty"`
	// OutputRef is the data key of the handler's output (success).
	OutputRef string `msgpack:"out,omitempty"`
	// Error is the handler's error (failure); empty on success.
	Error string    `msgpack:"err,omitempty"`
	Ended time.Time `msgpack:"e,omitempty"`
}

// effects binds BucketEffects on first use, so workers connected to a
// server provisioned by an older dispatcher fail only on once steps.
type effects struct {
	mu sync.Mutex
	b  *bucket
}

func effectsBucketConfig(replicas int) natsjs.KeyValueConfig {
	return natsjs.KeyValueConfig{
		Bucket:      BucketEffects,
		Description: "jetflow: claims and outcomes of run-at-most-once steps, by effect key",
		// The claim and the outcome are both kept.
		History:  2,
		Replicas: replicas,
		Storage:  natsjs.FileStorage,
	}
}

func (c *Client) effectsBucket(ctx context.Context) (*bucket, error) {
	c.effs.mu.Lock()
	defer c.effs.mu.Unlock()
	if c.effs.b != nil {
		return c.effs.b, nil
	}
	b, err := c.bindBucket(ctx, BucketEffects)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w (steps with once: true need a dispatcher of this version to provision it)", BucketEffects, err)
	}
	c.effs.b = b
	return b, nil
}

func (c *Client) effectsKV(ctx context.Context) (natsjs.KeyValue, error) {
	b, err := c.effectsBucket(ctx)
	if err != nil {
		return nil, err
	}
	return b.kv(), nil
}

// ClaimEffect writes a claim on an effect key if the key has none. It
// returns the claim's revision, or an error matching workflow.ErrExists
// when the key was claimed before (by any delivery, of any attempt).
//
// A write whose answer was lost is resolved by reading the key back: it
// is ours only if it holds e.Token. Otherwise the error is returned and
// nothing may run; a later delivery will then find the claim (if it did
// land) and treat its outcome as unknown — never as a licence to run.
func (c *Client) ClaimEffect(ctx context.Context, key string, e *Effect) (uint64, error) {
	kv, err := c.effectsKV(ctx)
	if err != nil {
		return 0, err
	}
	b, err := encode(e)
	if err != nil {
		return 0, err
	}
	var rev uint64
	err = c.bounded(ctx, func(ctx context.Context) (err error) {
		rev, err = kv.Create(ctx, key, b)
		return err
	}, keySubject(BucketEffects, key))
	if err == nil {
		return rev, nil
	}
	err = translate(err)
	if errors.Is(err, workflow.ErrExists) || errors.Is(err, workflow.ErrConflict) {
		return 0, fmt.Errorf("claim effect %s: %w", key, workflow.ErrExists)
	}
	cur, rev, gerr := c.GetEffect(ctx, key)
	switch {
	case gerr == nil && cur.Token == e.Token:
		return rev, nil
	case gerr == nil:
		return 0, fmt.Errorf("claim effect %s: %w", key, workflow.ErrExists)
	}
	return 0, fmt.Errorf("claim effect %s: %w", key, err)
}

// RecordEffect writes the outcome over the claim at revision rev; it fails
// with workflow.ErrConflict if the record changed since, so a key never
// gets a second outcome.
func (c *Client) RecordEffect(ctx context.Context, key string, e *Effect, rev uint64) (uint64, error) {
	kv, err := c.effectsKV(ctx)
	if err != nil {
		return 0, err
	}
	b, err := encode(e)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	err = c.bounded(ctx, func(ctx context.Context) (err error) {
		nrev, err = kv.Update(ctx, key, b, rev)
		return err
	}, keySubject(BucketEffects, key))
	if err != nil {
		return 0, fmt.Errorf("record effect %s at revision %d: %w", key, rev, translate(err))
	}
	return nrev, nil
}

// GetEffect reads the current record of an effect key and its revision;
// workflow.ErrNotFound when the key was never claimed.
func (c *Client) GetEffect(ctx context.Context, key string) (*Effect, uint64, error) {
	b, err := c.effectsBucket(ctx)
	if err != nil {
		return nil, 0, err
	}
	entry, err := c.get(ctx, b, key)
	if err != nil {
		return nil, 0, fmt.Errorf("get effect %s: %w", key, translate(err))
	}
	var e Effect
	if err := decode(entry.Value(), &e); err != nil {
		return nil, 0, fmt.Errorf("decode effect %s: %w", key, err)
	}
	return &e, entry.Revision(), nil
}

// EffectHistory returns the stored revisions of an effect key, oldest
// first: the claim, then the outcome if one was recorded.
func (c *Client) EffectHistory(ctx context.Context, key string) ([]*Effect, error) {
	kv, err := c.effectsKV(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := kv.History(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("effect %s history: %w", key, translate(err))
	}
	out := make([]*Effect, 0, len(entries))
	for _, entry := range entries {
		if entry.Operation() != natsjs.KeyValuePut {
			continue
		}
		var e Effect
		if err := decode(entry.Value(), &e); err != nil {
			return nil, fmt.Errorf("decode effect %s revision %d: %w", key, entry.Revision(), err)
		}
		out = append(out, &e)
	}
	return out, nil
}

// EffectKeys returns every claimed effect key, sorted.
func (c *Client) EffectKeys(ctx context.Context) ([]string, error) {
	kv, err := c.effectsKV(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := c.listKeys(ctx, kv)
	if err != nil {
		return nil, fmt.Errorf("list effects: %w", err)
	}
	return keys, nil
}
