package jetstream

import (
	"context"
	"errors"
	"fmt"
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
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	e, err := b.kv().Get(rctx, key)
	if !errors.Is(err, nats.ErrNoResponders) {
		return e, c.timedOut(ctx, rctx, err)
	}
	fresh, berr := c.js.KeyValue(rctx, b.name)
	if berr != nil {
		return nil, err
	}
	b.p.Store(&fresh)
	c.log.Info().Str("bucket", b.name).Msg("bucket rebound: its direct gets were switched off")
	e, err = fresh.Get(rctx, key)
	return e, c.timedOut(ctx, rctx, err)
}

// ErrRequestTimeout reports a request the server did not answer within
// Config.RequestTimeout: typically one that reached a stream leader just
// before it died. Whether it took effect is unknown; jetflow's writes are
// safe to retry (write-once keys, revision compare-and-swap, message ids).
var ErrRequestTimeout = errors.New("no answer from NATS within the request timeout")

// reqCtx bounds one request by Config.RequestTimeout (and by ctx).
func (c *Client) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.RequestTimeout)
}

// timedOut marks err as ErrRequestTimeout when the request's own bound
// ran out (rctx, made by reqCtx from ctx, while ctx had time left) or a
// pipelined publish's acknowledgement timed out.
func (c *Client) timedOut(ctx, rctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrRequestTimeout) {
		return err
	}
	if errors.Is(err, natsjs.ErrAsyncPublishTimeout) || (rctx != nil && rctx.Err() != nil && ctx.Err() == nil) {
		return fmt.Errorf("%w (%s): %w", ErrRequestTimeout, c.cfg.RequestTimeout, err)
	}
	return err
}

// publishMsg is a synchronous publish bounded by Config.RequestTimeout.
func (c *Client) publishMsg(ctx context.Context, m *nats.Msg, opts ...natsjs.PublishOpt) (*natsjs.PubAck, error) {
	rctx, cancel := c.reqCtx(ctx)
	defer cancel()
	ack, err := c.js.PublishMsg(rctx, m, opts...)
	return ack, c.timedOut(ctx, rctx, err)
}
