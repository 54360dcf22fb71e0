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
func (c *Client) get(ctx context.Context, b *bucket, key string) (e natsjs.KeyValueEntry, err error) {
	err = c.bounded(ctx, func(ctx context.Context) error {
		e, err = b.kv().Get(ctx, key)
		if !errors.Is(err, nats.ErrNoResponders) {
			return err
		}
		fresh, berr := c.js.KeyValue(ctx, b.name)
		if berr != nil {
			return err
		}
		b.p.Store(&fresh)
		c.log.Info().Str("bucket", b.name).Msg("bucket rebound: its direct gets were switched off")
		e, err = fresh.Get(ctx, key)
		return err
	}, readSubjects(BucketStream(b.name))...)
	return e, err
}

// ErrRequestTimeout reports a request the server did not answer within
// Config.RequestTimeout: typically one that reached a stream leader just
// before it died. Whether it took effect is unknown; jetflow's writes are
// safe to retry (write-once keys, revision compare-and-swap, message ids).
var ErrRequestTimeout = errors.New("no answer from NATS within the request timeout")

// bounded runs one request under Config.RequestTimeout (and ctx). When
// that bound ran out while ctx had time left, the error is
// ErrRequestTimeout. When the server reports a permissions violation on
// a subject matching one of subjects (the request's) or on the inbox,
// the request ends at once with that *PermissionError.
func (c *Client) bounded(ctx context.Context, do func(context.Context) error, subjects ...string) error {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	err := c.guarded(rctx, subjects, do)
	if err != nil && !errors.Is(err, ErrPermissionDenied) && rctx.Err() != nil && ctx.Err() == nil {
		return c.timeoutErr(err)
	}
	return err
}

// ackErr is the error of a pipelined publish's acknowledgement: nats.go's
// async ack timeout (Config.RequestTimeout) becomes ErrRequestTimeout.
func (c *Client) ackErr(err error) error {
	if errors.Is(err, natsjs.ErrAsyncPublishTimeout) {
		return c.timeoutErr(err)
	}
	return err
}

func (c *Client) timeoutErr(err error) error {
	return fmt.Errorf("%w (%s): %w", ErrRequestTimeout, c.cfg.RequestTimeout, err)
}

// publishMsg is a synchronous publish bounded by Config.RequestTimeout.
func (c *Client) publishMsg(ctx context.Context, m *nats.Msg, opts ...natsjs.PublishOpt) (ack *natsjs.PubAck, err error) {
	err = c.bounded(ctx, func(ctx context.Context) error {
		ack, err = c.js.PublishMsg(ctx, m, opts...)
		return err
	}, m.Subject)
	return ack, err
}

// readSubjects are the requests that read a stream's messages (a KV
// get), with and without direct gets, and the stream lookup of a rebind.
func readSubjects(stream string) []string {
	return []string{APIMsgGet(stream), APIDirectGet(stream) + ".>", APIDirectGet(stream), APIStreamInfo(stream)}
}
