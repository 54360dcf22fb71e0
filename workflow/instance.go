package workflow

import (
	"maps"
	"slices"
	"time"
)

// Status is the state of an instance. It only moves forward: running to one
// of the terminal states.
type Status string

// Instance states.
const (
	StatusRunning   Status = "running"
	StatusCompleted Status = "completed"
	StatusFailed    Status = "failed"
	StatusCancelled Status = "cancelled"
	// StatusSkipped: the workflow's concurrency limit was reached and
	// its on_limit is skip; no step ran.
	StatusSkipped Status = "skipped"
)

// Terminal reports whether no event can change the instance any more.
func (s Status) Terminal() bool { return s != StatusRunning && s != "" }

// StepStatus is the state of one step of an instance.
type StepStatus string

// Step states.
const (
	StepRunning   StepStatus = "running"   // an attempt is in flight (or branches are)
	StepWaiting   StepStatus = "waiting"   // between attempts, a retry timer is pending
	StepCompleted StepStatus = "completed" // finished with an output
	StepFailed    StepStatus = "failed"    // finished without retries left
)

// Instance is the state of one workflow run. It is small and bounded: step
// inputs and outputs are references to the data bucket, never the values.
type Instance struct {
	ID          string    `msgpack:"id"`
	Workflow    string    `msgpack:"wf"`
	Version     int       `msgpack:"v"`
	EventKey    string    `msgpack:"key"`
	InputRef    string    `msgpack:"in"`
	InputDigest string    `msgpack:"dig,omitempty"`
	Status      Status    `msgpack:"st"`
	OutputRef   string    `msgpack:"out,omitempty"`
	Error       string    `msgpack:"err,omitempty"`
	Created     time.Time `msgpack:"c"`
	Updated     time.Time `msgpack:"u"`
	Ended       time.Time `msgpack:"e,omitempty"`
	// Events counts the events that changed this instance.
	Events uint64 `msgpack:"n"`
	// Steps holds the steps that have been activated, by name.
	Steps map[string]*StepState `msgpack:"steps"`
	// Timers holds the pending timers: id -> when they are due. A timer
	// that fires but is no longer listed here is stale and ignored.
	Timers map[string]time.Time `msgpack:"timers,omitempty"`
	// Parent is set on children of a bulk step.
	Parent *ParentRef `msgpack:"parent,omitempty"`
	// Signals received before a wait step took them: name -> data ref
	// (the first signal of a name wins; only names a wait step uses).
	Signals map[string]string `msgpack:"sig,omitempty"`
	// TriggerSeq is the trigger stream sequence of the message that
	// started this instance (0: unknown, or not started by a trigger). A
	// redelivery of that message is recognised by it (ChooseRun).
	TriggerSeq uint64 `msgpack:"tseq,omitempty"`
	// Run numbers the runs of one event key under trigger.on_duplicate:
	// rerun: 0 or 1 is the first run (id InstanceID(workflow, key)), n > 1
	// the run with id RunID(first, n).
	Run int `msgpack:"run,omitempty"`
	// Trace is the W3C traceparent of the span that started the instance
	// (a trigger's traceparent header, or a bulk step's span for a child),
	// or a root the dispatcher made; empty when nobody traces. The
	// tracing package derives the instance's and its steps' span ids
	// from it.
	Trace string `msgpack:"tp,omitempty"`
	// Slot is the key of the concurrency slot record the instance holds
	// or waits for under its workflow's concurrency limit (SlotKey);
	// empty without a limit. Gate is GateSlot while it waits (no step
	// has started), empty once granted.
	Slot string `msgpack:"slot,omitempty"`
	Gate string `msgpack:"gate,omitempty"`
	// Resume names the steps an operator's retry resumes once the
	// instance has its slot again (empty: the start step).
	Resume []string `msgpack:"res,omitempty"`
	// Retries counts the operator retries applied (jetflow retry): a
	// retry event names the count it expects, so each is applied once.
	Retries int `msgpack:"rt,omitempty"`
}

// RunNumber is the instance's run of its event key, from 1.
func (in *Instance) RunNumber() int { return max(in.Run, 1) }

// ParentRef names the bulk step (and item index) that started a child.
type ParentRef struct {
	ID    string `msgpack:"id"`
	Step  string `msgpack:"s"`
	Index int    `msgpack:"i"`
}

// StepState is the state of one activated step.
type StepState struct {
	Status StepStatus `msgpack:"st"`
	// Attempt is the current attempt number, from 1 (task steps).
	Attempt int `msgpack:"a,omitempty"`
	// Pending counts branches still running (parallel steps).
	Pending   int       `msgpack:"p,omitempty"`
	InputRef  string    `msgpack:"in,omitempty"`
	OutputRef string    `msgpack:"out,omitempty"`
	Error     string    `msgpack:"err,omitempty"`
	Started   time.Time `msgpack:"s"`
	Ended     time.Time `msgpack:"e,omitempty"`
	// AttemptStarted is when the current attempt was published.
	AttemptStarted time.Time `msgpack:"as,omitempty"`
	// History records the task step's attempts that ended, oldest first:
	// at most RetryPolicy.MaxAttempts (MaxAttemptsCap) records of bounded
	// size. The running attempt is Attempt, since AttemptStarted.
	History []AttemptRecord `msgpack:"h,omitempty"`

	// Bulk steps: the parent's O(1) record of its children.
	// Total is the number of items; Cursor how many children were
	// dispatched (items [0, Cursor)); ChunkFrom where the last dispatched
	// chunk began; Done and ChildFailed count terminal children.
	Total       int `msgpack:"tot,omitempty"`
	Cursor      int `msgpack:"cur,omitempty"`
	ChunkFrom   int `msgpack:"cf,omitempty"`
	Done        int `msgpack:"done,omitempty"`
	ChildFailed int `msgpack:"cfail,omitempty"`
	// Recounts counts the recounts (EventRecount) that changed Done or
	// ChildFailed. A recount counts every barrier that exists, also the
	// barrier of a completion whose increment is not committed yet; a
	// dispatcher holding such a completion sees Recounts move and must
	// not increment on top of it.
	Recounts int `msgpack:"rc,omitempty"`
	// Moved is when the bulk step last moved: children dispatched, or a
	// completion or recount counted. The repair loop reconciles a step
	// that has not moved for StaleBulk, whatever else changes the
	// instance (RepairPolicy).
	Moved time.Time `msgpack:"mv,omitempty"`

	// Flow control (task steps with concurrency or rate_limit): Slot and
	// Rate are the keys of the step's slot and rate records (SlotKey,
	// RateKey); Gate is what the current attempt waits for before its
	// task is published (GatePaused, GateSlot, GateRate; empty:
	// published), since GateSince. Held, while the attempt waits at
	// GatePaused, is the gate it had passed when it was held (GateSlot:
	// it holds its slot; empty: none), where it goes on when released.
	Slot      string    `msgpack:"slot,omitempty"`
	Rate      string    `msgpack:"rate,omitempty"`
	Gate      string    `msgpack:"gate,omitempty"`
	GateSince time.Time `msgpack:"gs,omitempty"`
	Held      string    `msgpack:"held,omitempty"`
}

// AttemptRecord is one ended attempt of a task step.
type AttemptRecord struct {
	Attempt int       `msgpack:"n"`
	Started time.Time `msgpack:"s"`
	Ended   time.Time `msgpack:"e"`
	// Worker is the name of the worker that reported the attempt's result
	// (empty for an attempt that timed out or was presumed lost, and for
	// results of workers that do not say).
	Worker string `msgpack:"w,omitempty"`
	// Error is why the attempt failed, cut to MaxHistoryError bytes
	// (StepState.Error keeps the last one whole); empty on success.
	Error string `msgpack:"err,omitempty"`
}

// MaxHistoryError bounds an error kept in an AttemptRecord, so an
// instance grows by a bounded amount per attempt.
const MaxHistoryError = 256

// InFlight is the number of dispatched children not yet terminal.
func (st *StepState) InFlight() int { return st.Cursor - st.Done - st.ChildFailed }

// Clone returns a deep copy, so a transition never changes a value the
// caller still holds (for example a cached copy whose CAS may fail).
func (in *Instance) Clone() *Instance {
	if in == nil {
		return nil
	}
	out := *in
	out.Steps = make(map[string]*StepState, len(in.Steps)+1)
	for k, v := range in.Steps {
		c := *v
		c.History = slices.Clone(v.History)
		out.Steps[k] = &c
	}
	out.Timers = maps.Clone(in.Timers)
	out.Resume = slices.Clone(in.Resume)
	out.Signals = maps.Clone(in.Signals)
	if in.Parent != nil {
		p := *in.Parent
		out.Parent = &p
	}
	return &out
}
