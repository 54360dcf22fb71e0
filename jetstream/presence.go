package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
)

// Presence: every dispatcher and worker writes a record of itself to
// BucketPresence every few seconds, with a per-message TTL of a few
// seconds more. A process that stops writing (killed, frozen, cut off)
// drops out when its last record expires; one that stops gracefully
// withdraws at once. `jetflow workers` and `jetflow dispatchers` read
// the bucket; `jetflow explain` reads it to tell whether any worker
// serves a task type.

// Presence kinds: the first token of a presence key.
const (
	PresenceWorker     = "worker"
	PresenceDispatcher = "dispatcher"
)

// Presence is one process's record.
type Presence struct {
	Kind    string    `json:"kind"`
	Name    string    `json:"name"`
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// TTL is how long the record lives after this write.
	TTL time.Duration `json:"ttl"`
	// LastSeen is when the server stored this write (set on read).
	LastSeen time.Time `json:"last_seen"`

	// Workers.
	TaskTypes   []string `json:"task_types,omitempty"`
	Concurrency int      `json:"concurrency,omitempty"`
	Busy        int      `json:"busy"`
	TasksDone   uint64   `json:"tasks_done"`

	// Dispatchers.
	Shards            int    `json:"shards,omitempty"`
	Consuming         bool   `json:"consuming,omitempty"`
	InstancesStarted  uint64 `json:"instances_started,omitempty"`
	InstancesFinished uint64 `json:"instances_finished,omitempty"`
}

// presenceStream is the stream behind BucketPresence: in memory (a
// record is worth a few seconds), one value per key, and per-message
// TTLs.
func presenceStream(replicas int) natsjs.StreamConfig {
	sc := bucketStream(natsjs.KeyValueConfig{
		Bucket: BucketPresence, Description: "jetflow: dispatchers and workers connected now (records expire by a per-message TTL)",
		History: 1, Replicas: replicas, Storage: natsjs.MemoryStorage,
	})
	sc.AllowMsgTTL = true
	sc.DenyDelete = false
	return sc
}

// provisionPresence creates or updates the presence bucket.
func (c *Client) provisionPresence(ctx context.Context) error {
	sc := presenceStream(max(c.cfg.Replicas, 1))
	if err := c.ensureStream(ctx, sc); err != nil {
		return fmt.Errorf("provision stream %s: %w", sc.Name, err)
	}
	return nil
}

// PresenceName makes a process name usable as a presence key token:
// characters other than letters, digits, '-' and '_' become '_'.
func PresenceName(name string) string {
	b := []byte(name)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	return string(b)
}

// DefaultProcessName is "<host>-<pid>".
func DefaultProcessName() string { return ProcessHost() + "-" + strconv.Itoa(os.Getpid()) }

// ProcessHost is the host name, or "unknown".
func ProcessHost() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}

// BuildVersion is the module version the binary was built from, or
// "devel".
func BuildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

// presenceKey is the KV key of a process's record.
func presenceKey(kind, name string) string { return kind + "." + PresenceName(name) }

// Announce writes p as its process's record, to expire after p.TTL
// (whole seconds, at least 1s) unless written again.
func (c *Client) Announce(ctx context.Context, p Presence) error {
	ttl := max(p.TTL.Round(time.Second), time.Second)
	p.TTL = ttl
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	subject := keySubject(BucketPresence, presenceKey(p.Kind, p.Name))
	return c.bounded(ctx, func(ctx context.Context) error {
		_, err := c.js.Publish(ctx, subject, b, natsjs.WithMsgTTL(ttl))
		if err != nil {
			return fmt.Errorf("announce %s %s: %w", p.Kind, p.Name, err)
		}
		return nil
	}, subject)
}

// Withdraw removes a process's record at once (a graceful stop). The
// delete marker itself expires after a second.
func (c *Client) Withdraw(ctx context.Context, kind, name string) error {
	subject := keySubject(BucketPresence, presenceKey(kind, name))
	m := &nats.Msg{Subject: subject, Header: nats.Header{}}
	m.Header.Set("KV-Operation", "PURGE")
	m.Header.Set("Nats-Rollup", "sub")
	return c.bounded(ctx, func(ctx context.Context) error {
		_, err := c.js.PublishMsg(ctx, m, natsjs.WithMsgTTL(time.Second))
		return err
	}, subject)
}

// ErrNoPresence matches a read of presence records on a server where the
// presence bucket does not exist (provisioned by an older jetflow: run
// `jetflow provision`).
var ErrNoPresence = errors.New("the presence bucket " + BucketPresence + " does not exist (run `" + ProvisionCommand + "` with admin credentials)")

// Present reads the records of the processes of kind that are present
// now, by name.
func (c *Client) Present(ctx context.Context, kind string) (_ []Presence, err error) {
	ctx, done := c.guard(ctx, jsAPI)
	defer func() { err = done(err) }()
	kv, err := c.js.KeyValue(ctx, BucketPresence)
	if errors.Is(err, natsjs.ErrBucketNotFound) {
		return nil, ErrNoPresence
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", BucketPresence, err)
	}
	w, err := kv.WatchFiltered(ctx, []string{kind + ".*"}, natsjs.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", BucketPresence, err)
	}
	defer func() { _ = w.Stop() }()
	var out []Presence
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok || e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
				return out, nil
			}
			if e.Operation() != natsjs.KeyValuePut {
				continue
			}
			var p Presence
			if err := json.Unmarshal(e.Value(), &p); err != nil || !strings.HasPrefix(e.Key(), kind+".") {
				c.log.Warn().Str("key", e.Key()).Msg("presence record does not decode; skipped")
				continue
			}
			p.Kind, p.LastSeen = kind, e.Created()
			out = append(out, p)
		}
	}
}

// AnnounceEvery writes the record rec returns now and every interval
// until ctx ends, then withdraws it. A record's TTL defaults to two
// intervals and a second. A failed write is logged once until one
// succeeds again; presence never stops the process's work.
func (c *Client) AnnounceEvery(ctx context.Context, interval time.Duration, rec func() Presence) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	var last Presence
	for {
		p := rec()
		if p.TTL == 0 {
			p.TTL = 2*interval + time.Second
		}
		last = p
		wctx, cancel := context.WithTimeout(ctx, interval)
		err := c.Announce(wctx, p)
		cancel()
		switch {
		case err == nil:
			failing = false
		case ctx.Err() == nil && !failing:
			failing = true
			c.log.Warn().Err(err).Str("kind", p.Kind).Str("name", p.Name).Msg("cannot announce this process in " + BucketPresence + "; jetflow workers/dispatchers will not list it until this succeeds")
		}
		select {
		case <-ctx.Done():
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RequestTimeout)
			defer cancel()
			if err := c.Withdraw(wctx, last.Kind, last.Name); err != nil && !failing {
				c.log.Debug().Err(err).Msg("cannot withdraw the presence record; it expires by itself")
			}
			return
		case <-t.C:
		}
	}
}
