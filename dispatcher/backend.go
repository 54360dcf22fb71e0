package dispatcher

import (
	"context"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// Backend is what the dispatcher needs from the store and the message
// broker, grouped by what each part is for. *jetstream.Client implements
// it. Tests wrap a real one to inject the faults a distributed system
// produces (a commit that fails, an answer that never comes, a publish a
// crashed server forgot, an ack that is never sent), the way River's
// drivers are wrapped by its test driver.
type Backend interface {
	InstanceStore
	DataStore
	BarrierStore
	Definitions
	Publisher
	Consumer
	Housekeeping
	FlowStore
	ScheduleStore
	EffectStore
}

// FlowStore holds the concurrency slot and rate-limit records
// (docs/flow-control.md): every change is a compare-and-swap on the
// record's revision; fn may run several times and must only compute.
type FlowStore interface {
	UpdateSlot(ctx context.Context, key string, fn func(workflow.SlotRecord) (workflow.SlotRecord, bool)) (workflow.SlotRecord, error)
	UpdateRate(ctx context.Context, key string, fn func(workflow.RateRecord) (workflow.RateRecord, bool)) error
	GetSlot(ctx context.Context, key string) (workflow.SlotRecord, error)
	SlotKeys(ctx context.Context) ([]string, error)
}

// ScheduleStore holds the state of schedules and debounce windows
// (docs/schedules.md) and installs schedules on the server: every change
// of a record is a compare-and-swap on its revision.
type ScheduleStore interface {
	// ScheduleState returns a schedule's state and its revision (0: none
	// stored yet).
	ScheduleState(ctx context.Context, workflowName, schedule string) (workflow.ScheduleState, uint64, error)
	// PutScheduleState writes the state if its stored revision is still
	// rev; a lost race matches workflow.ErrConflict.
	PutScheduleState(ctx context.Context, workflowName, schedule string, st workflow.ScheduleState, rev uint64) (uint64, error)
	// SyncSchedules makes the server hold exactly the schedules of def.
	SyncSchedules(ctx context.Context, def *workflow.Definition) error
	// DebounceWindow returns a key's open window (nil: none) and its
	// revision.
	DebounceWindow(ctx context.Context, workflowName, id string) (*workflow.DebounceState, uint64, error)
	// PutDebounceWindow writes (nil: deletes) the window if its stored
	// revision is still rev; a lost race matches workflow.ErrConflict.
	PutDebounceWindow(ctx context.Context, workflowName, id string, st *workflow.DebounceState, rev uint64) error
	// ArmDebounce (re)arms the window's timer to fire at due.
	ArmDebounce(ctx context.Context, workflowName, id string, due time.Time) error
	// TriggerMessage reads a stored trigger message by stream sequence:
	// its payload and content type.
	TriggerMessage(ctx context.Context, seq uint64) (data []byte, contentType string, err error)
}

// InstanceStore reads and writes instance records: every write is a
// compare-and-swap on the record's revision.
type InstanceStore interface {
	// GetInstance returns the instance and its revision, or an error
	// matching workflow.ErrNotFound.
	GetInstance(ctx context.Context, id string) (*workflow.Instance, uint64, error)
	// PutInstance writes the instance if its stored revision is still
	// rev (0: creates it) and returns the new revision. A lost race
	// matches workflow.ErrConflict (or workflow.ErrExists for a create).
	// expires: the record may carry the instance retention TTL.
	PutInstance(ctx context.Context, in *workflow.Instance, rev uint64, expires bool) (uint64, error)
}

// DataStore holds the inputs and outputs that instances refer to by key;
// keys are write-once.
type DataStore interface {
	// DataView reads values for workflow.Apply.
	DataView(ctx context.Context) workflow.Data
	PutDataBatch(ctx context.Context, writes []workflow.Write) error
	PutDataEncoded(ctx context.Context, key string, b []byte, decoded any) error
	// InlineData returns a value small enough to travel in a task
	// message, if it is at hand without a request.
	InlineData(key string) ([]byte, bool)
}

// BarrierStore holds the write-once per-child barriers of bulk steps: a
// child's completion counts once, behind its barrier.
type BarrierStore interface {
	// CreateBarrier reports whether this call created the barrier
	// (false: it existed).
	CreateBarrier(ctx context.Context, key string) (bool, error)
	// CreateBarriers creates many in one pipelined round; errs[i] is the
	// error of keys[i] (then created[i] is unknown).
	CreateBarriers(ctx context.Context, keys []string) (created []bool, errs []error)
	// BarrierIndexes lists the child indexes of a step with a barrier.
	BarrierIndexes(ctx context.Context, parent, step string) (completed, failed map[int]bool, err error)
}

// Definitions reads the registered workflow definitions and captures
// their trigger subjects.
type Definitions interface {
	Definition(ctx context.Context, name string, version int) (*workflow.Definition, error)
	Definitions(ctx context.Context) ([]*workflow.Definition, error)
	// WatchDefinitions calls fn for every stored definition and every
	// one stored later, calls ready once the stored ones were delivered,
	// and returns when ctx ends (nil) or the watch fails.
	WatchDefinitions(ctx context.Context, fn func(*workflow.Definition), ready func()) error
	EnsureTriggerSubjects(ctx context.Context, subjects ...string) error
}

// Publisher publishes what a committed decision asks for. Message ids
// make a repeated publish harmless.
type Publisher interface {
	PublishTasks(ctx context.Context, tasks []workflow.Task) error
	ScheduleTimers(ctx context.Context, timers []workflow.Timer) error
	PublishChildren(ctx context.Context, children []workflow.Child) error
	PublishEvents(ctx context.Context, events []workflow.OutEvent) error
	// ScheduleRecount schedules a recount of a bulk step at (or just
	// after) at and returns when it fires.
	ScheduleRecount(ctx context.Context, instance, step string, at time.Time) (time.Time, error)
	// NotifyDone announces that an instance ended (a hint for waiters).
	NotifyDone(in *workflow.Instance)
}

// Consumer delivers the trigger, event and fire messages and takes the ones
// the dispatcher rejects.
type Consumer interface {
	// ConsumeDispatcher delivers the messages of the dispatcher consumer
	// on stream (jetstream.StreamTriggers, jetstream.StreamEvents or
	// jetstream.StreamSchedules),
	// keeping at most buffer in flight.
	ConsumeDispatcher(ctx context.Context, stream string, buffer int, handler func(jetstream.Delivery)) (*jetstream.Subscription, error)
	// GuardTimerSubjects dead-letters messages on timer subjects that no
	// timer published.
	GuardTimerSubjects(ctx context.Context, rejected func(subject, reason string)) (*jetstream.Subscription, error)
	// DeadLetter records a rejected message with the reason; the caller
	// then terminates it.
	DeadLetter(ctx context.Context, source string, m jetstream.Delivery, component, reason string) error
	// Erase removes a message from its stream and overwrites its bytes.
	Erase(ctx context.Context, m jetstream.Delivery) error
	// Config is the adapter's configuration (payload limits).
	Config() jetstream.Config
	Connected() bool
	// Reconnects counts the connection's reconnects: a server that
	// crashed may have lost what it acknowledged before.
	Reconnects() uint64
	// PullStalls counts pull requests presumed lost and replaced.
	PullStalls() uint64
	// BadMetadata counts received messages whose JetStream metadata
	// (delivery count, stream sequence) could not be read.
	BadMetadata() uint64
}

// Housekeeping is what the dispatcher's background loops use: the watch
// of instance writes for repairs, the task queues for the backlog
// metrics and the task guard, presence and stats.
type Housekeeping interface {
	// WatchInstanceUpdates calls fn for every instance write (the stored
	// ones first when existing), calls ready once those were delivered,
	// and returns when ctx ends (nil) or the watch fails.
	WatchInstanceUpdates(ctx context.Context, existing bool, ready func(), fn func(*jetstream.InstanceUpdate)) error
	TaskQueues(ctx context.Context) ([]jetstream.TaskQueue, error)
	TaskTypesStored(ctx context.Context) (map[string]uint64, error)
	RemoveTasks(ctx context.Context, taskType string, olderThan time.Time, reason string, limit int) (int, error)
	AnnounceEvery(ctx context.Context, interval time.Duration, rec func() jetstream.Presence)
	ServeStats(ctx context.Context, name string, stats func() any, pauseRevision func() uint64) error
	// WatchPauses calls fn with every pause record (jetflow pause) stored
	// now and later, calls ready once the stored ones were delivered, and
	// returns when ctx ends (nil) or the watch fails.
	WatchPauses(ctx context.Context, ready func(), fn func(jetstream.PauseState)) error
}

var _ Backend = (*jetstream.Client)(nil)
