package jetstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Config configures a connection to JetStream and the assets jetflow uses.
type Config struct {
	// URL lists servers, comma-separated. Ignored when Server is set.
	URL string
	// Server, when set, is a server to connect to in-process (an
	// *embedded.Server). Default nil: dial URL.
	Server nats.InProcessConnProvider
	// Name identifies the connection in server monitoring. Default "jetflow".
	Name string
	// Replicas of every stream and bucket (1 or 3 in practice). Default 1.
	Replicas int
	// MaxPayload bounds inputs, outputs and trigger payloads: a larger
	// trigger is dead-lettered, a larger value is not stored. It must not
	// exceed the server's max_payload (Connect checks). Default 1 MiB.
	MaxPayload int
	// DuplicateWindow of the trigger, event and task streams. Default 2m.
	DuplicateWindow time.Duration
	// TriggerRetention is how long trigger messages are kept (and so how
	// long their Nats-Msg-Id is remembered across restarts). Default 24h.
	TriggerRetention time.Duration
	// DLQRetention is how long dead letters are kept. Default 7 days.
	DLQRetention time.Duration
	// DLQMaxBytes bounds the dead-letter stream; the oldest dead letters
	// are dropped to stay under it. Default 256 MiB.
	DLQMaxBytes int64
	// DLQMaxPayload is how much of a rejected message's payload a dead
	// letter keeps (its size and SHA-256 are kept in headers). Default
	// 64 KiB.
	DLQMaxPayload int
	// InstanceRetention is how long an ended instance's key is kept after
	// its last write; NATS then removes it (a per-message TTL on that
	// write). 0, the default, keeps instances forever. While the key
	// exists it is the durable duplicate guard of its event key: a
	// trigger replayed after it expired starts a new instance. It must be
	// at least TriggerRetention, so no trigger the stream still holds
	// can outlive its guard. Runs of workflows with on_duplicate: rerun
	// never expire (their run chain must stay whole).
	InstanceRetention time.Duration
	// DispatcherAckWait is the dispatcher consumer's AckWait: how soon an
	// event a crashed dispatcher held is redelivered. Default 30s.
	DispatcherAckWait time.Duration
	// WorkerAckWait is the task consumers' AckWait: how soon a task held
	// by a worker that died (killed, crashed, cut off) is redelivered to
	// another, counted from the dead worker's last heartbeat. Workers
	// heartbeat every task they hold (worker.Config.HeartbeatInterval, a
	// fifth of this by default), so a live worker keeps its tasks however
	// long its handlers run. Each worker sets it on the consumers of its
	// task types: give every worker of a fleet the same value. Default
	// 10s.
	WorkerAckWait time.Duration
	// DataCacheBytes bounds the in-process cache of decoded data values.
	// Default 64 MiB.
	DataCacheBytes int
	// RequestTimeout bounds each request that waits for one answer from
	// the server: a KV read or write, the acknowledgement of a publish
	// (pipelined publishes too, each from when it was sent). A request
	// that reached a stream leader just before it died is never answered;
	// it fails with ErrRequestTimeout after this long instead of holding
	// its caller (a dispatcher shard, a worker) until the caller's own
	// deadline. Listings (barrier counts, keys) are not bounded by it.
	// Default 5s.
	RequestTimeout time.Duration
	// ConnectTimeout bounds how long Connect waits for the first server to
	// answer; it then fails naming the URL. Default 10s.
	ConnectTimeout time.Duration
	// Auth holds the credentials and TLS settings of the connection.
	// Default: none (an open server).
	Auth Auth
	// InboxPrefix is the subject prefix of this connection's reply
	// inboxes. Each role uses its own (InboxPrefixDispatcher, ...), so
	// NATS permissions can keep a role from reading another's replies.
	// Default "_INBOX", nats.go's.
	InboxPrefix string
	// NoProvision makes the client never create or update a stream,
	// consumer or bucket: Provision, EnsureTriggerSubjects and
	// EnsureTaskConsumer only check that what they would make exists, and
	// name what is missing (ErrNotProvisioned). A client whose NATS user
	// is denied provisioning switches to this by itself. Default false.
	NoProvision bool
	// NATSOptions are applied by Connect after jetflow's own connection
	// options (so they may override them). Default: none.
	NATSOptions []nats.Option
	// Logger. Default: discarded.
	Logger zerolog.Logger
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Name == "" {
		c.Name = "jetflow"
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 1 << 20
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.TriggerRetention == 0 {
		c.TriggerRetention = 24 * time.Hour
	}
	if c.DLQRetention == 0 {
		c.DLQRetention = 7 * 24 * time.Hour
	}
	if c.DLQMaxBytes == 0 {
		c.DLQMaxBytes = 256 << 20
	}
	if c.DLQMaxPayload == 0 {
		c.DLQMaxPayload = 64 << 10
	}
	if c.DispatcherAckWait == 0 {
		c.DispatcherAckWait = 30 * time.Second
	}
	if c.WorkerAckWait == 0 {
		c.WorkerAckWait = 10 * time.Second
	}
	if c.DataCacheBytes == 0 {
		c.DataCacheBytes = 64 << 20
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	return c
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("replicas must be between 1 and 5, got %d", c.Replicas)
	case c.MaxPayload < 1024:
		return fmt.Errorf("max payload must be at least 1 KiB (1024 bytes), got %d (--max-payload, JETFLOW_MAX_PAYLOAD)", c.MaxPayload)
	case c.DuplicateWindow > c.TriggerRetention:
		return fmt.Errorf("duplicate window %s exceeds trigger retention %s", c.DuplicateWindow, c.TriggerRetention)
	case c.InstanceRetention < 0:
		return fmt.Errorf("instance retention must not be negative, got %s", c.InstanceRetention)
	case c.InstanceRetention > 0 && c.InstanceRetention < c.TriggerRetention:
		return fmt.Errorf("instance retention %s is shorter than trigger retention %s: a trigger still in the stream could outlive its instance's duplicate guard", c.InstanceRetention, c.TriggerRetention)
	case c.InstanceRetention > 0 && c.InstanceRetention < time.Second:
		return fmt.Errorf("instance retention must be at least 1s (NATS per-message TTLs are whole seconds), got %s", c.InstanceRetention)
	case c.DispatcherAckWait < time.Second || c.WorkerAckWait < time.Second:
		return errors.New("ack waits must be at least 1s")
	case c.RequestTimeout < 0:
		return fmt.Errorf("request timeout must not be negative, got %s", c.RequestTimeout)
	case c.DLQMaxPayload < 0 || c.DLQMaxBytes < 1<<20:
		return fmt.Errorf("the dead-letter stream needs at least 1 MiB (got %d bytes) and a non-negative payload prefix (got %d)", c.DLQMaxBytes, c.DLQMaxPayload)
	case c.ConnectTimeout < 0:
		return fmt.Errorf("connect timeout must not be negative, got %s", c.ConnectTimeout)
	}
	if err := c.Auth.Validate(); err != nil {
		return fmt.Errorf("nats credentials: %w", err)
	}
	return nil
}

// ErrMaxPayload matches a Config.MaxPayload the server cannot carry.
var ErrMaxPayload = errors.New("max payload too large")

// Client is a connection to JetStream with jetflow's streams and buckets.
type Client struct {
	cfg   Config
	nc    *nats.Conn
	js    natsjs.JetStream
	log   zerolog.Logger
	inst  *bucket
	data  *bucket
	defs  *bucket
	cache *lru
	effs  effects // BucketEffects, bound on first use (effects.go)
	flw   flow    // BucketFlow, bound on first use (flow.go)
	// scheds is BucketSchedules, bound on first use (schedules.go).
	scheds effects
	// pullStalls counts pulls presumed lost and replaced (PullStalls).
	pullStalls atomic.Uint64
	// badMeta counts messages whose metadata could not be read (BadMetadata).
	badMeta    atomic.Uint64
	reconnects *atomic.Uint64
	// perms hands permission violations to the requests they fail
	// (permission.go); noProvision is Config.NoProvision, or set after
	// the server denied provisioning (provision.go).
	perms       *violations
	noProvision atomic.Bool
	// owned: Connect made nc, so Close closes it (New: the caller's).
	owned bool
}

// Connect connects to JetStream. It does not create anything; call
// Provision (dispatcher, CLI) or Bind (workers) next.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Server == nil && cfg.URL == "" {
		return nil, errors.New("no NATS URL and no embedded server")
	}
	authOpts, err := cfg.Auth.natsOptions()
	if err != nil {
		return nil, fmt.Errorf("nats credentials: %w", err)
	}
	reconnects := new(atomic.Uint64)
	perms := newViolations(cfg.InboxPrefix)
	conn := newConnectWatch()
	opts := connectOptions(cfg)
	opts = append(opts, connectionHandlers(cfg.Logger, reconnects, perms, conn)...)
	opts = append(opts, authOpts...)
	opts = append(opts, cfg.NATSOptions...)
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	url := cfg.URL
	if cfg.Server != nil {
		opts = append(opts, nats.InProcessServer(cfg.Server))
		url = ""
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", RedactURL(url), err)
	}
	if !nc.IsConnected() {
		// RetryOnFailedConnect returns at once; wait a bounded time so a
		// wrong URL is reported instead of hanging, and fail at once on
		// what retrying cannot fix (credentials, certificates).
		if err := conn.wait(ctx, nc, cfg.ConnectTimeout); err != nil {
			nc.Close()
			return nil, fmt.Errorf("connect to %s as %s: %w", RedactURL(url), cfg.Auth, err)
		}
	}
	c, err := newClient(nc, cfg, perms, reconnects)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.owned = true
	return c, nil
}

// connectOptions are the reconnection and liveness settings of a
// connection Connect makes: reconnect forever, and notice a dead server
// within seconds.
func connectOptions(cfg Config) []nats.Option {
	return []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.RetryOnFailedConnect(true),
		// One dial (and the server's first answer) may take a quarter of
		// ConnectTimeout, so a server that accepts and never answers is
		// given up within about ConnectTimeout too (Close waits for the
		// dial in progress).
		nats.Timeout(max(cfg.ConnectTimeout/4, 250*time.Millisecond)),
	}
}

// connectionHandlers log the life of a connection Connect makes, count
// its reconnects, report its permission violations to the request that
// caused them (perms) and tell Connect whether the first connect
// succeeded (conn).
func connectionHandlers(log zerolog.Logger, reconnects *atomic.Uint64, perms *violations, conn *connectWatch) []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			// Without an error the connection was closed on purpose (Close,
			// a drain at shutdown): nothing to warn about.
			if err == nil {
				log.Debug().Msg("nats disconnected")
				return
			}
			log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			reconnects.Add(1)
			log.Info().Str("url", RedactURL(nc.ConnectedUrl())).Msg("nats reconnected")
		}),
		nats.ConnectHandler(func(*nats.Conn) { conn.connected() }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { conn.failed(err) }),
		nats.ClosedHandler(func(nc *nats.Conn) {
			conn.closed(nc.LastError())
			if err := nc.LastError(); err != nil {
				log.Error().Err(err).Msg("nats connection closed")
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if pe, ok := parseViolation(err); ok {
				// The request that caused it fails with this (guarded);
				// the log says which subject the user lacks.
				perms.report(pe)
				log.Error().Str("subject", pe.Subject).Str("op", pe.Op).Str("server", pe.Server).Msg("nats permissions violation")
				return
			}
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("nats async error")
		}),
	}
}

// New makes a client on a connection the caller made and keeps: Close
// does not close it. It does not create anything; call Provision or Bind
// next. cfg.URL, cfg.Server, cfg.Name, cfg.Auth, cfg.InboxPrefix and
// cfg.ConnectTimeout do not apply (the connection has its own). The
// connection's error and reconnect handlers are kept: the client's run
// first, then the ones nc had.
func New(nc *nats.Conn, cfg Config) (*Client, error) {
	if nc == nil {
		return nil, errors.New("jetflow: nil *nats.Conn")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if nc.IsClosed() {
		return nil, fmt.Errorf("jetflow: %w", nats.ErrConnectionClosed)
	}
	cfg.InboxPrefix = strings.TrimSuffix(nc.Opts.InboxPrefix, ".")
	perms := newViolations(cfg.InboxPrefix)
	reconnects := new(atomic.Uint64)
	prevErr, prevReconnect := nc.Opts.AsyncErrorCB, nc.Opts.ReconnectedCB
	nc.SetErrorHandler(func(conn *nats.Conn, sub *nats.Subscription, err error) {
		if pe, ok := parseViolation(err); ok {
			perms.report(pe)
		}
		if prevErr != nil {
			prevErr(conn, sub, err)
		}
	})
	nc.SetReconnectHandler(func(conn *nats.Conn) {
		reconnects.Add(1)
		if prevReconnect != nil {
			prevReconnect(conn)
		}
	})
	return newClient(nc, cfg, perms, reconnects)
}

// newClient is what Connect and New share once nc is connected.
func newClient(nc *nats.Conn, cfg Config, perms *violations, reconnects *atomic.Uint64) (*Client, error) {
	if srvMax := nc.MaxPayload(); srvMax > 0 && int64(cfg.MaxPayload) > srvMax {
		where := RedactURL(nc.ConnectedUrl())
		switch {
		case cfg.Server != nil:
			where = "embedded"
		case where == "":
			where = "in-process"
		}
		return nil, fmt.Errorf("%w: %d bytes is more than the NATS server (%s) accepts (max_payload %d bytes); lower --max-payload (JETFLOW_MAX_PAYLOAD) or raise the server's max_payload",
			ErrMaxPayload, cfg.MaxPayload, where, srvMax)
	}
	// Without an async ack timeout nats.go keeps a publish whose ack never
	// comes (it went to a leader that died) pending for good, and 4,096
	// of them would stall every later publish of this connection.
	js, err := natsjs.New(nc, natsjs.WithPublishAsyncMaxPending(4096), natsjs.WithPublishAsyncTimeout(cfg.RequestTimeout))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c := &Client{cfg: cfg, nc: nc, js: js, log: cfg.Logger, cache: newLRU(cfg.DataCacheBytes), perms: perms, reconnects: reconnects}
	c.noProvision.Store(cfg.NoProvision)
	return c, nil
}

// Close closes the connection Connect made, flushing pending publishes.
// A client made by New leaves the caller's connection open: it only
// waits (up to RequestTimeout) for the acks of its pending publishes.
func (c *Client) Close() {
	if c.nc == nil {
		return
	}
	if !c.owned {
		select {
		case <-c.js.PublishAsyncComplete():
		case <-time.After(c.cfg.RequestTimeout):
		}
		return
	}
	_ = c.nc.Drain()
	c.nc.Close()
}

// Bound reports whether Bind (or Provision) has succeeded.
func (c *Client) Bound() bool { return c.inst != nil && c.data != nil && c.defs != nil }

// Reconnects counts how often the connection was re-established. A
// server that crashed may have lost its last writes, so what a caller
// remembers having published before a reconnect is not to be trusted.
func (c *Client) Reconnects() uint64 { return c.reconnects.Load() }

// Config returns the effective configuration.
func (c *Client) Config() Config { return c.cfg }

// streamConfigs lists the streams Provision makes, buckets included (the
// trigger stream is made by EnsureTriggerSubjects).
func (c *Client) streamConfigs() []natsjs.StreamConfig {
	r := max(c.cfg.Replicas, 1)
	streams := []natsjs.StreamConfig{
		{
			Name:        StreamEvents,
			Description: "jetflow: task results, timers and signals of running instances",
			Subjects:    []string{EventSubjects, TimerSubjects},
			Retention:   natsjs.WorkQueuePolicy,
			Storage:     natsjs.FileStorage,
			Replicas:    r,
			Duplicates:  c.cfg.DuplicateWindow,
			// Message schedules are the durable timers (they rule out
			// DiscardNew; the stream has no limits to discard at).
			AllowMsgSchedules: true,
			MaxMsgSize:        int32(c.cfg.MaxPayload + 4096),
		},
		{
			Name:        StreamTasks,
			Description: "jetflow: task pointer messages, one subject per task type",
			Subjects:    []string{TaskSubjects},
			Retention:   natsjs.WorkQueuePolicy,
			Storage:     natsjs.FileStorage,
			Replicas:    r,
			Duplicates:  c.cfg.DuplicateWindow,
			Discard:     natsjs.DiscardNew,
			MaxMsgSize:  int32(c.cfg.MaxPayload + 4096),
		},
		{
			Name:        StreamDLQ,
			Description: "jetflow: rejected messages with the reason in the Jetflow-Reason header",
			Subjects:    []string{DLQSubjects},
			Retention:   natsjs.LimitsPolicy,
			Storage:     natsjs.FileStorage,
			Replicas:    r,
			MaxAge:      c.cfg.DLQRetention,
			MaxBytes:    c.cfg.DLQMaxBytes,
			Discard:     natsjs.DiscardOld,
		},
	}
	buckets := []natsjs.KeyValueConfig{
		{Bucket: BucketDefinitions, Description: "jetflow: workflow definitions by name.version", History: 1, Replicas: r, Storage: natsjs.FileStorage},
		{Bucket: BucketInstances, Description: "jetflow: instance state, CAS-updated", History: 1, Replicas: r, Storage: natsjs.FileStorage},
		{Bucket: BucketData, Description: "jetflow: write-once inputs and outputs", History: 1, Replicas: r, Storage: natsjs.FileStorage, MaxValueSize: int32(c.cfg.MaxPayload)},
		effectsBucketConfig(r),
		flowBucketConfig(r),
		schedulesBucketConfig(r),
	}
	streams = append(streams, c.schedulesStreamConfig())
	for _, bc := range buckets {
		sc := bucketStream(bc)
		if bc.Bucket == BucketInstances {
			// Ended instances expire by a per-message TTL when
			// InstanceRetention is set (PutInstance). Allowing TTLs costs
			// nothing when none is used, and cannot be undone.
			sc.AllowMsgTTL = true
		}
		streams = append(streams, sc)
	}
	return streams
}

// Provision creates or updates every stream, bucket and dispatcher consumer
// jetflow needs. It is idempotent and safe to run from several processes at
// once. With Config.NoProvision it only checks that they exist (Verify).
// A NATS user that may not provision gets an error matching
// ErrPermissionDenied; call Verify then.
func (c *Client) Provision(ctx context.Context) error {
	if c.noProvision.Load() {
		return c.Verify(ctx)
	}
	err := c.guarded(ctx, []string{jsAPI}, c.provision)
	if errors.Is(err, ErrPermissionDenied) {
		return fmt.Errorf("provision jetflow: %w (run `%s` with admin credentials, and start runtime roles with --no-provision)", err, ProvisionCommand)
	}
	return err
}

func (c *Client) provision(ctx context.Context) error {
	for _, sc := range c.streamConfigs() {
		if err := c.ensureStream(ctx, sc); err != nil {
			return fmt.Errorf("provision stream %s: %w", sc.Name, err)
		}
	}
	if err := c.EnsureTriggerSubjects(ctx); err != nil {
		return err
	}
	if err := c.provisionPresence(ctx); err != nil {
		return err
	}
	for _, s := range []string{StreamTriggers, StreamEvents} {
		cc := natsjs.ConsumerConfig{
			Durable:       ConsumerDispatcher,
			Description:   "jetflow dispatchers (shared by all replicas)",
			AckPolicy:     natsjs.AckExplicitPolicy,
			AckWait:       c.cfg.DispatcherAckWait,
			MaxAckPending: 20000,
			MaxDeliver:    -1,
			// Replicas 0: the consumer inherits the stream's replica count, which
			// work-queue streams require.
		}
		if s == StreamEvents {
			// Schedules live in the same stream; the dispatcher must not
			// consume (and so delete) them.
			cc.FilterSubject = EventSubjects
		}
		if cons, err := c.js.Consumer(ctx, s, cc.Durable); err == nil && sameConsumer(cons.CachedInfo().Config, cc) {
			continue
		}
		if _, err := c.js.CreateOrUpdateConsumer(ctx, s, cc); err != nil {
			return fmt.Errorf("provision consumer %s on %s: %w", ConsumerDispatcher, s, err)
		}
	}
	if err := c.provisionSchedules(ctx); err != nil {
		return err
	}
	guard := timerGuardConfig()
	if cons, err := c.js.Consumer(ctx, StreamEvents, guard.Durable); err != nil || !sameConsumer(cons.CachedInfo().Config, guard) {
		if _, err := c.js.CreateOrUpdateConsumer(ctx, StreamEvents, guard); err != nil {
			return fmt.Errorf("provision consumer %s on %s: %w", guard.Durable, StreamEvents, err)
		}
	}
	return c.Bind(ctx)
}

// Bind looks up the buckets. Workers call it; it fails with a clear error
// when no dispatcher has provisioned jetflow yet.
func (c *Client) Bind(ctx context.Context) error {
	return c.guarded(ctx, []string{jsAPI}, c.bind)
}

func (c *Client) bind(ctx context.Context) error {
	var err error
	if c.inst, err = c.bindBucket(ctx, BucketInstances); err != nil {
		if errors.Is(err, natsjs.ErrBucketNotFound) {
			err = fmt.Errorf("%w: %w", ErrNotProvisioned, err)
		}
		return fmt.Errorf("bucket %s: %w (has a dispatcher provisioned jetflow on this server?)", BucketInstances, err)
	}
	if c.data, err = c.bindBucket(ctx, BucketData); err != nil {
		return fmt.Errorf("bucket %s: %w", BucketData, err)
	}
	// The dispatcher that provisioned jetflow chose the payload limit (the
	// data bucket's largest value): workers and clients take it from there.
	if st, err := c.data.kv().Status(ctx); err == nil {
		if bs, ok := st.(*natsjs.KeyValueBucketStatus); ok && bs.StreamInfo().Config.MaxMsgSize > 0 {
			c.cfg.MaxPayload = int(bs.StreamInfo().Config.MaxMsgSize)
		}
	}
	if c.defs, err = c.bindBucket(ctx, BucketDefinitions); err != nil {
		return fmt.Errorf("bucket %s: %w", BucketDefinitions, err)
	}
	return nil
}

// EnsureTriggerSubjects makes the trigger stream capture the explicit start
// subjects plus the given trigger subjects, keeping those it already has.
func (c *Client) EnsureTriggerSubjects(ctx context.Context, subjects ...string) error {
	want := []string{StartSubjects}
	gctx, done := c.guard(ctx, jsAPI)
	info, err := c.js.Stream(gctx, StreamTriggers)
	err = done(err)
	switch {
	case err == nil:
		want = append(want, info.CachedInfo().Config.Subjects...)
	case errors.Is(err, natsjs.ErrStreamNotFound):
	default:
		return fmt.Errorf("look up stream %s: %w", StreamTriggers, err)
	}
	have := map[string]bool{}
	var merged []string
	for _, s := range append(want, subjects...) {
		if !have[s] {
			have[s] = true
			merged = append(merged, s)
		}
	}
	if err == nil && len(merged) == len(info.CachedInfo().Config.Subjects) {
		return nil
	}
	exists := err == nil
	if c.noProvision.Load() {
		return missingTriggerSubjects(exists, merged, want)
	}
	sc := natsjs.StreamConfig{
		Name:        StreamTriggers,
		Description: "jetflow: trigger events that start workflow instances",
		Subjects:    merged,
		Retention:   natsjs.LimitsPolicy,
		Storage:     natsjs.FileStorage,
		Replicas:    c.cfg.Replicas,
		MaxAge:      c.cfg.TriggerRetention,
		Duplicates:  c.cfg.DuplicateWindow,
	}
	gctx, done = c.guard(ctx, jsAPI)
	_, uerr := c.js.CreateOrUpdateStream(gctx, sc)
	if err := done(uerr); err != nil {
		var apiErr *natsjs.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeSubjectOverlap {
			return fmt.Errorf("trigger subjects %s overlap a stream that already exists on this server; choose other subjects or remove that stream: %w", strings.Join(subjects, ", "), err)
		}
		if errors.Is(err, ErrPermissionDenied) {
			c.noProvision.Store(true)
			return fmt.Errorf("%w: %w", missingTriggerSubjects(exists, merged, want), err)
		}
		return fmt.Errorf("update stream %s subjects: %w", StreamTriggers, err)
	}
	return nil
}

// bucketStream is the stream behind a KV bucket: what nats.go's
// CreateKeyValue makes (kv.go, prepareKeyValueConfig), except that direct
// gets are off. With direct gets any replica — also one that is behind,
// such as a node that just restarted — may answer a read: NATS does not
// promise to read your own writes there. jetflow decides from what it
// reads (a result for an unknown instance, a missing input), so its reads
// must go to the stream leader. Measured on the 3-node fleet: 12-18% of
// reads right after an acknowledged write were stale with direct gets, and
// work was lost when the instance bucket's leader was killed.
//
// The bucket is created this way, not created by CreateKeyValue and then
// switched: a client binds a bucket once and keeps reading the way the
// stream allowed at that moment, so a worker that bound in between kept
// asking for direct gets the stream no longer answered ("no responders")
// — the fleet's fresh-cluster start failed that way (issue 7).
func bucketStream(kc natsjs.KeyValueConfig) natsjs.StreamConfig {
	maxValue := kc.MaxValueSize
	if maxValue == 0 {
		maxValue = -1
	}
	return natsjs.StreamConfig{
		Name:              "KV_" + kc.Bucket,
		Description:       kc.Description,
		Subjects:          []string{BucketSubjects(kc.Bucket)},
		MaxMsgsPerSubject: int64(max(kc.History, 1)),
		MaxBytes:          -1,
		MaxMsgSize:        maxValue,
		Storage:           kc.Storage,
		Replicas:          max(kc.Replicas, 1),
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		AllowDirect:       false,
		Discard:           natsjs.DiscardNew,
	}
}

// ensureStream creates a stream or updates it to sc, and does nothing when
// it already has sc's settings. Skipping the no-op update matters on a
// cluster: dispatcher replicas provision at the same time, and an update
// racing a create of the same stream waits out the API timeout.
func (c *Client) ensureStream(ctx context.Context, sc natsjs.StreamConfig) error {
	if st, err := c.js.Stream(ctx, sc.Name); err == nil && sameStream(st.CachedInfo().Config, sc) {
		return nil
	}
	_, err := c.js.CreateOrUpdateStream(ctx, sc)
	return err
}

// sameConsumer reports whether have already holds every setting jetflow
// chooses in want.
func sameConsumer(have, want natsjs.ConsumerConfig) bool {
	return have.Description == want.Description && have.AckPolicy == want.AckPolicy &&
		have.AckWait == want.AckWait && have.MaxAckPending == want.MaxAckPending &&
		have.MaxDeliver == want.MaxDeliver && have.FilterSubject == want.FilterSubject
}

// sameStream reports whether have already holds every setting jetflow
// chooses in want (the server fills in the rest).
func sameStream(have, want natsjs.StreamConfig) bool {
	return slices.Equal(have.Subjects, want.Subjects) &&
		have.Description == want.Description &&
		have.Retention == want.Retention &&
		have.Storage == want.Storage &&
		have.Replicas == want.Replicas &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates) &&
		have.MaxAge == want.MaxAge &&
		(want.MaxBytes == 0 || have.MaxBytes == want.MaxBytes) &&
		(want.MaxMsgSize == 0 || have.MaxMsgSize == want.MaxMsgSize) &&
		(want.MaxMsgsPerSubject == 0 || have.MaxMsgsPerSubject == want.MaxMsgsPerSubject) &&
		have.AllowDirect == want.AllowDirect &&
		(!want.AllowRollup || have.AllowRollup) &&
		(!want.DenyDelete || have.DenyDelete) &&
		have.AllowMsgSchedules == want.AllowMsgSchedules &&
		have.AllowMsgTTL == want.AllowMsgTTL &&
		have.Discard == want.Discard
}
