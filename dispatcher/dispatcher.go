package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasktoken"
	"github.com/jetflow/jetflow/workflow"
)

// Config configures a dispatcher.
type Config struct {
	// Shards is the number of goroutines applying events; events of one
	// instance always go to the same shard. Default 64.
	Shards int
	// Buffer is how many messages each consumer keeps in flight. Default
	// 512: messages wait in this buffer while their ack wait runs.
	Buffer int
	// BatchSize is the most events a shard applies in one pass. Default 256.
	BatchSize int
	// MaxDeliveries is how often an event that keeps failing for transient
	// reasons is delivered before it is dead-lettered. Default 50, which
	// with the backoff (RetryDelay doubling up to 30s) is about 20 minutes.
	MaxDeliveries int
	// RetryDelay is the delay before a failed event is first redelivered;
	// it doubles with each further delivery, up to 30s. Default 1s.
	RetryDelay time.Duration
	// CacheSize bounds the running instances kept in memory (with their
	// revision) over all shards; terminal ones are dropped at once. A miss
	// costs one KV read. Default 20000.
	CacheSize int
	// RepairInterval is how often the repair loop looks for instances that
	// stopped making progress. Default 5s; negative disables the loop.
	RepairInterval time.Duration
	// StaleTask: a task attempt without a timeout that has had no result
	// for this long is presumed lost and retried. Default 10m.
	StaleTask time.Duration
	// TimerGrace: a timer this far past due is presumed lost and fired by
	// the repair loop. Default 5s.
	TimerGrace time.Duration
	// StaleBulk: a bulk step whose instance did not change for this long
	// gets its counts rebuilt from the per-child barriers. Default 30s.
	StaleBulk time.Duration
	// StaleGate: an instance or attempt that has waited this long for a
	// concurrency slot or a rate-limit start has what its wait owes (its
	// acquire, its rate retry) published again, in case it was lost;
	// again every StaleGate while it waits. Default 1m.
	StaleGate time.Duration
	// SlotRepairInterval is how often the repair loop reconciles the
	// concurrency slot records with the instance states (a holder whose
	// instance ended or moved on is dropped and waiters promoted), when
	// a definition has a concurrency limit. It bounds how long a slot
	// whose release was lost stays taken. Default 10s.
	SlotRepairInterval time.Duration
	// TaskGuardInterval is how often the dispatcher looks for messages in
	// the task stream whose task type no registered definition uses (no
	// worker takes them, so they would stay for good) and dead-letters
	// those stored more than TaskGuardGrace ago. Default 1m; negative
	// disables it.
	TaskGuardInterval time.Duration
	// TaskGuardGrace: see TaskGuardInterval. Default 10m, so the tasks of
	// a definition being registered are never taken for junk.
	TaskGuardGrace time.Duration
	// ForceRepairs repairs every running attempt on every sweep, up to
	// attempt workflow.ForcedAttempts (tests: makes repairs race real
	// completions). Default false.
	ForceRepairs bool
	// StatsInterval is how often counters are logged (0: default 30s,
	// negative: never).
	StatsInterval time.Duration
	// Name identifies the dispatcher in `jetflow stats` and `jetflow
	// dispatchers`. Default "<host>-<pid>".
	Name string
	// PresenceInterval is how often the dispatcher writes its presence
	// record (jetflow dispatchers); it expires two intervals and a second
	// after the last write. Default 2s; negative: never.
	PresenceInterval time.Duration
	// BacklogInterval is how often the task queues are read for the
	// jetflow_task_backlog metrics. Default 5s; negative: never.
	BacklogInterval time.Duration
	// Tracer records the spans of workflow runs, steps and dispatcher
	// passes (see the tracing package; make it with
	// sdktrace.WithIDGenerator(tracing.IDs{})). Default nil: no spans; a
	// trigger's traceparent is still carried to the tasks.
	Tracer trace.TracerProvider
	// TaskTokens signs every task with a token bound to its instance,
	// step and attempt, and accepts a result only with that token (the
	// worker echoes it): a forged result is dead-lettered with reason
	// "forged result". Every dispatcher of a deployment must use the same
	// keys. Default nil: tasks carry no token and any result on an
	// instance's result subject is accepted, so a NATS user allowed to
	// publish results (the worker role) can complete any step of any
	// instance.
	TaskTokens *tasktoken.Keyring
	// Clock returns the current time. Default time.Now.
	Clock func() time.Time
	// Logger. Default: discarded.
	Logger zerolog.Logger
	// PassTimeout bounds one pass over an instance's events, requests
	// included; its events are then retried with backoff. Each request
	// within the pass has its own, shorter bound
	// (jetstream.Config.RequestTimeout): a request sent to a stream
	// leader that just died is given up after that, so the shard, which
	// holds every instance hashed to it, is not held for the whole pass.
	// Default 15s.
	PassTimeout time.Duration
	// OpTimeout bounds an operation on a message outside a pass:
	// dead-lettering it, finding the run a trigger starts, reading a
	// definition, capturing a trigger subject, a read of the repair loop
	// or of the task queues. Default 10s.
	OpTimeout time.Duration
	// ShutdownTimeout is how long Run, once its context ended, waits for
	// the events already queued to be applied; then it cancels the passes
	// still running, and their events are redelivered. Default 30s.
	ShutdownTimeout time.Duration
	// RecountInterval is the least time between two recounts of one bulk
	// step caused by redelivered completions whose barrier exists (after
	// a restart many arrive at once, and one recount covers every barrier
	// that existed when it started); a completion that arrives sooner
	// schedules a recount for when the interval has passed. Default 2s.
	RecountInterval time.Duration
	// BatchWait is how long a shard waits after the first event of a
	// batch before it takes the rest, so events published together are
	// applied in one pass (fewer writes of a busy instance, at the cost of
	// latency). Default 0: a shard takes what is queued at once.
	BatchWait time.Duration
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Shards == 0 {
		c.Shards = 64
	}
	if c.Buffer == 0 {
		c.Buffer = 512
	}
	if c.BatchSize == 0 {
		c.BatchSize = 256
	}
	if c.MaxDeliveries == 0 {
		c.MaxDeliveries = 50
	}
	if c.RetryDelay == 0 {
		c.RetryDelay = time.Second
	}
	if c.RepairInterval == 0 {
		c.RepairInterval = 5 * time.Second
	}
	if c.StaleTask == 0 {
		c.StaleTask = 10 * time.Minute
	}
	if c.TimerGrace == 0 {
		c.TimerGrace = 5 * time.Second
	}
	if c.StaleBulk == 0 {
		c.StaleBulk = 30 * time.Second
	}
	if c.StaleGate == 0 {
		c.StaleGate = time.Minute
	}
	if c.SlotRepairInterval == 0 {
		c.SlotRepairInterval = 10 * time.Second
	}
	if c.TaskGuardInterval == 0 {
		c.TaskGuardInterval = time.Minute
	}
	if c.TaskGuardGrace == 0 {
		c.TaskGuardGrace = 10 * time.Minute
	}
	if c.CacheSize == 0 {
		c.CacheSize = 20000
	}
	if c.StatsInterval == 0 {
		c.StatsInterval = 30 * time.Second
	}
	if c.Name == "" {
		c.Name = jetstream.DefaultProcessName()
	}
	if c.PresenceInterval == 0 {
		c.PresenceInterval = 2 * time.Second
	}
	if c.BacklogInterval == 0 {
		c.BacklogInterval = 5 * time.Second
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.PassTimeout == 0 {
		c.PassTimeout = 15 * time.Second
	}
	if c.OpTimeout == 0 {
		c.OpTimeout = 10 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 30 * time.Second
	}
	if c.RecountInterval == 0 {
		c.RecountInterval = defaultRecountInterval
	}
	return c
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	switch {
	case c.Shards < 1 || c.Shards > 1024:
		return fmt.Errorf("shards must be between 1 and 1024, got %d", c.Shards)
	case c.Buffer < 1:
		return fmt.Errorf("buffer must be positive, got %d", c.Buffer)
	case c.BatchSize < 1:
		return fmt.Errorf("batch size must be positive, got %d", c.BatchSize)
	case c.MaxDeliveries < 1:
		return fmt.Errorf("max deliveries must be positive, got %d", c.MaxDeliveries)
	case c.PassTimeout < 0 || c.OpTimeout < 0 || c.ShutdownTimeout < 0:
		return fmt.Errorf("pass, op and shutdown timeouts must be positive, got %s, %s, %s", c.PassTimeout, c.OpTimeout, c.ShutdownTimeout)
	case c.RecountInterval < 0:
		return fmt.Errorf("recount interval must not be negative, got %s", c.RecountInterval)
	case c.BatchWait < 0:
		return fmt.Errorf("batch wait must not be negative, got %s", c.BatchWait)
	}
	return nil
}

// Dispatcher drives workflow instances.
type Dispatcher struct {
	cfg    Config
	client Backend
	log    zerolog.Logger
	defs   *registry
	shards []*shard
	stats  *metrics
	// consuming is set while Run consumes triggers and events (Ready).
	consuming atomic.Bool
	// ran is set by the first call of Run.
	ran atomic.Bool
	// schedulesReady is set once the definitions stored at start are
	// loaded: from then on a definition syncs its schedules on arrival.
	schedulesReady atomic.Bool
	// tracer is nil unless Config.Tracer is set; traceCtx is the
	// context its spans start from.
	tracer   trace.Tracer
	traceCtx context.Context
	// stopping is closed when Run begins shutting down; message handlers
	// then NAK instead of queueing.
	stopping chan struct{}
	// gate is held (read) by message handlers while they enqueue, so Run
	// can wait for them before closing the shard channels.
	gate sync.RWMutex
	// slots is set once a definition with a concurrency limit was
	// loaded: the repair loop then reconciles the slot records.
	slots atomic.Bool
	// pauses: the paused workflows (pause.go).
	pauses *pauses
}

// New creates a dispatcher on a provisioned backend (a *jetstream.Client).
func New(client Backend, cfg Config) (*Dispatcher, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dispatcher config: %w", err)
	}
	d := &Dispatcher{
		cfg:      cfg,
		client:   client,
		log:      cfg.Logger.With().Str("component", "dispatcher").Logger(),
		defs:     newRegistry(),
		stopping: make(chan struct{}),
		pauses:   newPauses(),
	}
	d.stats = newMetrics(client.PullStalls, client.BadMetadata)
	if cfg.Tracer != nil {
		d.tracer, d.traceCtx = cfg.Tracer.Tracer(tracerName), context.Background()
	}
	for i := 0; i < cfg.Shards; i++ {
		d.shards = append(d.shards, &shard{d: d, in: make(chan *item, cfg.BatchSize*2), cache: map[string]*cached{}, bar: newBarriers(d), owed: map[string]uint64{}})
	}
	return d, nil
}

// ErrNotReady matches what Ready reports while the dispatcher cannot do
// its work.
var ErrNotReady = errors.New("not ready")

// Ready reports whether the dispatcher does its work now: Run has loaded
// the definitions, bound the streams and consumers and consumes, and the
// connection to NATS is up. Its error (matching ErrNotReady) says what is
// missing. /readyz answers from it.
func (d *Dispatcher) Ready() error {
	switch {
	case !d.consuming.Load():
		return fmt.Errorf("%w: the dispatcher is not consuming (starting, loading definitions, or stopping)", ErrNotReady)
	case !d.client.Connected():
		return fmt.Errorf("%w: not connected to NATS", ErrNotReady)
	}
	return nil
}

// Stats returns the counters, summed over their labels.
func (d *Dispatcher) Stats() Stats { return d.stats.stats() }

// ErrRunTwice is what a second call of Run returns: a Dispatcher runs
// once; make a new one to run again.
var ErrRunTwice = errors.New("dispatcher: Run was already called; a Dispatcher runs once")

// Run consumes triggers and events until ctx ends, then drains: it stops
// fetching, finishes the events already queued (for at most
// ShutdownTimeout, then cancels the passes still running, whose events are
// redelivered) and returns. It returns an error when it cannot start (the
// definitions cannot be watched, a consumer cannot be bound), and
// ErrRunTwice when called a second time. A background loop that fails
// once running (the definitions watch, the repair loop, the stats
// responder) is restarted with backoff and counted in
// jetflow_loop_restarts_total.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.ran.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	// Requests run under hardCtx: it keeps ctx's values, outlives ctx by
	// at most ShutdownTimeout (the drain), and ends when Run returns.
	hardCtx, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	// The loops (definitions watch, repair, stats...) run under watchCtx,
	// owned by wg; they stop after the shards drained.
	watchCtx, stopWatch := context.WithCancel(hardCtx)
	defer stopWatch()
	var wg sync.WaitGroup
	stopLoops := func() {
		stopWatch()
		wg.Wait()
	}
	if err := d.startDefinitions(ctx, watchCtx, &wg); err != nil || ctx.Err() != nil {
		stopLoops()
		return err
	}
	// The pause records are applied before the first event: a
	// dispatcher that starts while a workflow is paused holds its
	// attempts from the start.
	if err := d.startPauses(ctx, watchCtx, &wg); err != nil || ctx.Err() != nil {
		stopLoops()
		return err
	}
	if err := d.client.EnsureTriggerSubjects(ctx, d.defs.triggerSubjects()...); err != nil {
		stopLoops()
		return err
	}
	// Definitions that arrive from now on sync their own schedules.
	d.schedulesReady.Store(true)
	for _, def := range d.defs.latestAll() {
		d.syncSchedules(ctx, def)
	}

	var shardWG sync.WaitGroup
	for _, s := range d.shards {
		shardWG.Add(1)
		go func() {
			defer shardWG.Done()
			s.run(hardCtx)
		}()
	}
	var subs []*jetstream.Subscription
	stop := func() {
		close(d.stopping)
		for _, s := range subs {
			s.Stop()
		}
		d.drainShards(&shardWG, hardCancel)
		stopLoops()
	}
	subs, err := d.consume(ctx, hardCtx)
	if err != nil {
		stop()
		return stoppedWhileStarting(ctx, err)
	}
	d.consuming.Store(true)
	defer d.consuming.Store(false)
	d.startLoops(watchCtx, &wg)
	d.log.Info().Int("shards", d.cfg.Shards).Stringer("repair_interval", d.cfg.RepairInterval).Msg("dispatcher running")
	var tick <-chan time.Time
	if d.cfg.StatsInterval > 0 {
		t := time.NewTicker(d.cfg.StatsInterval)
		defer t.Stop()
		tick = t.C
	}
	var last Stats
	for {
		select {
		case <-ctx.Done():
			d.log.Info().Msg("dispatcher draining")
			d.consuming.Store(false)
			stop()
			d.log.Info().Object("stats", d.Stats()).Msg("dispatcher stopped")
			return nil
		case <-tick:
			if s := d.Stats(); s != last {
				last = s
				d.log.Info().Object("stats", s).Msg("dispatcher stats")
			}
		}
	}
}

// startDefinitions starts the definitions watch (owned by wg, supervised
// under watchCtx once it delivered the stored definitions) and returns
// when the stored definitions are loaded, when it failed before that, or
// when ctx ended (then with nil: Run returns without starting).
func (d *Dispatcher) startDefinitions(ctx, watchCtx context.Context, wg *sync.WaitGroup) error {
	ready := make(chan struct{})
	var readyOnce sync.Once
	markReady := func() { readyOnce.Do(func() { close(ready) }) }
	addDefinition := func(def *workflow.Definition) { d.addDefinition(watchCtx, def) }
	watchErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := d.client.WatchDefinitions(watchCtx, addDefinition, markReady)
		select {
		case <-ready:
		default:
			watchErr <- err // Run cannot start
			return
		}
		d.supervise(watchCtx, loopDefinitions, err, func(ctx context.Context) error {
			return d.client.WatchDefinitions(ctx, addDefinition, func() {})
		})
	}()
	select {
	case <-ready:
		return nil
	case err := <-watchErr:
		if err == nil {
			err = errors.New("the definitions watch ended before it delivered the stored definitions")
		}
		return fmt.Errorf("watch definitions: %w", err)
	case <-ctx.Done():
		return nil
	}
}

// consume starts the consumers of triggers, events and schedule fires,
// and the guard of the timer subjects; their handlers run under hardCtx.
// On error the subscriptions started so far are returned, for the
// caller to stop.
func (d *Dispatcher) consume(ctx, hardCtx context.Context) ([]*jetstream.Subscription, error) {
	subs := make([]*jetstream.Subscription, 0, 4)
	for _, spec := range []struct {
		stream string
		fn     func(context.Context, jetstream.Delivery)
	}{{jetstream.StreamTriggers, d.onTrigger}, {jetstream.StreamEvents, d.onEvent}, {jetstream.StreamSchedules, d.onFire}} {
		sub, err := d.client.ConsumeDispatcher(ctx, spec.stream, d.cfg.Buffer, func(m jetstream.Delivery) { spec.fn(hardCtx, m) })
		if err != nil {
			return subs, err
		}
		subs = append(subs, sub)
	}
	guard, err := d.client.GuardTimerSubjects(hardCtx, func(subject, reason string) {
		d.stats.deadLetters.WithLabelValues(reasonTimerJunk).Inc()
		d.log.Warn().Str("subject", subject).Str("reason", reason).Msg("message dead-lettered")
	})
	if err != nil {
		return subs, err
	}
	return append(subs, guard), nil
}

// drainShards closes the shards' queues once no handler enqueues any
// more, and waits for them to finish what is queued, for at most
// ShutdownTimeout; then it cancels their passes (hardCancel): the events
// they hold are redelivered.
func (d *Dispatcher) drainShards(shardWG *sync.WaitGroup, hardCancel context.CancelFunc) {
	d.gate.Lock() // no handler is enqueueing any more
	for _, s := range d.shards {
		close(s.in)
	}
	d.gate.Unlock()
	drained := make(chan struct{})
	go func() {
		shardWG.Wait()
		close(drained)
	}()
	t := time.NewTimer(d.cfg.ShutdownTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		d.log.Warn().Stringer("timeout", d.cfg.ShutdownTimeout).Msg("events still queued at the shutdown timeout; cancelling their passes (they are redelivered)")
		hardCancel()
		<-drained
	}
}

// startLoops starts the dispatcher's background loops under ctx, owned
// by wg: presence, task backlog, task guard, effect service, stats
// answers and repair (the last three supervised: restarted with backoff
// when they fail).
func (d *Dispatcher) startLoops(ctx context.Context, wg *sync.WaitGroup) {
	start := func(on bool, loop func(context.Context)) {
		if !on {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	start(d.cfg.PresenceInterval > 0, d.announce)
	start(d.cfg.BacklogInterval > 0, d.watchBacklog)
	start(d.cfg.TaskGuardInterval > 0, d.guardTasks)
	// The effect service: with task tokens (and wherever workers may not
	// write the effects bucket) the dispatchers claim and record the
	// effects of once steps for the workers (effects.go).
	start(true, func(ctx context.Context) {
		d.supervise(ctx, loopEffects, nil, func(ctx context.Context) error {
			return d.client.ServeEffects(ctx, d.serveEffect, d.effectDropped)
		})
	})
	start(true, func(ctx context.Context) {
		d.supervise(ctx, loopStats, nil, func(ctx context.Context) error {
			return d.client.ServeStats(ctx, d.cfg.Name, func() any { return d.Stats() }, d.pauses.rev.Load)
		})
	})
	start(d.cfg.RepairInterval > 0, func(ctx context.Context) {
		d.supervise(ctx, loopRepair, nil, func(ctx context.Context) error {
			return (&repairLoop{d: d}).run(ctx)
		})
	})
}

// Background loops that Run restarts when they fail: the loop label of
// jetflow_loop_restarts_total.
const (
	loopDefinitions = "definitions" // the watch of the definitions bucket
	loopRepair      = "repair"      // the repair loop (and its watch of instance writes)
	loopStats       = "stats"       // the responder of jetflow stats
	loopEffects     = "effects"     // the effect service (claims and outcomes of once steps)
	loopPauses      = "pauses"      // the watch of the pause records
)

// errLoopEnded is the failure of a loop that returned nil before its
// context ended.
var errLoopEnded = errors.New("the loop ended on its own")

// supervise runs loop until ctx ends. Whenever loop fails (failed, when
// not nil, is its failure before supervise was called), the failure is
// logged and counted in jetflow_loop_restarts_total{loop=name}, and loop
// is started again after RetryDelay, doubling up to 30s while it keeps
// failing at once.
func (d *Dispatcher) supervise(ctx context.Context, name string, failed error, loop func(context.Context) error) {
	delay := d.cfg.RetryDelay
	for {
		if failed == nil {
			start := time.Now()
			failed = loop(ctx)
			if ctx.Err() != nil {
				return
			}
			if failed == nil {
				failed = errLoopEnded
			}
			if time.Since(start) > maxRetryDelay {
				delay = d.cfg.RetryDelay // it had been running well
			}
		}
		if ctx.Err() != nil {
			return
		}
		d.stats.loopRestarts.WithLabelValues(name).Inc()
		d.log.Error().Err(failed).Str("loop", name).Stringer("restart_in", delay).Msg("background loop failed; restarting it")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(2*delay, maxRetryDelay)
		failed = nil
	}
}

func (d *Dispatcher) addDefinition(ctx context.Context, def *workflow.Definition) {
	d.defs.add(def)
	if def.UsesSlots() {
		d.slots.Store(true)
	}
	d.log.Info().Str("workflow", def.Name).Int("version", def.Version).Msg("definition loaded")
	if d.schedulesReady.Load() {
		d.syncSchedules(ctx, def)
	}
	if def.Trigger != nil {
		ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
		defer cancel()
		if err := d.client.EnsureTriggerSubjects(ctx, def.Trigger.Subject); err != nil {
			d.log.Error().Err(err).Str("workflow", def.Name).Msg("cannot capture trigger subject")
		}
	}
}

// definition finds a definition, falling back to the KV bucket for one
// stored after the watch last delivered.
func (d *Dispatcher) definition(ctx context.Context, name string, version int) (*workflow.Definition, error) {
	if def := d.defs.get(name, version); def != nil {
		return def, nil
	}
	def, err := d.client.Definition(ctx, name, version)
	if err != nil {
		return nil, err
	}
	d.defs.add(def)
	if def.UsesSlots() {
		d.slots.Store(true)
	}
	return def, nil
}

// item is one event on its way through a shard.
type item struct {
	ev  workflow.Event
	msg jetstream.Delivery
	// reconcile is set on a bulk child's start that is a poke of a
	// reconciliation round (workflow.ReconcileChild).
	reconcile string
	// input is the encoded instance input of a start event, written to
	// the data bucket before the instance is created (nil for bulk
	// children, whose parent wrote it).
	input []byte
	// bar is what this item learned of its child barrier (barriers.go).
	bar barrierState
	// done receives the outcome; nil error means the event was applied
	// (or was a harmless duplicate) and the message may be acked.
	done func(outcome)
}

type outcome struct {
	err    error // transient: retry later
	reject string
	class  string // the reject's reason class (jetflow_dead_letters_total)
}

func (d *Dispatcher) enqueue(it *item) bool {
	d.gate.RLock()
	defer d.gate.RUnlock()
	s := d.shards[shardOf(it.ev.Instance, len(d.shards))]
	select {
	case <-d.stopping:
		return false
	default:
	}
	select {
	case s.in <- it:
		return true
	case <-d.stopping:
		return false
	}
}

func shardOf(id string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}

// reject dead-letters a message with a reason and terminates it; class
// is the reason's label in jetflow_dead_letters_total.
func (d *Dispatcher) reject(ctx context.Context, source string, m jetstream.Delivery, class, reason string) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	if err := d.client.DeadLetter(ctx, source, m, "dispatcher", reason); err != nil {
		d.log.Error().Err(err).Str("subject", m.Subject()).Str("reason", reason).Msg("dead-letter failed; will retry")
		_ = m.Nak(d.cfg.RetryDelay)
		return
	}
	d.stats.deadLetters.WithLabelValues(class).Inc()
	d.log.Warn().Str("subject", m.Subject()).Str("reason", reason).Msg("message dead-lettered")
	_ = m.Term(reason)
	if source == "trigger" {
		// The dead letter keeps what an operator needs; the trigger
		// stream need not keep the payload for another TriggerRetention.
		if err := d.client.Erase(ctx, m); err != nil {
			d.log.Warn().Err(err).Str("subject", m.Subject()).Msg("cannot erase a dead-lettered trigger; it expires with the trigger stream's retention")
		}
	}
}

// settle acks, retries or rejects a message according to its outcome.
func (d *Dispatcher) settle(ctx context.Context, source string, m jetstream.Delivery, o outcome) {
	switch {
	case o.reject != "":
		d.reject(ctx, source, m, o.class, o.reject)
	case o.err != nil:
		if m.Deliveries() >= uint64(d.cfg.MaxDeliveries) {
			d.reject(ctx, source, m, reasonGaveUp, fmt.Sprintf("gave up after %d deliveries: %v", m.Deliveries(), o.err))
			return
		}
		d.stats.retried.Add(1)
		delay := retryBackoff(d.cfg.RetryDelay, m.Deliveries())
		d.log.Warn().Err(o.err).Str("subject", m.Subject()).Uint64("delivery", m.Deliveries()).Stringer("retry_in", delay).Msg("event will be retried")
		_ = m.Nak(delay)
	default:
		_ = m.Ack()
	}
}

// maxRetryDelay caps the backoff between deliveries of a failing event.
const maxRetryDelay = 30 * time.Second

// retryBackoff is the delay before delivery n+1 of an event whose delivery
// n failed: base, doubling per delivery, capped at maxRetryDelay, so
// MaxDeliveries (50) covers about 20 minutes of a NATS outage instead of
// under a minute.
func retryBackoff(base time.Duration, n uint64) time.Duration {
	d := base
	for i := uint64(1); i < n && d < maxRetryDelay; i++ {
		d *= 2
	}
	return min(d, maxRetryDelay)
}

func (d *Dispatcher) onEvent(ctx context.Context, m jetstream.Delivery) {
	d.stats.events.Add(1)
	ev, err := jetstream.DecodeEvent(m.Data())
	if err != nil {
		d.reject(ctx, "event", m, reasonMalformed, err.Error())
		return
	}
	if ev.Kind == workflow.EventStart {
		d.reject(ctx, "event", m, reasonMisrouted, "start events are published on jetflow.start.<workflow>, not on the event subject")
		return
	}
	// An event is published on its instance's subject, or on the subject
	// of its kind there (jetstream.EventKindSubject) by a client whose
	// NATS permissions allow that kind only: a worker may publish on
	// ".result" subjects, which must then carry results.
	if want := jetstream.EventSubject(ev.Instance); m.Subject() != want && m.Subject() != jetstream.EventKindSubject(ev.Instance, ev.Kind) {
		d.reject(ctx, "event", m, reasonMisrouted, fmt.Sprintf("%s event for instance %s published on %s, expected %s or %s", ev.Kind, ev.Instance, m.Subject(), want, jetstream.EventKindSubject(ev.Instance, ev.Kind)))
		return
	}
	if ev.Kind == workflow.EventResult && d.cfg.TaskTokens != nil {
		if err := d.cfg.TaskTokens.Verify(ev.Instance, ev.Step, ev.Attempt, ev.Token, d.cfg.Clock()); err != nil {
			// Changes nothing: only the worker that received the attempt
			// holds its token.
			d.reject(ctx, "event", m, reasonForged, err.Error())
			return
		}
		if ev.OutputRef != "" && ev.OutputRef != workflow.TokenOutputKey(ev.Instance, ev.Step, ev.Attempt, ev.Token) {
			// Another writer may have put a value under a key it could
			// guess; only the attempt's own (token-derived) key counts,
			// or a once step's recorded outcome (one read, on this path
			// only).
			if err := d.checkReplayedOutput(ctx, ev); err != nil {
				if errors.Is(err, tasktoken.ErrForged) {
					d.reject(ctx, "event", m, reasonForged, err.Error())
				} else {
					d.settle(ctx, "event", m, outcome{err: err})
				}
				return
			}
		}
	}
	if !d.enqueue(&item{ev: ev, msg: m, done: func(o outcome) { d.settle(ctx, "event", m, o) }}) {
		_ = m.Nak(0)
	}
}

func (d *Dispatcher) onTrigger(ctx context.Context, m jetstream.Delivery) {
	d.stats.triggers.Add(1)
	maxPayload := d.client.Config().MaxPayload
	if len(m.Data()) > maxPayload {
		d.reject(ctx, "trigger", m, reasonTooLarge, fmt.Sprintf("payload is %d bytes; the limit is %d (jetflow.max_payload)", len(m.Data()), maxPayload))
		return
	}
	defs := d.triggered(ctx, m)
	if defs == nil {
		return // settled
	}
	input, err := payloadOf(m, maxPayload)
	if err != nil {
		d.reject(ctx, "trigger", m, reasonBadPayload, err.Error())
		return
	}
	s, err := d.startsOf(ctx, m, defs, input)
	if err != nil {
		d.settle(ctx, "trigger", m, failure(err))
		return
	}
	if len(s.items) == 0 && s.debounced == 0 {
		d.reject(ctx, "trigger", m, reasonEventKey, strings.Join(s.problems, "; "))
		return
	}
	if len(s.items) == 0 {
		// Every start joined a debounce window; record the bindings that
		// could not.
		if err := d.deadLetterProblems(ctx, m, s.problems); err != nil {
			_ = m.Nak(d.cfg.RetryDelay)
			return
		}
		_ = m.Ack()
		return
	}
	d.enqueueStarts(ctx, m, s)
}

// triggered returns the definitions a trigger starts: the one an explicit
// start names (jetflow.start.<workflow>), or those bound to its subject.
// It returns nil when it settled the message itself: dead-lettered (no
// such workflow, no binding), handed to a bulk parent's child start
// (onChildStart), or given back.
func (d *Dispatcher) triggered(ctx context.Context, m jetstream.Delivery) []*workflow.Definition {
	name, explicit := jetstream.StartedWorkflow(m.Subject())
	if !explicit {
		defs := d.defs.bound(m.Subject())
		if len(defs) == 0 {
			d.reject(ctx, "trigger", m, reasonNoBinding, fmt.Sprintf("no registered workflow is triggered by subject %q", m.Subject()))
			return nil
		}
		return defs
	}
	def := d.latestDefinition(ctx, name)
	parent, child := parentOf(m)
	switch {
	case def == nil:
		reason := fmt.Sprintf("unknown workflow %q: no definition is registered under that name", name)
		if child {
			// A bulk parent must not wait for a child that cannot start.
			if err := d.failChild(ctx, m, parent, reason); err != nil {
				_ = m.Nak(d.cfg.RetryDelay)
				return nil
			}
		}
		d.reject(ctx, "trigger", m, reasonUnknownWorkflow, reason)
		return nil
	case child:
		d.onChildStart(ctx, m, def, parent)
		return nil
	}
	return []*workflow.Definition{def}
}

// starts is what one trigger message starts.
type starts struct {
	items []*item
	// problems: the bindings that cannot start (no usable event key, too
	// many runs), each with its reason.
	problems []string
	// debounced: how many starts joined a debounce window instead.
	debounced int
}

// startsOf builds the start events of a trigger for each definition it
// starts, with the instance id from the event key and the run the
// definition's on_duplicate chooses. An error is transient: the message
// is retried.
func (d *Dispatcher) startsOf(ctx context.Context, m jetstream.Delivery, defs []*workflow.Definition, input []byte) (starts, error) {
	// The decoded payload only when a key is read from it.
	var payload any
	var payloadErr error
	decoded := false
	value := func() (any, error) {
		if !decoded {
			payload, payloadErr = workflow.DecodeJSON(input)
			decoded = true
		}
		return payload, payloadErr
	}
	_, explicit := jetstream.StartedWorkflow(m.Subject())
	digest := workflow.Digest(m.Data())
	var s starts
	for _, def := range defs {
		key, err := eventKey(def, m, value)
		if err != nil {
			s.problems = append(s.problems, fmt.Sprintf("workflow %s: %v", def.Name, err))
			continue
		}
		if deb, maxWait := def.Trigger.Debounces(); deb > 0 && !explicit {
			// The event joins its key's debounce window (debounce.go).
			cctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
			err := d.debounceEvent(cctx, def, key, m.StreamSeq(), deb, maxWait)
			cancel()
			if err != nil {
				return s, err
			}
			s.debounced++
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
		target, err := d.chooseRun(cctx, def, workflow.InstanceID(def.Name, key), m, digest)
		cancel()
		if errors.Is(err, workflow.ErrTooManyRuns) {
			s.problems = append(s.problems, fmt.Sprintf("workflow %s: event key %q: %v", def.Name, key, err))
			continue
		}
		if err != nil {
			return s, err
		}
		id := target.id
		ev := workflow.Event{
			Kind: workflow.EventStart, Instance: id, Workflow: def.Name, Version: def.Version,
			EventKey: key, InputRef: workflow.InputKey(id), InputDigest: digest, TriggerSeq: m.StreamSeq(),
			Trace: d.traceOf(m),
		}
		if def.Reruns() && ev.TriggerSeq != 0 {
			ev.InputRef = workflow.TriggerInputKey(id, ev.TriggerSeq)
		}
		if target.choice.Run > 1 {
			ev.Run = target.choice.Run
		}
		s.items = append(s.items, &item{ev: ev, msg: m, input: input})
	}
	return s, nil
}

// enqueueStarts hands a trigger's starts to their shards. The message is
// settled when every start it caused is settled: with the first failure
// or reject, else acked once the bindings that could not start are
// dead-lettered.
func (d *Dispatcher) enqueueStarts(ctx context.Context, m jetstream.Delivery, s starts) {
	var mu sync.Mutex
	pending := len(s.items)
	var first outcome
	for _, it := range s.items {
		it.done = func(o outcome) {
			mu.Lock()
			defer mu.Unlock()
			if first.err == nil && first.reject == "" {
				first = o
			}
			pending--
			if pending > 0 {
				return
			}
			if first.err == nil && first.reject == "" {
				// Some bindings started; record the ones that could not.
				// Retried when that fails: the starts are then duplicates
				// of instances that exist.
				if err := d.deadLetterProblems(ctx, m, s.problems); err != nil {
					first = outcome{err: err}
				}
			}
			d.settle(ctx, "trigger", m, first)
		}
		if !d.enqueue(it) {
			_ = m.Nak(0)
			return
		}
	}
}

// deadLetterProblems records, for a trigger that started some of its
// bindings, the ones that could not start (the message itself is acked,
// not dead-lettered as a whole). Nothing without problems.
func (d *Dispatcher) deadLetterProblems(ctx context.Context, m jetstream.Delivery, problems []string) error {
	if len(problems) == 0 {
		return nil
	}
	reason := strings.Join(problems, "; ")
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	if err := d.client.DeadLetter(ctx, "trigger", m, "dispatcher", reason); err != nil {
		d.log.Error().Err(err).Str("subject", m.Subject()).Str("reason", reason).Msg("dead-letter of the bindings a trigger could not start failed; will retry")
		return fmt.Errorf("dead-letter: %w", err)
	}
	d.stats.deadLetters.WithLabelValues(reasonEventKey).Inc()
	d.log.Warn().Str("subject", m.Subject()).Str("reason", reason).Msg("part of a trigger dead-lettered")
	return nil
}

// parentOf reads the parent of a bulk child's start message.
func parentOf(m jetstream.Delivery) (workflow.ParentRef, bool) {
	id := m.Header(jetstream.HeaderParent)
	if id == "" {
		return workflow.ParentRef{}, false
	}
	idx, err := strconv.Atoi(m.Header(jetstream.HeaderParentIndex))
	if err != nil {
		idx = -1
	}
	return workflow.ParentRef{ID: id, Step: m.Header(jetstream.HeaderParentStep), Index: idx}, true
}

func (d *Dispatcher) failChild(ctx context.Context, m jetstream.Delivery, p workflow.ParentRef, reason string) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.OpTimeout)
	defer cancel()
	return d.client.PublishEvents(ctx, []workflow.OutEvent{{
		Event: workflow.Event{Kind: workflow.EventChildDone, Instance: p.ID, Step: p.Step, Index: p.Index, ChildStatus: workflow.StatusFailed, Error: reason},
		MsgID: workflow.ChildDoneMsgID(p.ID, p.Step, p.Index),
	}})
}

// onChildStart starts a bulk child from its pointer message: the parent
// already wrote the input under a key derived from (parent, step, index).
func (d *Dispatcher) onChildStart(ctx context.Context, m jetstream.Delivery, def *workflow.Definition, p workflow.ParentRef) {
	ref := workflow.ChildInputKey(p.ID, p.Step, p.Index)
	key := workflow.ChildEventKey(p.ID, p.Step, p.Index)
	// Pointers of earlier versions also carry both; they must match.
	sentRef, sentKey := m.Header(jetstream.HeaderInputRef), m.Header(jetstream.HeaderEventKey)
	if p.Index < 0 || p.Step == "" || (sentRef != "" && sentRef != ref) || (sentKey != "" && sentKey != key) {
		d.reject(ctx, "trigger", m, reasonMalformed, fmt.Sprintf("malformed child start: parent %q step %q index %d, input %q, key %q", p.ID, p.Step, p.Index, sentRef, sentKey))
		return
	}
	id := workflow.InstanceID(def.Name, key)
	parent := p
	it := &item{
		ev: workflow.Event{
			Kind: workflow.EventStart, Instance: id, Workflow: def.Name, Version: def.Version,
			EventKey: key, InputRef: ref, Parent: &parent, TriggerSeq: m.StreamSeq(), Trace: d.traceOf(m),
		},
		msg:       m,
		reconcile: m.Header(jetstream.HeaderReconcile),
		done:      func(o outcome) { d.settle(ctx, "trigger", m, o) },
	}
	if !d.enqueue(it) {
		_ = m.Nak(0)
	}
}

func (d *Dispatcher) latestFromStore(ctx context.Context, name string) *workflow.Definition {
	defs, err := d.client.Definitions(ctx)
	if err != nil {
		return nil
	}
	for _, def := range defs {
		d.defs.add(def)
	}
	return d.defs.latestOf(name)
}

// payloadOf checks a trigger payload at the door and returns the JSON to
// store as the instance input: the payload as it is (jetstream.CheckPayload:
// one JSON value, UTF-8, at most workflow.MaxDepth levels deep, at most
// maxPayload bytes; empty means null), or the JSON of a msgpack payload
// when the Content-Type header says so. Whatever it accepts decodes
// later; whatever it rejects is dead-lettered with its error as reason.
func payloadOf(m jetstream.Delivery, maxPayload int) ([]byte, error) {
	return payloadOfData(m.Data(), m.Header(jetstream.HeaderContentType), maxPayload)
}

func payloadOfData(data []byte, contentType string, maxPayload int) ([]byte, error) {
	if strings.EqualFold(contentType, "application/msgpack") {
		j, err := jetstream.MsgpackToJSON(data)
		if err != nil {
			return nil, fmt.Errorf("payload (Content-Type application/msgpack): %v", err)
		}
		data = j
	}
	input, err := jetstream.CheckPayload(data, maxPayload)
	if err != nil {
		return nil, fmt.Errorf("payload: %v", err)
	}
	return input, nil
}

// eventKey takes the event key from where the definition says: a
// header as it is, or a payload field in its canonical form
// (workflow.EventKey: a string as it is, an integer as its digits).
func eventKey(def *workflow.Definition, m jetstream.Delivery, payload func() (any, error)) (string, error) {
	if def.Trigger == nil || isStart(m) {
		if k := m.Header(jetstream.HeaderEventKey); k != "" {
			return k, nil
		}
		if k := m.Header(jetstream.HeaderMsgID); k != "" {
			return k, nil
		}
		return "", errors.New("explicit start without a Jetflow-Event-Key or Nats-Msg-Id header")
	}
	spec := def.Trigger.Key
	if h, ok := strings.CutPrefix(spec, workflow.HeaderKeyPrefix); ok {
		if k := m.Header(h); k != "" {
			return k, nil
		}
		return "", fmt.Errorf("event key header %q is missing", h)
	}
	v, err := payload()
	if err != nil {
		return "", fmt.Errorf("payload: %v", err)
	}
	for _, part := range strings.Split(spec, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return "", fmt.Errorf("event key field %q is missing: payload has no object at %q", spec, part)
		}
		if v, ok = obj[part]; !ok {
			return "", fmt.Errorf("event key field %q is missing from the payload", spec)
		}
	}
	k, err := workflow.EventKey(v)
	if err != nil {
		return "", fmt.Errorf("event key field %q %v", spec, err)
	}
	return k, nil
}

// stoppedWhileStarting is nil when ctx ended while Run was starting (a
// clean stop, whatever the start then failed with), else err.
func stoppedWhileStarting(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// isStart reports whether m is an explicit start (jetstream.StartSubject).
func isStart(m jetstream.Delivery) bool {
	_, ok := jetstream.StartedWorkflow(m.Subject())
	return ok
}
