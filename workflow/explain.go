package workflow

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Explain says, for every open step of an instance, what it waits for
// and since when: "why is it stuck?". It is pure: the adapter reads the
// instance, the task queues, who is connected and the bulk children, and
// hands them over as ExplainFacts; Explain only decides what they mean.
// `jetflow explain` prints its result.

// ExplainFacts is what the adapter read besides the instance.
type ExplainFacts struct {
	// Now is when the facts were read.
	Now time.Time
	// Policy is the dispatchers' repair policy (their defaults unless the
	// operator says otherwise).
	Policy RepairPolicy
	// Tasks holds, by task type, the queue of each type an open task
	// step waits on; a type missing here could not be read.
	Tasks map[string]TaskFacts
	// Attempts holds, by step, what the adapter found of the task message
	// of the step's current attempt.
	Attempts map[string]AttemptFacts
	// Children holds, by bulk step, the dispatched children whose
	// completion is not counted (no barrier), at most a sample of them.
	Children map[string][]ChildFacts
	// PresenceKnown is set when Workers and Dispatchers were read (the
	// presence bucket exists and was readable).
	PresenceKnown bool
	// Workers: for each task type, the names of the workers connected
	// now that serve it.
	Workers map[string][]string
	// Dispatchers is how many dispatchers are connected now.
	Dispatchers int
	// Slots holds the slot records the instance and its steps wait for
	// or hold, by slot key; a key missing here could not be read.
	Slots map[string]SlotRecord
	// Child holds, by workflow step, the stored state of the step's
	// child (Status empty: it does not exist).
	Child map[string]ChildFacts
	// PausedKnown is set when the instance's pause record was read;
	// Paused then says whether its workflow is paused (jetflow pause).
	PausedKnown, Paused bool
}

// TaskFacts is the state of one task type's queue (see
// jetstream.TaskQueue).
type TaskFacts struct {
	Stored       uint64 `json:"stored"`
	Pending      uint64 `json:"pending"`
	AckPending   int    `json:"ack_pending"`
	Redelivered  int    `json:"redelivered"`
	PullsWaiting int    `json:"pulls_waiting"`
	Consumer     bool   `json:"consumer"`
}

// AttemptFacts is what was found of one attempt's task message.
type AttemptFacts struct {
	// Searched: the adapter looked for the message (Found says whether
	// it is in the task stream).
	Searched bool `json:"searched"`
	Found    bool `json:"found"`
	// Stored is when the message was stored; Delivered whether a worker
	// has received it (it is then held, ack pending, or waits for its
	// redelivery); Deliveries how often it was delivered, when known
	// (0: unknown); Ahead how many tasks of its type wait before it.
	Stored     time.Time `json:"stored,omitzero"`
	Delivered  bool      `json:"delivered"`
	Deliveries int       `json:"deliveries,omitempty"`
	Ahead      int       `json:"ahead,omitempty"`
}

// ChildFacts is the stored state of one dispatched bulk child.
type ChildFacts struct {
	Index int    `json:"index"`
	ID    string `json:"id"`
	// Status is empty when the child does not exist.
	Status  Status    `json:"status,omitempty"`
	Updated time.Time `json:"updated,omitzero"`
	Error   string    `json:"error,omitempty"`
}

// Explanation is what an instance waits for.
type Explanation struct {
	Instance string    `json:"instance"`
	Workflow string    `json:"workflow"`
	Version  int       `json:"version"`
	Status   Status    `json:"status"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Ended    time.Time `json:"ended,omitzero"`
	// Summary is one sentence.
	Summary string `json:"summary"`
	// Waits has one entry per open step, oldest first.
	Waits []Wait `json:"waits"`
	// Other pending things: the deadline, signals received early.
	Notes []string `json:"notes,omitempty"`
	// LastError is the most recent error of the instance or of a step.
	LastError     string `json:"last_error,omitempty"`
	LastErrorStep string `json:"last_error_step,omitempty"`
	// NextRepair is when the repair loop may first act on the instance
	// as it is (zero: only a change can make a repair due).
	NextRepair time.Time `json:"next_repair,omitzero"`
	// Problems are conditions that keep the instance from moving without
	// an operator: no worker for a task type, no dispatcher.
	Problems []string `json:"problems,omitempty"`
}

// What an open step waits for (Wait.For).
const (
	WaitTask     = "task"     // a task attempt's result
	WaitRetry    = "retry"    // the retry timer of a failed attempt
	WaitTimer    = "timer"    // a sleep step's timer
	WaitSignal   = "signal"   // a named signal
	WaitChildren = "children" // a bulk step's children
	WaitBranches = "branches" // a parallel step's branches
	WaitSlot     = "slot"     // a concurrency slot (the instance's or an attempt's)
	WaitRate     = "rate"     // a rate-limit start for an attempt
	WaitChild    = "child"    // a workflow step's child instance
	WaitPaused   = "paused"   // an attempt held while its workflow is paused
)

// Wait is what one open step waits for.
type Wait struct {
	Step  string    `json:"step"`
	Kind  StepKind  `json:"kind"`
	For   string    `json:"for"`
	Since time.Time `json:"since"`
	// Detail says it in words, one sentence or a few.
	Detail string `json:"detail"`

	// Task and retry.
	TaskType    string        `json:"task_type,omitempty"`
	Attempt     int           `json:"attempt,omitempty"`
	MaxAttempts int           `json:"max_attempts,omitempty"`
	Queue       *TaskFacts    `json:"queue,omitempty"`
	Message     *AttemptFacts `json:"message,omitempty"`
	Workers     []string      `json:"workers,omitempty"`
	// Error is the previous attempt's error (retry).
	Error string `json:"error,omitempty"`

	// Timers: the step's timer (retry, sleep, wait or attempt timeout).
	Due     time.Time `json:"due,omitzero"`
	Overdue bool      `json:"overdue,omitempty"`
	// RepairAt is when the repair loop steps in for this step: fires an
	// overdue timer, presumes a task attempt lost, reconciles children.
	RepairAt time.Time `json:"repair_at,omitzero"`

	// Signal.
	Signal string `json:"signal,omitempty"`

	// Children.
	Bulk *BulkWait `json:"bulk,omitempty"`

	// Slot: the slot record key, the limit, the holders and the
	// position in line (1 = next; 0 = granted, not applied yet).
	Slot     string   `json:"slot,omitempty"`
	Limit    int      `json:"limit,omitempty"`
	Holders  []string `json:"holders,omitempty"`
	Position int      `json:"position,omitempty"`
	// Child: the child instance a workflow step waits for.
	Child *ChildFacts `json:"child,omitempty"`
}

// BulkWait is a bulk step's counts and the children it waits for.
type BulkWait struct {
	Total      int `json:"total"`
	Dispatched int `json:"dispatched"`
	Completed  int `json:"completed"`
	Failed     int `json:"failed"`
	InFlight   int `json:"in_flight"`
	// Running are children that run; Stuck children whose completion is
	// not counted although they ended, or that do not exist. Both are a
	// sample when the adapter read only some.
	Running []ChildFacts `json:"running,omitempty"`
	Stuck   []ChildFacts `json:"stuck,omitempty"`
}

// Explain explains an instance of def. It never fails: what it cannot
// tell, it says.
func Explain(def *Definition, inst *Instance, f ExplainFacts) Explanation {
	x := Explanation{
		Instance: inst.ID, Workflow: inst.Workflow, Version: inst.Version, Status: inst.Status,
		Created: inst.Created, Updated: inst.Updated, Ended: inst.Ended,
	}
	x.LastError, x.LastErrorStep = lastError(inst)
	if inst.Status.Terminal() {
		x.Summary = fmt.Sprintf("%s %s: it waits for nothing", inst.ID, inst.Status)
		if inst.Error != "" {
			x.Summary += " (" + inst.Error + ")"
		}
		return x
	}
	x.NextRepair = NextRepair(def, inst, f.Policy)
	if inst.Gate == GateSlot {
		w := Wait{Kind: "workflow", For: WaitSlot, Since: inst.Created}
		slotWait(&w, inst.Slot, Holder{Instance: inst.ID}, SlotLimit(def, ""), f,
			fmt.Sprintf("waiting for a concurrency slot of workflow %s (concurrency limit %d per key value) before its first step", def.Name, SlotLimit(def, "")))
		x.Waits = append(x.Waits, w)
	}
	for _, name := range sortedKeys(inst.Steps) {
		st := inst.Steps[name]
		if st.Status != StepRunning && st.Status != StepWaiting {
			continue
		}
		s, ok := def.index[name]
		if !ok {
			x.Problems = append(x.Problems, fmt.Sprintf("step %q is open but not in %s version %d", name, def.Name, def.Version))
			continue
		}
		w, problem := explainStep(s, st, inst, f)
		x.Waits = append(x.Waits, w)
		if problem != "" && !contains(x.Problems, problem) {
			x.Problems = append(x.Problems, problem)
		}
	}
	sort.SliceStable(x.Waits, func(i, j int) bool { return x.Waits[i].Since.Before(x.Waits[j].Since) })
	if at, ok := inst.Timers[deadlineTimer]; ok {
		x.Notes = append(x.Notes, fmt.Sprintf("the instance fails at its deadline, %s (%s)", stamp(at), rel(f.Now, at)))
	}
	for _, name := range sortedKeys(inst.Signals) {
		x.Notes = append(x.Notes, fmt.Sprintf("signal %q arrived before its wait step started; the step takes it when it starts", name))
	}
	if f.PresenceKnown && f.Dispatchers == 0 {
		x.Problems = append(x.Problems, "no dispatcher is connected: nothing applies results, fires timers or repairs")
	}
	x.Summary = summary(inst, x)
	return x
}

func explainStep(s *Step, st *StepState, inst *Instance, f ExplainFacts) (Wait, string) {
	w := Wait{Step: s.Name, Kind: s.Kind, Since: st.Started}
	switch s.Kind {
	case KindTask:
		if st.Status == StepWaiting {
			return explainRetry(s, st, inst, f, w), ""
		}
		if st.Gate != "" {
			return explainGate(s, st, inst, f, w), ""
		}
		return explainTask(s, st, inst, f, w)
	case KindWorkflow:
		w.For = WaitChild
		id := ChildInstanceID(s.Workflow, inst.ID, s.Name, st.Attempt)
		w.Detail = fmt.Sprintf("waiting for child workflow %s, instance %s", s.Workflow, id)
		if c, ok := f.Child[s.Name]; ok {
			c := c
			w.Child = &c
			if c.Status == "" {
				w.Detail += "; it does not exist yet: its start is on its way or was lost"
			} else {
				w.Detail += fmt.Sprintf("; it is %s (updated %s)", c.Status, stamp(c.Updated))
			}
		}
		if f.Policy.StaleBulk > 0 {
			moved := bulkMoved(st)
			r := max(reconcileRound(f.Now.Sub(moved), f.Policy.StaleBulk)+1, 1)
			w.RepairAt = roundStart(moved, r, f.Policy.StaleBulk)
			w.Detail += fmt.Sprintf("; the repair loop asks the child for its state at %s (%s)", stamp(w.RepairAt), rel(f.Now, w.RepairAt))
		}
	case KindSleep:
		w.For = WaitTimer
		w.Detail = fmt.Sprintf("sleeping for %s", s.Duration)
		timerWait(&w, inst, sleepTimer(s.Name), f, "wakes")
	case KindWait:
		w.For, w.Signal = WaitSignal, s.Signal
		w.Detail = fmt.Sprintf("waiting for signal %q (send it with: jetflow signal %s %s)", s.Signal, inst.ID, s.Signal)
		if s.Timeout > 0 {
			timerWait(&w, inst, waitTimer(s.Name), f, "gives up")
		}
	case KindBulk:
		return explainBulk(s, st, f, w), ""
	case KindParallel:
		w.For = WaitBranches
		w.Detail = fmt.Sprintf("waiting for %d of %d branches to end", st.Pending, len(s.Branches))
	default:
		w.Detail = fmt.Sprintf("%s step is %s", s.Kind, st.Status)
	}
	return w, ""
}

// explainTask: a running attempt waits for its result.
func explainTask(s *Step, st *StepState, inst *Instance, f ExplainFacts, w Wait) (Wait, string) {
	w.For, w.TaskType, w.Attempt, w.Since = WaitTask, s.Task, st.Attempt, st.AttemptStarted
	w.MaxAttempts = s.Retry.withDefaults().MaxAttempts
	var parts []string
	parts = append(parts, fmt.Sprintf("waiting for the result of attempt %d of %d of task type %s, published %s", st.Attempt, w.MaxAttempts, s.Task, stamp(st.AttemptStarted)))
	problem := ""
	if q, ok := f.Tasks[s.Task]; ok {
		w.Queue = &q
	}
	if a, ok := f.Attempts[s.Name]; ok && a.Searched {
		w.Message = &a
		switch {
		case a.Found && !a.Delivered && a.Ahead > 0:
			parts = append(parts, fmt.Sprintf("its task waits in JETFLOW_TASKS since %s, not delivered yet, behind %d other tasks of its type", stamp(a.Stored), a.Ahead))
		case a.Found && !a.Delivered:
			parts = append(parts, fmt.Sprintf("its task waits in JETFLOW_TASKS since %s, not delivered to any worker yet", stamp(a.Stored)))
		case a.Found:
			d := ""
			if a.Deliveries > 0 {
				d = fmt.Sprintf(" (%d deliveries so far)", a.Deliveries)
			}
			parts = append(parts, fmt.Sprintf("its task is in JETFLOW_TASKS since %s and was delivered to a worker%s: a worker holds it (ack pending) or it waits for its redelivery", stamp(a.Stored), d))
		default:
			parts = append(parts, "its task is no longer in JETFLOW_TASKS: a worker finished it and its result is not applied yet, or the task was lost")
		}
	}
	if w.Queue != nil {
		parts = append(parts, fmt.Sprintf("the %s queue: %d waiting, %d held by workers (ack pending), %d pulls waiting", s.Task, w.Queue.Pending, w.Queue.AckPending, w.Queue.PullsWaiting))
	}
	if f.PresenceKnown {
		w.Workers = f.Workers[s.Task]
		switch {
		case len(w.Workers) == 0:
			problem = fmt.Sprintf("no worker for task type %s is connected", s.Task)
			parts = append(parts, problem)
		case w.Queue != nil && w.Queue.PullsWaiting == 0:
			parts = append(parts, fmt.Sprintf("%d worker(s) serve %s (%s) but none is pulling it right now: all their slots are busy", len(w.Workers), s.Task, strings.Join(w.Workers, ", ")))
		default:
			parts = append(parts, fmt.Sprintf("%d worker(s) serve %s: %s", len(w.Workers), s.Task, strings.Join(w.Workers, ", ")))
		}
	}
	if s.Timeout > 0 {
		w.Due = inst.Timers[timeoutTimer(s.Name, st.Attempt)]
		if !w.Due.IsZero() {
			parts = append(parts, fmt.Sprintf("the attempt times out at %s (%s)", stamp(w.Due), rel(f.Now, w.Due)))
			overdue(&w, f)
		}
	} else if f.Policy.StaleTask > 0 {
		w.RepairAt = st.AttemptStarted.Add(f.Policy.StaleTask)
		parts = append(parts, fmt.Sprintf("without a result the repair loop presumes the attempt lost at %s (%s, stale task %s)", stamp(w.RepairAt), rel(f.Now, w.RepairAt), f.Policy.StaleTask))
	}
	if st.Error != "" {
		w.Error = st.Error
		parts = append(parts, "the previous attempt failed: "+st.Error)
	}
	w.Detail = strings.Join(parts, "; ")
	return w, problem
}

// explainGate: an attempt waits for a concurrency slot or a rate-limit
// start before its task is published.
func explainGate(s *Step, st *StepState, inst *Instance, f ExplainFacts, w Wait) Wait {
	w.TaskType, w.Attempt, w.Since = s.Task, st.Attempt, st.GateSince
	w.MaxAttempts = s.Retry.withDefaults().MaxAttempts
	if st.Gate == GatePaused {
		w.For = WaitPaused
		w.Detail = fmt.Sprintf("attempt %d waits because workflow %s is paused: its %s task is published when the workflow is resumed (jetflow resume %s)", st.Attempt, inst.Workflow, s.Task, inst.Workflow)
		if f.PausedKnown && !f.Paused {
			w.Detail += "; the workflow is not paused any more: its release is on its way (the repair loops send it again while it waits)"
		}
		return w
	}
	if st.Gate == GateSlot {
		slotWait(&w, st.Slot, Holder{Instance: inst.ID, Step: s.Name, Attempt: st.Attempt}, s.Concurrency.Limit, f,
			fmt.Sprintf("attempt %d waits for a concurrency slot of step %s (at most %d attempts at once per key value) before its %s task is published", st.Attempt, s.Name, s.Concurrency.Limit, s.Task))
		return w
	}
	w.For = WaitRate
	w.Detail = fmt.Sprintf("attempt %d waits for its rate limit (at most %d starts per %s per key value) before its %s task is published", st.Attempt, s.RateLimit.Limit, s.RateLimit.Per, s.Task)
	if at, ok := inst.Timers[rateTimer(s.Name, st.Attempt)]; ok {
		w.Due = at
		w.Detail += fmt.Sprintf("; it tries again at %s (%s)", stamp(at), rel(f.Now, at))
		overdue(&w, f)
	} else {
		w.Detail += "; its try is on its way"
	}
	return w
}

// slotWait describes a wait for a slot from the slot record, if read.
func slotWait(w *Wait, key string, h Holder, limit int, f ExplainFacts, detail string) {
	w.For, w.Slot, w.Limit = WaitSlot, key, limit
	parts := []string{detail, fmt.Sprintf("slot record %s in bucket jetflow_flow", key)}
	if rec, ok := f.Slots[key]; ok {
		for _, x := range rec.Holders {
			w.Holders = append(w.Holders, x.String())
		}
		switch {
		case indexOf(rec.Holders, h) >= 0:
			parts = append(parts, "the slot is granted; the grant is on its way to the instance")
		case indexOf(rec.Waiters, h) >= 0:
			w.Position = indexOf(rec.Waiters, h) + 1
			parts = append(parts, fmt.Sprintf("held by %s; number %d in line", strings.Join(w.Holders, ", "), w.Position))
		default:
			parts = append(parts, "the record does not list it yet: its request is on its way (the repair loop sends it again after the stale gate time)")
		}
	}
	if f.Policy.StaleGate > 0 {
		w.RepairAt = w.Since.Add(f.Policy.StaleGate)
	}
	w.Detail = strings.Join(parts, "; ")
}

// explainRetry: a failed attempt waits for its retry timer.
func explainRetry(s *Step, st *StepState, inst *Instance, f ExplainFacts, w Wait) Wait {
	w.For, w.TaskType, w.Attempt, w.Error = WaitRetry, s.Task, st.Attempt+1, st.Error
	w.MaxAttempts = s.Retry.withDefaults().MaxAttempts
	w.Since = st.AttemptStarted
	w.Detail = fmt.Sprintf("attempt %d of %d failed (%s); attempt %d is scheduled", st.Attempt, w.MaxAttempts, st.Error, st.Attempt+1)
	timerWait(&w, inst, retryTimer(s.Name, st.Attempt+1), f, "starts")
	return w
}

// timerWait adds a step's pending timer to w: when it is due, and when
// the repair loop fires it if it is overdue.
func timerWait(w *Wait, inst *Instance, id string, f ExplainFacts, verb string) {
	at, ok := inst.Timers[id]
	if !ok {
		w.Detail += fmt.Sprintf("; its timer %s is not pending (the instance lost it)", id)
		return
	}
	w.Due = at
	w.Detail += fmt.Sprintf("; it %s at %s (%s)", verb, stamp(at), rel(f.Now, at))
	overdue(w, f)
}

// overdue notes a timer past due and when the repair loop fires it.
func overdue(w *Wait, f ExplainFacts) {
	if !f.Now.After(w.Due) {
		return
	}
	w.Overdue = true
	if f.Policy.TimerGrace <= 0 {
		w.Detail += "; the timer is overdue and the repair loop does not fire timers (timer grace is off)"
		return
	}
	w.RepairAt = w.Due.Add(f.Policy.TimerGrace)
	if f.Now.After(w.RepairAt) {
		w.Detail += fmt.Sprintf("; the timer is overdue by %s: the repair loop should have fired it at %s (is a dispatcher running?)",
			f.Now.Sub(w.Due).Round(time.Second), stamp(w.RepairAt))
		return
	}
	w.Detail += fmt.Sprintf("; the timer is overdue: the repair loop fires it at %s (%s)", stamp(w.RepairAt), rel(f.Now, w.RepairAt))
}

// explainBulk: a bulk step waits for its children.
func explainBulk(s *Step, st *StepState, f ExplainFacts, w Wait) Wait {
	w.For = WaitChildren
	b := &BulkWait{Total: st.Total, Dispatched: st.Cursor, Completed: st.Done, Failed: st.ChildFailed, InFlight: st.InFlight()}
	for _, c := range f.Children[s.Name] {
		if c.Status == StatusRunning {
			b.Running = append(b.Running, c)
		} else {
			b.Stuck = append(b.Stuck, c)
		}
	}
	w.Bulk = b
	parts := []string{fmt.Sprintf("%d of %d children dispatched (workflow %s): %d completed, %d failed, %d in flight",
		st.Cursor, st.Total, s.Workflow, st.Done, st.ChildFailed, b.InFlight)}
	if st.Cursor < st.Total {
		parts = append(parts, fmt.Sprintf("%d not dispatched yet", st.Total-st.Cursor))
	}
	if len(b.Running) > 0 {
		parts = append(parts, fmt.Sprintf("running: %s", childList(b.Running)))
	}
	for _, c := range b.Stuck {
		if c.Status == "" {
			parts = append(parts, fmt.Sprintf("child %d (%s) does not exist: its start was lost", c.Index, c.ID))
		} else {
			parts = append(parts, fmt.Sprintf("child %d (%s) %s but its completion is not counted", c.Index, c.ID, c.Status))
		}
	}
	moved := bulkMoved(st)
	if f.Policy.StaleBulk > 0 && st.Done+st.ChildFailed < st.Cursor {
		r := max(reconcileRound(f.Now.Sub(moved), f.Policy.StaleBulk)+1, 1)
		w.RepairAt = roundStart(moved, r, f.Policy.StaleBulk)
		parts = append(parts, fmt.Sprintf("last moved %s; the repair loop reconciles the children (recount, poke the uncounted) at %s (%s)", stamp(moved), stamp(w.RepairAt), rel(f.Now, w.RepairAt)))
	}
	w.Detail = strings.Join(parts, "; ")
	return w
}

func childList(cs []ChildFacts) string {
	var out []string
	for i, c := range cs {
		if i == 10 {
			out = append(out, fmt.Sprintf("and %d more", len(cs)-10))
			break
		}
		out = append(out, fmt.Sprintf("%d (%s)", c.Index, c.ID))
	}
	return strings.Join(out, ", ")
}

// lastError is the instance's error, or the latest step error.
func lastError(inst *Instance) (msg, step string) {
	if inst.Error != "" {
		return inst.Error, ""
	}
	var at time.Time
	for _, name := range sortedKeys(inst.Steps) {
		st := inst.Steps[name]
		if st.Error == "" {
			continue
		}
		when := st.AttemptStarted
		if st.Ended.After(when) {
			when = st.Ended
		}
		if msg == "" || when.After(at) {
			msg, step, at = st.Error, name, when
		}
	}
	return msg, step
}

func summary(inst *Instance, x Explanation) string {
	if len(x.Waits) == 0 {
		return fmt.Sprintf("%s is running with no open step: a change is being applied, or the instance is wedged", inst.ID)
	}
	var whats []string
	for _, w := range x.Waits {
		switch w.For {
		case WaitTask:
			whats = append(whats, fmt.Sprintf("step %s waits for a %s task", w.Step, w.TaskType))
		case WaitRetry:
			whats = append(whats, fmt.Sprintf("step %s waits to retry", w.Step))
		case WaitTimer:
			whats = append(whats, fmt.Sprintf("step %s sleeps", w.Step))
		case WaitSignal:
			whats = append(whats, fmt.Sprintf("step %s waits for signal %q", w.Step, w.Signal))
		case WaitChildren:
			whats = append(whats, fmt.Sprintf("step %s waits for %d children", w.Step, w.Bulk.InFlight+w.Bulk.Total-w.Bulk.Dispatched))
		case WaitSlot:
			if w.Step == "" {
				whats = append(whats, "it waits for a concurrency slot")
			} else {
				whats = append(whats, fmt.Sprintf("step %s waits for a concurrency slot", w.Step))
			}
		case WaitRate:
			whats = append(whats, fmt.Sprintf("step %s waits for its rate limit", w.Step))
		case WaitPaused:
			whats = append(whats, fmt.Sprintf("step %s waits because workflow %s is paused", w.Step, inst.Workflow))
		case WaitChild:
			whats = append(whats, fmt.Sprintf("step %s waits for its child workflow", w.Step))
		}
	}
	s := fmt.Sprintf("%s is running: %s", inst.ID, strings.Join(whats, "; "))
	if len(x.Problems) > 0 {
		s += ". Problem: " + strings.Join(x.Problems, "; ")
	}
	return s
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// rel says how t relates to now: "in 5s" or "3s ago".
func rel(now, t time.Time) string {
	d := t.Sub(now).Round(time.Second)
	switch {
	case d > 0:
		return "in " + d.String()
	case d < 0:
		return (-d).String() + " ago"
	}
	return "now"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
