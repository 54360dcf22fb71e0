package worker

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/internal/link"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// Handler runs one attempt of a task. See the package documentation for
// how its outcome is reported.
type Handler func(ctx context.Context, t *Task) (any, error)

// Task is one attempt of a task step, as a handler sees it.
type Task struct {
	Instance    string
	Workflow    string
	Step        string
	Type        string
	Attempt     int
	MaxAttempts int
	// EffectKey is the step's idempotency key: the same on every attempt
	// and every redelivery. Pass it to downstream systems.
	EffectKey string
	input     []byte
}

// Input returns the decoded input as expressions see it:
// map[string]any, []any, string, bool, nil, and exact numbers (an integer
// is an int64, or a uint64, or beyond 64 bits a json.Number with its
// digits; another number a float64 when that holds it exactly, else a
// json.Number). Returning it as the output writes the same JSON back.
func (t *Task) Input() (any, error) { return jetstream.DecodeValue(t.input) }

// Bind decodes the input into v exactly as encoding/json.Unmarshal would
// decode the input's JSON: json tags, case-insensitive field names,
// json.Unmarshaler, time.Time from RFC 3339 strings, json.Number,
// *big.Int; numbers in an `any` become float64 (bind into json.Number,
// int64, uint64 or *big.Int to keep large integers exact, or into
// json.RawMessage for the input's bytes). An input jetflow cannot decode
// matches jetflow.ErrMalformed; a type mismatch is encoding/json's
// error.
//
// The handler's output is encoded as encoding/json.Marshal would
// (json tags, omitempty, json.Marshaler), so a following step's
// expression reads a field tagged `json:"charged"` as
// steps.<step>.output.charged. An output that JSON cannot hold (NaN, a
// channel) or that is nested deeper than workflow.MaxDepth, or larger
// than the payload limit, fails the attempt permanently.
func (t *Task) Bind(v any) error { return jetstream.DecodeInto(t.input, v) }

func init() {
	// jetflowtest.NewTask makes tasks the way the worker does.
	link.Task = func(f link.TaskFields, input []byte) any {
		return &Task{
			Instance: f.Instance, Workflow: f.Workflow, Step: f.Step, Type: f.Type,
			Attempt: f.Attempt, MaxAttempts: f.MaxAttempts, EffectKey: f.EffectKey, input: input,
		}
	}
}

// Config configures a worker.
type Config struct {
	// Concurrency is the most handlers running at once, over all task
	// types. Default 16.
	Concurrency int
	// ShutdownTimeout is how long Run waits for running handlers after ctx
	// ends before cancelling them. Default 30s.
	ShutdownTimeout time.Duration
	// HeartbeatInterval is how often the ack deadline of every task the
	// worker holds (running, or pulled and waiting for a slot) is
	// extended. Default: a fifth of the consumer's AckWait (2s of the
	// default 10s), so four heartbeats in a row can be late or lost before
	// a live worker's task is redelivered.
	HeartbeatInterval time.Duration
	// MaxDeliveries: a task delivered this many times without a result
	// (workers crashing on it) is reported as a failed attempt. Default 10.
	MaxDeliveries int
	// Prefetch is how many tasks per task type are pulled ahead of free
	// handler slots (their ack deadlines are kept alive while they wait).
	// Default Concurrency/4 (at least 1).
	Prefetch int
	// Name identifies the worker in `jetflow workers`. Default
	// "<host>-<pid>".
	Name string
	// PresenceInterval is how often the worker writes its presence record
	// (jetflow workers); the record expires two intervals and a second
	// after the last write. Default 2s; negative: never.
	PresenceInterval time.Duration
	// Tracer records a span for every task attempt, a child of the span
	// of its step (see the tracing package). Default nil: no spans; the
	// handler's ctx still carries the step's span context when the task
	// has one.
	Tracer trace.TracerProvider
	// IOTimeout bounds one try of a NATS call around a task (load input,
	// store output, publish result); failed tries are retried with backoff
	// while the task's heartbeat runs, until the worker shuts down.
	// Default 5s.
	IOTimeout time.Duration
	// Logger. Default: discarded.
	Logger zerolog.Logger
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults(ackWait time.Duration) Config {
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = ackWait / 5
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = 10
	}
	if c.Prefetch == 0 {
		c.Prefetch = max(1, c.Concurrency/4)
	}
	if c.IOTimeout == 0 {
		c.IOTimeout = 5 * time.Second
	}
	if c.Name == "" {
		c.Name = jetstream.DefaultProcessName()
	}
	if c.PresenceInterval == 0 {
		c.PresenceInterval = 2 * time.Second
	}
	return c
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("concurrency must be positive, got %d", c.Concurrency)
	case c.HeartbeatInterval < 100*time.Millisecond:
		return fmt.Errorf("heartbeat interval %s is below 100ms", c.HeartbeatInterval)
	case c.MaxDeliveries < 1:
		return fmt.Errorf("max deliveries must be positive, got %d", c.MaxDeliveries)
	case c.IOTimeout < 100*time.Millisecond:
		return fmt.Errorf("io timeout %s is below 100ms", c.IOTimeout)
	}
	return nil
}

// Worker runs handlers for the task types registered with Handle.
type Worker struct {
	cfg      Config
	app      *jetflow.Client
	client   *jetstream.Client // app's adapter
	log      zerolog.Logger
	handlers map[string]Handler
	sem      chan struct{}
	metrics  *metrics
	tracer   trace.Tracer // nil unless Config.Tracer is set
	// fetching is set while Run pulls tasks (Ready).
	fetching atomic.Bool
	// effectsDenied is set once the server refused this worker a write
	// to the effects bucket: once steps are then claimed through the
	// dispatchers even without task tokens (once.go).
	effectsDenied atomic.Bool
}

// New creates a worker on client. Run binds to jetflow's buckets, waiting
// for a dispatcher to provision them.
func New(client *jetflow.Client, cfg Config) (*Worker, error) {
	if client == nil {
		return nil, errors.New("worker: nil *jetflow.Client")
	}
	adapter := link.Adapter(client)
	cfg = cfg.WithDefaults(adapter.Config().WorkerAckWait)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	sem := make(chan struct{}, cfg.Concurrency)
	var tracer trace.Tracer
	if cfg.Tracer != nil {
		tracer = cfg.Tracer.Tracer(tracerName)
	}
	return &Worker{
		tracer:   tracer,
		cfg:      cfg,
		app:      client,
		client:   adapter,
		log:      cfg.Logger.With().Str("component", "worker").Logger(),
		handlers: map[string]Handler{},
		sem:      sem,
		metrics:  newMetrics(sem),
	}, nil
}

// Handle registers the handler of a task type. Call it before Run.
func (w *Worker) Handle(taskType string, h Handler) error {
	if err := workflow.ValidateName("task type", taskType); err != nil {
		return err
	}
	if _, dup := w.handlers[taskType]; dup {
		return fmt.Errorf("task type %q registered twice", taskType)
	}
	w.handlers[taskType] = h
	return nil
}

// ErrNotReady matches what Ready reports while the worker cannot do its
// work.
var ErrNotReady = errors.New("not ready")

// Ready reports whether the worker does its work now: Run has bound the
// consumers of its task types and pulls, and the connection to NATS is
// up. Its error (matching ErrNotReady) says what is missing. /readyz
// answers from it.
func (w *Worker) Ready() error {
	switch {
	case !w.fetching.Load():
		return fmt.Errorf("%w: the worker is not pulling tasks (starting or stopping)", ErrNotReady)
	case !w.client.Connected():
		return fmt.Errorf("%w: not connected to NATS", ErrNotReady)
	}
	return nil
}

// TaskTypes lists the registered task types.
func (w *Worker) TaskTypes() []string {
	out := make([]string, 0, len(w.handlers))
	for t := range w.handlers {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// bind binds the client to jetflow's buckets, waiting for a dispatcher to
// provision them: soon after it when both start together (100 ms,
// doubling up to 2 s), logged once a second has passed. It returns nil
// when ctx ends first, and at once when the NATS user may not bind.
func (w *Worker) bind(ctx context.Context) error {
	for wait, waited := 100*time.Millisecond, time.Duration(0); ; wait = min(2*wait, 2*time.Second) {
		err := link.Ready(ctx, w.app)
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrPermissionDenied) {
			return err
		}
		if waited >= time.Second {
			w.log.Warn().Err(err).Msg("waiting for jetflow to be provisioned")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		waited += wait
	}
}

// Run binds the client (waiting for jetflow to be provisioned), then
// pulls and runs tasks until ctx ends, then drains: it stops pulling,
// waits up to ShutdownTimeout for running handlers, then cancels them and
// returns their tasks for redelivery.
func (w *Worker) Run(ctx context.Context) error {
	if len(w.handlers) == 0 {
		return errors.New("worker has no handlers; register task types with Handle")
	}
	if err := w.bind(ctx); err != nil || ctx.Err() != nil {
		return err
	}
	// Handlers run under hardCtx, which outlives ctx by ShutdownTimeout.
	hardCtx, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	var fetchers, running sync.WaitGroup
	errs := make(chan error, len(w.handlers))
	for _, tt := range w.TaskTypes() {
		tc, err := w.client.EnsureTaskConsumer(ctx, tt)
		if err != nil && ctx.Err() != nil {
			break // stopped while starting: drain what started
		}
		if err != nil {
			return err
		}
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			if err := w.fetchLoop(ctx, hardCtx, tt, tc, &running); err != nil {
				errs <- err
			}
		}()
	}
	w.log.Info().Strs("task_types", w.TaskTypes()).Int("concurrency", w.cfg.Concurrency).Msg("worker running")
	w.fetching.Store(true)
	stopPresence := w.announce()
	defer stopPresence()
	<-ctx.Done()
	w.fetching.Store(false)
	fetchers.Wait()
	w.log.Info().Msg("worker draining")
	done := make(chan struct{})
	go func() {
		running.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(w.cfg.ShutdownTimeout):
		w.log.Warn().Stringer("timeout", w.cfg.ShutdownTimeout).Msg("handlers still running at shutdown timeout; cancelling them")
		hardCancel()
		<-done
	}
	w.log.Info().Uint64("pull_stalls", w.client.PullStalls()).Uint64("bad_metadata", w.client.BadMetadata()).Msg("worker stopped")
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// pullBackoffMax caps the wait after a failed pull.
const pullBackoffMax = 30 * time.Second

// fetchLoop pulls tasks of one type and starts each as a handler slot
// (shared by all task types) frees up. It holds at most Prefetch tasks
// that have not started, asks the server for no more than that, and
// heartbeats every one it holds from the moment it arrives: a task this
// worker holds is never redelivered to another worker while this one is
// alive, however long the handlers ahead of it run, and a task held by a
// worker that died is redelivered one ack wait after its last heartbeat.
//
// A pull that fails (the consumer was deleted, the stream is gone, the
// server refuses) is counted in jetflow_worker_pull_failures_total and
// retried after a backoff (100ms doubling up to 30s while pulls keep
// failing), binding the task type's consumer again first (creating it
// when this worker may), so the loop never stops serving its type and
// never spins on a failing pull.
func (w *Worker) fetchLoop(ctx, hardCtx context.Context, taskType string, tc *jetstream.TaskConsumer, running *sync.WaitGroup) error {
	h := w.handlers[taskType]
	var (
		queue   []*jetstream.Msg     // arrived, not started; heartbeated
		batch   *jetstream.TaskBatch // the pull request in flight, if any
		retry   <-chan time.Time     // set after a failed pull
		backoff time.Duration        // the wait after the last failed pull
		rebind  bool                 // bind the consumer again before the next pull
	)
	pullFailed := func(err error) {
		w.metrics.pullFailures.WithLabelValues(taskType).Inc()
		backoff = min(max(2*backoff, 100*time.Millisecond), pullBackoffMax)
		w.log.Warn().Err(err).Str("task_type", taskType).Stringer("retry_in", backoff).Msg("pull failed; binding the consumer again and retrying")
		retry = time.After(backoff)
		rebind = true
	}
	tick := time.NewTicker(w.cfg.HeartbeatInterval)
	defer tick.Stop()
	defer func() {
		// Hand back what arrived but did not start, so other workers get
		// it at once.
		if batch != nil {
			for m := range batch.Messages() {
				queue = append(queue, m)
			}
		}
		for _, m := range queue {
			_ = m.Nak(0)
		}
	}()
	for {
		if rebind && retry == nil {
			bctx, cancel := context.WithTimeout(ctx, w.cfg.IOTimeout)
			c, err := w.client.EnsureTaskConsumer(bctx, taskType)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				pullFailed(err)
			} else {
				tc, rebind = c, false
			}
		}
		if batch == nil && retry == nil && len(queue) < w.cfg.Prefetch {
			b, err := tc.Fetch(ctx, w.cfg.Prefetch-len(queue))
			if err != nil {
				pullFailed(err)
			} else {
				batch = b
			}
		}
		var msgs <-chan *jetstream.Msg
		if batch != nil {
			msgs = batch.Messages()
		}
		var slot chan<- struct{}
		if len(queue) > 0 {
			slot = w.sem
		}
		select {
		case m, ok := <-msgs:
			if !ok {
				err := batch.Err()
				batch = nil
				switch {
				case err != nil && ctx.Err() == nil:
					pullFailed(err)
				case err == nil:
					backoff = 0
				}
				continue
			}
			queue = append(queue, m)
		case slot <- struct{}{}:
			m := queue[0]
			queue[0] = nil
			queue = queue[1:]
			running.Add(1)
			go func() {
				defer running.Done()
				defer func() { <-w.sem }()
				w.execute(hardCtx, h, m)
			}()
		case <-tick.C:
			for _, m := range queue {
				_ = m.InProgress()
			}
		case <-retry:
			retry = nil
		case <-ctx.Done():
			// The pull in flight ends with ctx; what it brought is handed
			// back by the deferred func.
			return nil
		}
	}
}
