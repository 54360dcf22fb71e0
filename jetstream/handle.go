package jetstream

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// bucket is a KV bucket handle that reads can replace while it is in use.
// nats.go fixes a handle's read path when it binds: with direct gets if
// the stream allowed them then. A bucket whose direct gets were switched
// off later (jetflow's buckets made by an older version, see
// bucketStream) answers such reads with "no responders", forever; get
// rebinds once and retries.
type bucket struct {
	name string
	p    atomic.Pointer[natsjs.KeyValue]
}

func (c *Client) bindBucket(ctx context.Context, name string) (*bucket, error) {
	kv, err := c.js.KeyValue(ctx, name)
	if err != nil {
		return nil, err
	}
	b := &bucket{name: name}
	b.p.Store(&kv)
	return b, nil
}

// kv returns the current handle.
func (b *bucket) kv() natsjs.KeyValue { return *b.p.Load() }

// get reads a key, rebinding the bucket when the read went to a direct-get
// path nobody answers.
func (c *Client) get(ctx context.Context, b *bucket, key string) (natsjs.KeyValueEntry, error) {
	e, err := b.kv().Get(ctx, key)
	if !errors.Is(err, nats.ErrNoResponders) {
		return e, err
	}
	fresh, berr := c.js.KeyValue(ctx, b.name)
	if berr != nil {
		return nil, err
	}
	b.p.Store(&fresh)
	c.log.Info().Str("bucket", b.name).Msg("bucket rebound: its direct gets were switched off")
	return fresh.Get(ctx, key)
}
