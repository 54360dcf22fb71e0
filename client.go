package jetflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/internal/link"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// Errors a Client returns. Match them with errors.Is.
var (
	// ErrNotProvisioned: no dispatcher (or `jetflow provision`) has
	// created jetflow's streams and buckets on this NATS account yet.
	ErrNotProvisioned = jetstream.ErrNotProvisioned
	// ErrNotFound: no instance has that id.
	ErrNotFound = workflow.ErrNotFound
	// ErrMalformed: a value is not one JSON can hold (NaN, a channel,
	// nested deeper than workflow.MaxDepth), or a stored value cannot be
	// decoded.
	ErrMalformed = jetstream.ErrMalformed
	// ErrTooLarge: a value is larger than the payload limit the
	// dispatchers were started with (1 MiB by default).
	ErrTooLarge = jetstream.ErrTooLarge
	// ErrNotStored: Publish on a subject no stream captures (no
	// registered definition's trigger has it).
	ErrNotStored = jetstream.ErrNotStored
	// ErrEnded: Cancel of an instance that already ended.
	ErrEnded = errors.New("instance already ended")
	// ErrFailed: Wait saw the instance fail; the error carries its reason.
	ErrFailed = errors.New("instance failed")
	// ErrCancelled: Wait saw the instance cancelled.
	ErrCancelled = errors.New("instance cancelled")
)

// Client starts workflow instances, sends them signals and events, and
// reads them. It is safe for concurrent use. Make one with New (on your
// own NATS connection) or Connect (it dials).
//
// A Client binds to jetflow's buckets on first use, so it can be made
// before any dispatcher has provisioned jetflow; until one has, its
// methods fail with an error matching ErrNotProvisioned.
type Client struct {
	a     *jetstream.Client
	mu    sync.Mutex // serialises binding
	bound atomic.Bool
}

func init() {
	link.Adapter = func(c any) *jetstream.Client { return c.(*Client).a }
	link.Ready = func(ctx context.Context, c any) error { return c.(*Client).ready(ctx) }
	link.Client = func(a *jetstream.Client) any {
		c := &Client{a: a}
		c.bound.Store(a.Bound())
		return c
	}
}

// Option configures a Client.
type Option func(*jetstream.Config) error

// WithLogger sets the logger. Default: discarded.
func WithLogger(l zerolog.Logger) Option {
	return func(c *jetstream.Config) error { c.Logger = l; return nil }
}

// WithRequestTimeout bounds each request that waits for one answer from
// NATS (a KV read or write, a publish's acknowledgement), within the
// caller's context. Default 5s.
func WithRequestTimeout(d time.Duration) Option {
	return func(c *jetstream.Config) error {
		if d <= 0 {
			return fmt.Errorf("request timeout must be positive, got %s", d)
		}
		c.RequestTimeout = d
		return nil
	}
}

// WithWorkerAckWait sets how soon a task held by a worker that died is
// handed to another, counted from its last heartbeat (workers on this
// client heartbeat every fifth of it). Give every worker of a fleet the
// same value. Default 10s; at least 1s.
func WithWorkerAckWait(d time.Duration) Option {
	return func(c *jetstream.Config) error {
		if d < time.Second {
			return fmt.Errorf("worker ack wait must be at least 1s, got %s", d)
		}
		c.WorkerAckWait = d
		return nil
	}
}

// WithNoProvision makes the client never create a stream or consumer
// (workers create the consumer of each task type they run): it only binds
// what `jetflow provision` made, and names what is missing. A client
// whose NATS user may not provision switches to this by itself. Default
// off.
func WithNoProvision() Option {
	return func(c *jetstream.Config) error { c.NoProvision = true; return nil }
}

// WithName names the connection Connect makes in server monitoring.
// Default "jetflow". (New keeps the name of your connection.)
func WithName(name string) Option {
	return func(c *jetstream.Config) error { c.Name = name; return nil }
}

// WithConnectTimeout bounds how long Connect waits for a server to
// answer; it then fails naming the URL. Default 10s.
func WithConnectTimeout(d time.Duration) Option {
	return func(c *jetstream.Config) error {
		if d <= 0 {
			return fmt.Errorf("connect timeout must be positive, got %s", d)
		}
		c.ConnectTimeout = d
		return nil
	}
}

// WithNATSOptions passes options to nats.Connect when Connect dials:
// credentials (nats.UserCredentials, nats.Token, nats.UserInfo), TLS
// (nats.RootCAs, nats.ClientCert), and so on. They apply after jetflow's
// own (reconnect forever, 250ms apart; ping every 5s). New ignores them.
func WithNATSOptions(opts ...nats.Option) Option {
	return func(c *jetstream.Config) error {
		c.NATSOptions = append(c.NATSOptions, opts...)
		return nil
	}
}

func configure(opts []Option) (jetstream.Config, error) {
	var cfg jetstream.Config
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return cfg, fmt.Errorf("jetflow: %w", err)
		}
	}
	return cfg, nil
}

// New makes a client on your NATS connection. The connection stays
// yours: Close does not close it. Nothing is sent until the first call,
// which binds jetflow's buckets (see Client).
func New(nc *nats.Conn, opts ...Option) (*Client, error) {
	cfg, err := configure(opts)
	if err != nil {
		return nil, err
	}
	a, err := jetstream.New(nc, cfg)
	if err != nil {
		return nil, err
	}
	return &Client{a: a}, nil
}

// Connect dials url (comma-separated servers), waiting at most the
// connect timeout for one to answer, and makes a client on that
// connection; Close closes it.
func Connect(ctx context.Context, url string, opts ...Option) (*Client, error) {
	cfg, err := configure(opts)
	if err != nil {
		return nil, err
	}
	cfg.URL = url
	a, err := jetstream.Connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &Client{a: a}, nil
}

// Close waits for the client's pending publishes and, for a client made
// by Connect, closes its connection.
func (c *Client) Close() { c.a.Close() }

// ready binds the buckets once; a failed bind is tried again on the next
// call.
func (c *Client) ready(ctx context.Context) error {
	if c.bound.Load() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bound.Load() {
		return nil
	}
	if err := c.a.Bind(ctx); err != nil {
		return fmt.Errorf("jetflow: %w", err)
	}
	c.bound.Store(true)
	return nil
}

// Start starts workflow for the event eventKey with input, encoded as
// encoding/json.Marshal would (json tags, omitempty, json.Marshaler; a
// json.RawMessage is used as it is). It returns the instance id, which
// depends only on the workflow and the event key: starting the same key
// again starts nothing and returns the same id. (Under on_duplicate:
// rerun, a repeat starts a new run; the id returned is the first run's.)
//
// Start returns once the start is stored in JetStream; a dispatcher then
// creates the instance. An input JSON cannot hold fails with ErrMalformed
// before anything is sent, one over the payload limit with ErrTooLarge. A
// start for a workflow no dispatcher knows is dead-lettered (`jetflow
// dlq`), and its instance never appears.
func (c *Client) Start(ctx context.Context, workflowName, eventKey string, input any, opts ...StartOption) (string, error) {
	if err := c.ready(ctx); err != nil {
		return "", err
	}
	b, err := encode(input)
	if err != nil {
		return "", fmt.Errorf("start %s: input: %w", workflowName, err)
	}
	st := jetstream.Start{Workflow: workflowName, EventKey: eventKey, Payload: b}
	for _, o := range opts {
		o(&st)
	}
	if err := c.a.PublishStart(ctx, st); err != nil {
		return "", err
	}
	return workflow.InstanceID(workflowName, eventKey), nil
}

// StartOption sets an attribute of a start.
type StartOption func(*jetstream.Start)

// WithTraceParent makes the instance's spans children of a W3C
// traceparent ("00-<trace id>-<span id>-<flags>"), such as the one of
// the request that starts it. An invalid one fails Start.
func WithTraceParent(traceparent string) StartOption {
	return func(s *jetstream.Start) { s.TraceParent = traceparent }
}

// PublishOption sets a header of an event Publish sends.
type PublishOption func(map[string]string)

// WithMsgID sets the event's Nats-Msg-Id: JetStream drops a second event
// with the same id inside the duplicate window, and a workflow whose
// trigger key is `header:Nats-Msg-Id` takes its event key from it.
func WithMsgID(id string) PublishOption {
	return func(h map[string]string) { h["Nats-Msg-Id"] = id }
}

// WithHeader sets a header of the event.
func WithHeader(key, value string) PublishOption {
	return func(h map[string]string) { h[key] = value }
}

// Publish publishes an event on subject, encoded as encoding/json.Marshal
// would, and waits for JetStream to store it. Workflows whose trigger
// subject matches start an instance for it; its event key comes from the
// payload field or header the trigger names. subject must be one a
// dispatcher captures (a registered definition's trigger subject), else
// Publish fails: no stream stores it.
func (c *Client) Publish(ctx context.Context, subject string, event any, opts ...PublishOption) error {
	if err := c.ready(ctx); err != nil {
		return err
	}
	b, err := encode(event)
	if err != nil {
		return fmt.Errorf("publish on %s: %w", subject, err)
	}
	if _, err := c.a.CheckPayload(b); err != nil {
		return fmt.Errorf("publish on %s: %w", subject, err)
	}
	headers := map[string]string{}
	for _, o := range opts {
		o(headers)
	}
	_, err = c.a.Publish(ctx, subject, b, headers)
	return err
}

// Signal sends the signal name with payload (encoded as
// encoding/json.Marshal would) to an instance's wait step. id identifies
// this signal: sending the same id again is absorbed, so retry a failed
// Signal with the same id.
func (c *Client) Signal(ctx context.Context, instance, name string, payload any, id string) error {
	if err := c.ready(ctx); err != nil {
		return err
	}
	b, err := encode(payload)
	if err != nil {
		return fmt.Errorf("signal %s to %s: payload: %w", name, instance, err)
	}
	return c.a.Signal(ctx, instance, name, b, id)
}

// Cancel asks the dispatchers to cancel a running instance; reason is
// recorded as its error. It fails with ErrNotFound for an unknown
// instance and ErrEnded for one that already ended.
func (c *Client) Cancel(ctx context.Context, instance, reason string) error {
	if err := c.ready(ctx); err != nil {
		return err
	}
	inst, _, err := c.a.GetInstance(ctx, instance)
	if err != nil {
		return err
	}
	if inst.Status.Terminal() {
		return fmt.Errorf("cancel %s: %w (%s)", inst.ID, ErrEnded, inst.Status)
	}
	// Cancels of one instance share a message id: a repeat is absorbed.
	return c.a.Cancel(ctx, inst.ID, reason)
}

// Get reads an instance: its status, steps, error and timings. It fails
// with ErrNotFound when the instance does not exist (yet: a dispatcher
// creates it shortly after Start).
func (c *Client) Get(ctx context.Context, instance string) (*workflow.Instance, error) {
	if err := c.ready(ctx); err != nil {
		return nil, err
	}
	inst, _, err := c.a.GetInstance(ctx, instance)
	return inst, err
}

// Wait waits until the instance ends, or ctx does. When it completed,
// its output is decoded into out (when out is not nil) as
// encoding/json.Unmarshal would; when it failed or was cancelled, the
// error matches ErrFailed or ErrCancelled and carries the reason. The
// instance is returned in every case where it was read.
//
// An instance that does not exist yet is waited for too (a start that was
// rejected never appears: bound ctx).
func (c *Client) Wait(ctx context.Context, instance string, out any) (*workflow.Instance, error) {
	if err := c.ready(ctx); err != nil {
		return nil, err
	}
	wake := make(chan struct{}, 1)
	var sub *jetstream.DoneSubscription
	defer func() {
		if sub != nil {
			sub.Stop()
		}
	}()
	// The done announcement wakes the wait early; the instance bucket is
	// the truth, read at least once a second.
	for poll := 20 * time.Millisecond; ; poll = min(2*poll, time.Second) {
		inst, _, err := c.a.GetInstance(ctx, instance)
		switch {
		case err == nil && inst.Status.Terminal():
			return inst, c.result(ctx, inst, out)
		case err != nil && !errors.Is(err, workflow.ErrNotFound):
			return nil, err
		}
		if sub == nil && inst != nil {
			// Best effort: without the announcement the loop still
			// polls the bucket, only later.
			sub, _ = c.a.SubscribeDone(inst.Workflow, func(id string, _ workflow.Status) {
				if id == instance {
					select {
					case wake <- struct{}{}:
					default:
					}
				}
			})
		}
		select {
		case <-ctx.Done():
			return inst, ctx.Err()
		case <-wake:
		case <-time.After(poll):
		}
	}
}

// result is Wait's answer for an ended instance.
func (c *Client) result(ctx context.Context, inst *workflow.Instance, out any) error {
	switch inst.Status {
	case workflow.StatusFailed:
		return fmt.Errorf("%w: %s: %s", ErrFailed, inst.ID, inst.Error)
	case workflow.StatusCancelled:
		return fmt.Errorf("%w: %s: %s", ErrCancelled, inst.ID, inst.Error)
	}
	if out == nil || inst.OutputRef == "" {
		return nil
	}
	raw, err := c.a.DataRaw(ctx, inst.OutputRef)
	if err != nil {
		return fmt.Errorf("output of %s: %w", inst.ID, err)
	}
	if err := jetstream.DecodeInto(raw, out); err != nil {
		return fmt.Errorf("output of %s: %w", inst.ID, err)
	}
	return nil
}

// encode encodes a user value as encoding/json.Marshal would; a
// json.RawMessage is kept byte for byte, as a published payload is (the
// adapter checks it is one JSON value within the limits).
func encode(v any) ([]byte, error) {
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	return jetstream.EncodeValue(v)
}

// ListOptions selects instances for List; zero fields select all.
type ListOptions struct {
	Workflow string
	Status   workflow.Status
	EventKey string
	// Limit keeps the most recent Limit instances. Default 0: all.
	Limit int
}

// List returns the instances that match o, most recently created first.
// It reads every instance, so it suits operators and tests, not a hot
// path.
func (c *Client) List(ctx context.Context, o ListOptions) ([]*workflow.Instance, error) {
	if err := c.ready(ctx); err != nil {
		return nil, err
	}
	return c.a.Instances(ctx, jetstream.InstanceFilter(o))
}
