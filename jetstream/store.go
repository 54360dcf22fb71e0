package jetstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/jetflow/jetflow/workflow"
)

const (
	errCodeSubjectOverlap = 10065
)

// translate maps NATS errors to domain errors at the boundary.
func translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, natsjs.ErrKeyNotFound), errors.Is(err, natsjs.ErrKeyDeleted):
		return fmt.Errorf("%w: %v", workflow.ErrNotFound, err)
	case errors.Is(err, natsjs.ErrKeyRevisionMismatch):
		// Matches both 10071 and 10164 (R3 under contention).
		return fmt.Errorf("%w: %v", workflow.ErrConflict, err)
	case errors.Is(err, natsjs.ErrKeyExists):
		return fmt.Errorf("%w: %v", workflow.ErrExists, err)
	}
	return err
}

// GetInstance reads an instance and its revision.
func (c *Client) GetInstance(ctx context.Context, id string) (*workflow.Instance, uint64, error) {
	e, err := c.get(ctx, c.inst, id)
	if err != nil {
		return nil, 0, fmt.Errorf("get instance %s: %w", id, translate(err))
	}
	var in workflow.Instance
	if err := decode(e.Value(), &in); err != nil {
		return nil, 0, fmt.Errorf("decode instance %s: %w", id, err)
	}
	return &in, e.Revision(), nil
}

// DecodeInstance decodes an instance record as stored in the instances
// bucket (`nats kv get --raw jetflow_instances ID`). Errors match
// ErrMalformed.
func DecodeInstance(b []byte) (*workflow.Instance, error) {
	var in workflow.Instance
	if err := decode(b, &in); err != nil {
		return nil, err
	}
	return &in, nil
}

// PutInstance writes an instance: a create when rev is 0 (ErrExists if it
// is there), otherwise a compare-and-swap on rev (ErrConflict if another
// writer got there first). It returns the new revision. With expires set
// and Config.InstanceRetention above zero, the write carries a TTL of the
// retention: NATS removes the key that long after this write unless a
// later write replaces it (the dispatcher sets expires for ended
// instances only).
func (c *Client) PutInstance(ctx context.Context, in *workflow.Instance, rev uint64, expires bool) (uint64, error) {
	b, err := encode(in)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	err = c.bounded(ctx, func(ctx context.Context) (err error) {
		switch {
		case expires && c.cfg.InstanceRetention > 0:
			// The KV API has no TTL on Update; this is the same write (the
			// subject of the key, the expected last revision) with Nats-TTL.
			var ack *natsjs.PubAck
			ack, err = c.js.Publish(ctx, keySubject(BucketInstances, in.ID), b,
				natsjs.WithExpectLastSequencePerSubject(rev), natsjs.WithMsgTTL(c.cfg.InstanceRetention))
			if err == nil {
				nrev = ack.Sequence
			}
		case rev == 0:
			nrev, err = c.inst.kv().Create(ctx, in.ID, b)
		default:
			nrev, err = c.inst.kv().Update(ctx, in.ID, b, rev)
		}
		return err
	}, keySubject(BucketInstances, in.ID))
	if err != nil {
		err = translate(err)
		if rev == 0 && errors.Is(err, workflow.ErrConflict) {
			// Create races report "wrong last sequence" too.
			err = fmt.Errorf("%w: %v", workflow.ErrExists, err)
		}
		return 0, fmt.Errorf("put instance %s at revision %d: %w", in.ID, rev, err)
	}
	return nrev, nil
}

// ListInstanceIDs returns every instance id, sorted.
func (c *Client) ListInstanceIDs(ctx context.Context) ([]string, error) {
	ids, err := c.listKeys(ctx, c.inst.kv())
	if err != nil {
		return nil, fmt.Errorf("list instances: %w", err)
	}
	return ids, nil
}

// listKeys returns every key of a bucket, sorted.
func (c *Client) listKeys(ctx context.Context, kv natsjs.KeyValue) (keys []string, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys, ctx.Err()
}

// PutData writes a user value as JSON (EncodeValue) under a write-once
// key. Writing the same key again is not an error: keys are derived from
// (instance, step, attempt) and values are deterministic, so the first
// write stands. A value that cannot be encoded matches ErrMalformed, one
// over Config.MaxPayload ErrTooLarge.
func (c *Client) PutData(ctx context.Context, key string, v any) error {
	b, err := EncodeValue(v)
	if err != nil {
		return fmt.Errorf("put data %s: %w", key, err)
	}
	return c.PutDataEncoded(ctx, key, b, nil)
}

// PutDataEncoded is PutData for a value already encoded as JSON and
// checked (workflow.CheckJSON); decoded, when not nil, is cached and must
// be what DecodeValue gives for b.
func (c *Client) PutDataEncoded(ctx context.Context, key string, b []byte, decoded any) error {
	b = storable(b)
	if len(b) > c.cfg.MaxPayload {
		return fmt.Errorf("%w: value for %s is %d bytes, the limit is %d", ErrTooLarge, key, len(b), c.cfg.MaxPayload)
	}
	if err := c.createData(ctx, key, b); err != nil {
		err = translate(err)
		if !errors.Is(err, workflow.ErrExists) && !errors.Is(err, workflow.ErrConflict) {
			return fmt.Errorf("put data %s: %w", key, err)
		}
		return nil // the first value stands; do not cache ours
	}
	c.cache.put(key, b, decoded)
	return nil
}

// InlineLimit is the largest value copied into a task message next to its
// pointer, saving the worker a read of the data bucket.
const InlineLimit = 1024

// InlineData returns the encoded value under key when it is cached and at
// most InlineLimit bytes.
func (c *Client) InlineData(key string) ([]byte, bool) {
	raw, _, ok := c.cache.get(key)
	if !ok || len(raw) > InlineLimit {
		return nil, false
	}
	return raw, true
}

// CreateData writes a value under a write-once key and reports ErrExists
// if the key already holds one (used when "first one wins" matters).
func (c *Client) CreateData(ctx context.Context, key string, b []byte) error {
	if len(b) > c.cfg.MaxPayload {
		return fmt.Errorf("%w: value for %s is %d bytes, the limit is %d", ErrTooLarge, key, len(b), c.cfg.MaxPayload)
	}
	if err := c.createData(ctx, key, b); err != nil {
		err = translate(err)
		if errors.Is(err, workflow.ErrConflict) {
			err = fmt.Errorf("%w: %v", workflow.ErrExists, err)
		}
		return fmt.Errorf("create data %s: %w", key, err)
	}
	return nil
}

// createData is KV Create in the data bucket, bounded by
// Config.RequestTimeout.
func (c *Client) createData(ctx context.Context, key string, b []byte) error {
	return c.bounded(ctx, func(ctx context.Context) error {
		_, err := c.data.kv().Create(ctx, key, b)
		return err
	}, keySubject(BucketData, key), APIMsgGet(BucketStream(BucketData)))
}

// DataRaw returns the encoded value under key.
func (c *Client) DataRaw(ctx context.Context, key string) ([]byte, error) {
	e, err := c.get(ctx, c.data, key)
	if err != nil {
		return nil, fmt.Errorf("get data %s: %w", key, translate(err))
	}
	return e.Value(), nil
}

// LoadData returns the decoded value under key (DecodeValue), from the
// cache when it is there. A stored value that cannot be decoded matches
// ErrMalformed.
func (c *Client) LoadData(ctx context.Context, key string) (any, error) {
	b, v, ok := c.cache.get(key)
	if ok && v != nil {
		return v, nil
	}
	if !ok {
		var err error
		if b, err = c.DataRaw(ctx, key); err != nil {
			return nil, err
		}
	}
	v, err := DecodeValue(b)
	if err != nil {
		return nil, fmt.Errorf("data %s: %w", key, err)
	}
	c.cache.put(key, b, v)
	return v, nil
}

// DataView adapts the client to workflow.Data for one context.
func (c *Client) DataView(ctx context.Context) workflow.Data { return dataView{ctx: ctx, c: c} }

type dataView struct {
	ctx context.Context
	c   *Client
}

func (d dataView) Load(key string) (any, error) { return d.c.LoadData(d.ctx, key) }

// PutDefinition stores a validated definition's source under
// "<name>.<version>". Storing identical source again is a no-op; a
// different source for an existing version is refused.
func (c *Client) PutDefinition(ctx context.Context, def *workflow.Definition, src []byte) error {
	key := DefinitionKey(def.Name, def.Version)
	err := c.guarded(ctx, []string{keySubject(BucketDefinitions, key)}, func(ctx context.Context) error {
		_, err := c.defs.kv().Create(ctx, key, src)
		return err
	})
	if err == nil {
		return nil
	}
	if err = translate(err); !errors.Is(err, workflow.ErrExists) && !errors.Is(err, workflow.ErrConflict) {
		return fmt.Errorf("store definition %s: %w", key, err)
	}
	e, gerr := c.get(ctx, c.defs, key)
	if gerr != nil {
		return fmt.Errorf("store definition %s: %w", key, translate(gerr))
	}
	if !bytes.Equal(e.Value(), src) {
		return fmt.Errorf("%w: version %d of workflow %q is already registered with different content; increase the version", workflow.ErrExists, def.Version, def.Name)
	}
	return nil
}

// Definitions loads every stored definition.
func (c *Client) Definitions(ctx context.Context) ([]*workflow.Definition, error) {
	keys, err := c.listKeys(ctx, c.defs.kv())
	if err != nil {
		return nil, fmt.Errorf("list definitions: %w", err)
	}
	var out []*workflow.Definition
	for _, k := range keys {
		def, err := c.definition(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, def)
	}
	return out, nil
}

// Definition loads one version of a definition.
func (c *Client) Definition(ctx context.Context, name string, version int) (*workflow.Definition, error) {
	return c.definition(ctx, DefinitionKey(name, version))
}

func (c *Client) definition(ctx context.Context, key string) (*workflow.Definition, error) {
	e, err := c.get(ctx, c.defs, key)
	if err != nil {
		return nil, fmt.Errorf("definition %s: %w", key, translate(err))
	}
	def, err := workflow.Parse(key, e.Value())
	if err != nil {
		return nil, fmt.Errorf("stored definition %s no longer validates: %w", key, err)
	}
	return def, nil
}

// WatchDefinitions calls fn for every definition stored now and later. It
// calls ready once the stored ones were delivered, and blocks until ctx
// ends. Definitions that fail to parse are logged and skipped.
func (c *Client) WatchDefinitions(ctx context.Context, fn func(*workflow.Definition), ready func()) error {
	w, err := c.watchAll(ctx, c.defs)
	if err != nil {
		return fmt.Errorf("watch definitions: %w", err)
	}
	return follow(ctx, w, ready, func(e natsjs.KeyValueEntry) {
		if e.Operation() != natsjs.KeyValuePut {
			return
		}
		def, err := workflow.Parse(e.Key(), e.Value())
		if err != nil {
			c.log.Error().Err(err).Str("key", e.Key()).Msg("stored definition does not validate; skipped")
			return
		}
		fn(def)
	})
}

// follow hands the entries of watch w to fn, in revision order, calls
// ready when the entries stored when it started were delivered, and
// returns nil when ctx ends or the watch closes; it stops the watch.
func follow(ctx context.Context, w natsjs.KeyWatcher, ready func(), fn func(natsjs.KeyValueEntry)) error {
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				ready()
				continue
			}
			fn(e)
		}
	}
}

// InstanceUpdate is one write of an instance as a watch sees it: the
// fields needed to follow instances cheaply, decoded at once, and the
// whole record, decoded on demand.
type InstanceUpdate struct {
	ID     string          `msgpack:"id"`
	Status workflow.Status `msgpack:"st"`
	Events uint64          `msgpack:"n"`
	raw    []byte
}

// Decode decodes the whole instance.
func (u *InstanceUpdate) Decode() (*workflow.Instance, error) {
	var in workflow.Instance
	if err := decode(u.raw, &in); err != nil {
		return nil, fmt.Errorf("decode instance %s: %w", u.ID, err)
	}
	return &in, nil
}

// WatchInstanceUpdates is WatchInstances for followers that need the whole
// instance only for some writes (the repair loop decodes only instances
// that stopped changing): each write is decoded to its id, status and
// event count, skipping the rest.
func (c *Client) WatchInstanceUpdates(ctx context.Context, existing bool, ready func(), fn func(*InstanceUpdate)) error {
	return c.watchInstances(ctx, existing, ready, func(key string, raw []byte) {
		u := &InstanceUpdate{raw: raw}
		if err := decode(raw, u); err != nil {
			c.log.Warn().Err(err).Str("key", key).Msg("undecodable instance in watch")
			return
		}
		fn(u)
	})
}

// WatchInstances calls fn with every instance update (first the current
// state of every instance when existing is true), until ctx ends (it
// blocks). ready is called once the watch is in place (and, with
// existing, once the current states were delivered).
func (c *Client) WatchInstances(ctx context.Context, existing bool, ready func(), fn func(*workflow.Instance)) error {
	return c.watchInstances(ctx, existing, ready, func(key string, raw []byte) {
		var in workflow.Instance
		if err := decode(raw, &in); err != nil {
			c.log.Warn().Err(err).Str("key", key).Msg("undecodable instance in watch")
			return
		}
		fn(&in)
	})
}

func (c *Client) watchInstances(ctx context.Context, existing bool, ready func(), fn func(key string, raw []byte)) error {
	var opts []natsjs.WatchOpt
	if !existing {
		opts = append(opts, natsjs.UpdatesOnly())
	}
	w, err := c.watchAll(ctx, c.inst, opts...)
	if err != nil {
		return fmt.Errorf("watch instances: %w", err)
	}
	if !existing {
		// Updates only: nothing stored is delivered, and no marker ends it.
		ready()
		ready = func() {}
	}
	return follow(ctx, w, ready, func(e natsjs.KeyValueEntry) {
		if e.Operation() == natsjs.KeyValuePut {
			fn(e.Key(), e.Value())
		}
	})
}

// watchAll starts a watch of a bucket. The watch (an ordered consumer)
// lives as long as ctx; a permissions violation while it is being created
// fails it at once.
func (c *Client) watchAll(ctx context.Context, b *bucket, opts ...natsjs.WatchOpt) (natsjs.KeyWatcher, error) {
	return c.watchKeys(ctx, b, ">", opts...)
}

// watchKeys is watchAll for the keys that match a filter.
func (c *Client) watchKeys(ctx context.Context, b *bucket, keys string, opts ...natsjs.WatchOpt) (natsjs.KeyWatcher, error) {
	w, stop := c.perms.watch(c.perms.mark(), jsAPI)
	defer stop()
	type result struct {
		w   natsjs.KeyWatcher
		err error
	}
	res := make(chan result, 1)
	go func() {
		w, err := b.kv().Watch(ctx, keys, opts...)
		res <- result{w, err}
	}()
	select {
	case r := <-res:
		return r.w, r.err
	case pe := <-w.ch:
		go func() {
			if r := <-res; r.w != nil {
				_ = r.w.Stop()
			}
		}()
		return nil, pe
	}
}
