package workflow

import "time"

// EventKind says what happened to an instance.
type EventKind string

// Event kinds.
const (
	EventStart  EventKind = "start"  // a trigger: create the instance
	EventResult EventKind = "result" // a worker finished a task attempt
	EventTimer  EventKind = "timer"  // a timer came due
	EventCancel EventKind = "cancel" // an operator cancelled the instance
	// EventChildDone: a child of a bulk step reached a terminal state.
	EventChildDone EventKind = "child_done"
	// EventContinue: a bulk step dispatches its next chunk of children.
	EventContinue EventKind = "continue"
	// EventRecount: a bulk step's counts, recounted from the per-child
	// barriers (repair after a crash between barrier and commit).
	EventRecount EventKind = "recount"
	// EventSignal: an external signal addressed to the instance.
	EventSignal EventKind = "signal"
	// EventRepair: the repair loop presumes an attempt lost; the attempt
	// fails (and is retried under the step's policy) unless it already
	// finished, in which case the repair changes nothing.
	EventRepair EventKind = "repair"
	// EventGrant: the outcome of a gate (a concurrency slot, a rate
	// limit start, or the end of a pause) the instance or one of its
	// attempts waits for.
	EventGrant EventKind = "grant"
	// EventRetry: an operator continues a failed or cancelled instance
	// (jetflow retry) from its failed step, or from Step when set.
	// Attempt holds the instance's Retries the operator saw, so a retry
	// is applied once.
	EventRetry EventKind = "retry"
)

// Event is the input of the transition function. Only the fields of its
// kind are set.
type Event struct {
	Kind     EventKind `msgpack:"k"`
	Instance string    `msgpack:"i"`

	// Start.
	Workflow    string `msgpack:"wf,omitempty"`
	Version     int    `msgpack:"v,omitempty"`
	EventKey    string `msgpack:"key,omitempty"`
	InputRef    string `msgpack:"in,omitempty"`
	InputDigest string `msgpack:"dig,omitempty"`
	// TriggerSeq is the trigger stream sequence of the start message and
	// Run the run of the event key it starts (Instance.TriggerSeq, .Run).
	TriggerSeq uint64 `msgpack:"tseq,omitempty"`
	Run        int    `msgpack:"run,omitempty"`

	// Result.
	Step      string `msgpack:"s,omitempty"`
	Attempt   int    `msgpack:"a,omitempty"`
	OutputRef string `msgpack:"out,omitempty"`
	// Error is empty on success.
	Error string `msgpack:"err,omitempty"`
	// Token is the task token of the attempt (Task.Token), echoed by the
	// worker; a dispatcher with task tokens configured accepts a result
	// only with a valid one.
	Token string `msgpack:"tok,omitempty"`
	// Permanent failures are not retried.
	Permanent bool `msgpack:"perm,omitempty"`
	// RetryAfter overrides the retry policy's delay when positive.
	RetryAfter time.Duration `msgpack:"ra,omitempty"`
	// Worker names the worker that ran the attempt (its name in `jetflow
	// workers`), recorded in the step's attempt history.
	Worker string `msgpack:"w,omitempty"`

	// Timer.
	Timer string `msgpack:"t,omitempty"`

	// Cancel.
	Reason string `msgpack:"r,omitempty"`

	// Start of a bulk child: the parent.
	Parent *ParentRef `msgpack:"par,omitempty"`
	// Child done, continue: the item index (continue: the cursor).
	Index int `msgpack:"idx,omitempty"`
	// Child done: the child's final status.
	ChildStatus Status `msgpack:"cst,omitempty"`
	// Signal: its name (the payload is under OutputRef).
	Signal string `msgpack:"sig,omitempty"`
	// Recount: counts of terminal children found in the barriers; negative
	// asks the dispatcher to count them.
	Completed int `msgpack:"cc,omitempty"`
	Failed    int `msgpack:"cf,omitempty"`
	// Round names a reconciliation round of a stale bulk step (a recount
	// with Reason ReasonStaleBulk); its pokes carry it in their ids.
	Round string `msgpack:"rnd,omitempty"`
	// Trace (start): the instance's Instance.Trace.
	Trace string `msgpack:"tp,omitempty"`
	// Grant: the gate (GateSlot, GateRate) and whether it was denied.
	// GateAt, for a rate start: when it was taken (granted: the
	// attempt's start) or when to try again (denied). Step and Attempt
	// name the attempt (empty step: the instance's own slot).
	Gate   string    `msgpack:"g,omitempty"`
	Denied bool      `msgpack:"den,omitempty"`
	GateAt time.Time `msgpack:"gat,omitempty"`

	// Paused is not part of the message: the dispatcher sets it, when it
	// applies the event, to whether the instance's workflow is paused
	// (jetflow pause) as its watch of the pause records says. An attempt
	// that would start while it is set waits at GatePaused instead. It is
	// an input of Apply like now: a replay that sets it as recorded
	// decides the same.
	Paused bool `msgpack:"-" json:"-"`
}

// Decision is the outcome of applying an event: the new instance and what
// the dispatcher must do, in this order, around the compare-and-swap:
//
//  1. Writes (write-once data values) before the CAS;
//  2. the CAS of Instance;
//  3. Tasks and Timers after the CAS succeeded;
//  4. acknowledge the event.
type Decision struct {
	// Instance is the new state; equal to the input when Changed is false.
	Instance *Instance
	// Changed is true when Instance must be written.
	Changed bool
	// Ignored says why the event changed nothing ("stale result", ...).
	Ignored string
	Writes  []Write
	Tasks   []Task
	Timers  []Timer
	// Children to start (bulk steps), after the CAS.
	Children []Child
	// Events to publish to instances (child completions to parents,
	// continuations to self), after the CAS.
	Events []OutEvent
	// Gates: changes of slot and rate records, after the CAS (flow.go).
	Gates []GateOp
}

// Child asks for a child instance of a bulk step to be started. Its input
// is already in the data bucket under InputRef.
type Child struct {
	Workflow string
	EventKey string
	InputRef string
	Parent   ParentRef
	// Reconcile is set on a poke of a reconciliation round (the round):
	// the child answers from its own state (ReconcileChild) instead of
	// being started. MsgID is then the poke's message id; empty, the
	// pointer's id derives from the child's instance id.
	Reconcile string
	MsgID     string
	// Trace is the parent instance's Instance.Trace: the child's start
	// message carries the traceparent of the bulk step's span.
	Trace string
}

// OutEvent is an event to publish with a deterministic message id.
type OutEvent struct {
	Event Event
	MsgID string
}

// Write stores a value under a write-once data key.
type Write struct {
	Key   string
	Value any
}

// Task asks a worker to run one attempt of a task step.
type Task struct {
	Instance  string        `msgpack:"i"`
	Workflow  string        `msgpack:"wf"`
	Version   int           `msgpack:"v"`
	Step      string        `msgpack:"s"`
	Type      string        `msgpack:"t"`
	Attempt   int           `msgpack:"a"`
	InputRef  string        `msgpack:"in"`
	EffectKey string        `msgpack:"ek"`
	Timeout   time.Duration `msgpack:"to,omitempty"`
	// MaxAttempts tells the handler whether this is the last attempt.
	MaxAttempts int `msgpack:"ma,omitempty"`
	// Once: run the handler at most once per EffectKey (Step.Once).
	Once bool `msgpack:"once,omitempty"`
	// Input, when set, is an inline copy of the small encoded value under
	// InputRef, so the worker need not read it. InputRef stays the truth.
	Input []byte `msgpack:"inl,omitempty"`
	// Trace is the instance's Instance.Trace; the task message carries
	// the traceparent of its step's span, derived from it.
	Trace string `msgpack:"tp,omitempty"`
	// Token binds the result to this (instance, step, attempt): set by a
	// dispatcher with task tokens configured when it publishes the task
	// (package tasktoken), echoed by the worker in Event.Token. Empty
	// without task tokens.
	Token string `msgpack:"tok,omitempty"`
}

// Timer asks for an EventTimer with ID to be delivered at At.
type Timer struct {
	Instance string
	ID       string
	At       time.Time
}
