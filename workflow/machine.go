package workflow

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Apply is the transition function: it applies one event to an instance at
// time now and returns the new state and the work to do. inst is nil when
// the instance does not exist yet (only EventStart creates one). inst is
// never modified.
//
// Apply is deterministic: it reads no clock and no randomness, only its
// arguments and values from data, which are write-once. An error means a
// data value could not be loaded; the caller retries the event later.
// Everything else — stale results, duplicate triggers, failures of
// expressions — is part of the decision.
func Apply(def *Definition, inst *Instance, ev Event, now time.Time, data Data) (Decision, error) {
	if inst == nil {
		if ev.Kind == EventCancel && ev.Parent != nil && ev.Workflow == def.Name {
			return cancelledChild(def, ev, now, data)
		}
		if ev.Kind != EventStart {
			return Decision{Ignored: fmt.Sprintf("%s event for unknown instance %s", ev.Kind, ev.Instance)}, nil
		}
		return start(def, ev, now, data)
	}
	if ev.Kind == EventStart {
		return Decision{Instance: inst, Ignored: "duplicate trigger: instance exists"}, nil
	}
	if ev.Kind == EventRetry {
		return retry(def, inst, ev, now, data)
	}
	if inst.Status.Terminal() {
		return Decision{Instance: inst, Ignored: "instance already " + string(inst.Status)}, nil
	}
	t := &transition{def: def, inst: inst.Clone(), now: now, data: data, paused: ev.Paused}
	switch ev.Kind {
	case EventResult:
		t.result(ev)
	case EventTimer:
		t.timer(ev.Timer)
	case EventChildDone, EventContinue, EventRecount:
		t.bulkEvent(ev)
	case EventSignal:
		t.signal(ev)
	case EventGrant:
		t.grant(ev)
	case EventRepair:
		t.repair(ev)
	case EventCancel:
		reason := ev.Reason
		if reason == "" {
			reason = "cancelled"
		}
		t.finish(StatusCancelled, "", reason)
	default:
		t.ignored = fmt.Sprintf("unknown event kind %q", ev.Kind)
	}
	return t.decision(inst)
}

func start(def *Definition, ev Event, now time.Time, data Data) (Decision, error) {
	inst := &Instance{
		ID:          ev.Instance,
		Workflow:    def.Name,
		Version:     def.Version,
		EventKey:    ev.EventKey,
		InputRef:    ev.InputRef,
		InputDigest: ev.InputDigest,
		Status:      StatusRunning,
		Created:     now,
		Steps:       map[string]*StepState{},
		Parent:      ev.Parent,
		TriggerSeq:  ev.TriggerSeq,
		Run:         ev.Run,
		Trace:       ev.Trace,
	}
	t := &transition{def: def, inst: inst, now: now, data: data, changed: true, paused: ev.Paused}
	if def.Deadline > 0 {
		t.setTimer(deadlineTimer, now.Add(def.Deadline.D()))
	}
	if def.Concurrency != nil {
		t.enterInstanceGate()
		return t.decision(nil)
	}
	t.activate(def.Start)
	return t.decision(nil)
}

// Outstanding re-derives the work that a running instance has in flight:
// the task of every running attempt and every pending timer. Publishing
// them again is safe — task ids are deterministic and results are fenced by
// attempt — so this is how a redelivered event or a repair recovers work
// that was lost between the CAS and the publish.
func Outstanding(def *Definition, inst *Instance) Decision {
	d := Decision{Instance: inst}
	if inst == nil {
		return d
	}
	d.Gates = owedGates(def, inst)
	if inst.Status.Terminal() {
		if inst.Parent != nil {
			d.Events = append(d.Events, parentNotice(inst))
		}
		d.Events = append(d.Events, childCancels(def, inst)...)
		return d
	}
	for _, name := range sortedKeys(inst.Steps) {
		st := inst.Steps[name]
		s, ok := def.index[name]
		if !ok || st.Status != StepRunning {
			continue
		}
		switch {
		case s.Kind == KindTask && st.Gate == "":
			d.Tasks = append(d.Tasks, taskFor(def, inst, s, st))
		case s.Kind == KindWorkflow:
			d.Children = append(d.Children, childFor(inst, s, st.Attempt))
		}
	}
	for _, id := range sortedKeys(inst.Timers) {
		d.Timers = append(d.Timers, Timer{Instance: inst.ID, ID: id, At: inst.Timers[id]})
	}
	for _, name := range sortedKeys(inst.Steps) {
		st := inst.Steps[name]
		s, ok := def.index[name]
		if !ok || s.Kind != KindBulk || st.Status != StepRunning {
			continue
		}
		// The last chunk may not have been published. An earlier one was,
		// unless later chunks overtook its failed publish under a window;
		// the repair loop's stale-bulk recount covers that
		// (UncountedChildren).
		for i := st.ChunkFrom; i < st.Cursor; i++ {
			d.Children = append(d.Children, childFor(inst, s, i))
		}
		if cont, ok := continueFor(inst, s, st); ok {
			d.Events = append(d.Events, cont)
		}
	}
	return d
}

// parentNotice is the completion notice a finished child sends its parent.
func parentNotice(inst *Instance) OutEvent {
	p := inst.Parent
	return OutEvent{
		Event: Event{Kind: EventChildDone, Instance: p.ID, Step: p.Step, Index: p.Index, ChildStatus: inst.Status, Error: inst.Error, OutputRef: inst.OutputRef},
		MsgID: ChildDoneMsgID(p.ID, p.Step, p.Index),
	}
}

type transition struct {
	def      *Definition
	inst     *Instance
	now      time.Time
	data     Data
	paused   bool // the instance's workflow is paused (Event.Paused)
	changed  bool
	ignored  string
	err      error // infrastructure error: abort the transition
	writes   []Write
	tasks    []Task
	timers   []Timer
	children []Child
	events   []OutEvent
	gates    []GateOp
}

func (t *transition) decision(old *Instance) (Decision, error) {
	if t.err != nil {
		return Decision{}, t.err
	}
	if !t.changed {
		return Decision{Instance: old, Ignored: t.ignored}, nil
	}
	t.inst.Updated = t.now
	t.inst.Events++
	gates := t.gates
	if old != nil {
		gates = append(gates, gateReleases(t.def, old, t.inst)...)
	}
	return Decision{Instance: t.inst, Changed: true, Writes: t.writes, Tasks: t.tasks, Timers: t.timers,
		Children: t.children, Events: t.events, Gates: gates}, nil
}

func (t *transition) result(ev Event) {
	st := t.inst.Steps[ev.Step]
	s, ok := t.def.index[ev.Step]
	switch {
	case !ok || st == nil || s.Kind != KindTask:
		t.ignored = fmt.Sprintf("result for step %q that is not a running task", ev.Step)
		return
	case st.Status != StepRunning:
		t.ignored = fmt.Sprintf("stale result: step %q is %s", ev.Step, st.Status)
		return
	case ev.Attempt != st.Attempt:
		t.ignored = fmt.Sprintf("stale result: attempt %d of step %q, current attempt is %d", ev.Attempt, ev.Step, st.Attempt)
		return
	}
	t.changed = true
	delete(t.inst.Timers, timeoutTimer(s.Name, st.Attempt))
	t.endAttempt(st, ev.Worker, ev.Error)
	if ev.Error == "" {
		st.Status = StepCompleted
		st.OutputRef = ev.OutputRef
		st.Error = ""
		st.Ended = t.now
		t.follow(s)
		return
	}
	t.attemptFailed(s, st, ev.Error, ev.Permanent, ev.RetryAfter)
}

// attemptFailed retries the step or fails it for good.
func (t *transition) attemptFailed(s *Step, st *StepState, msg string, permanent bool, retryAfter time.Duration) {
	policy := s.Retry.withDefaults()
	st.Error = msg
	if permanent || st.Attempt >= policy.MaxAttempts {
		why := fmt.Sprintf("failed after %d attempt(s): %s", st.Attempt, msg)
		if permanent {
			why = fmt.Sprintf("failed permanently on attempt %d: %s", st.Attempt, msg)
		}
		t.failStep(s, st, why)
		return
	}
	delay := retryAfter
	if delay <= 0 {
		delay = Backoff(policy, st.Attempt)
	}
	if delay < ImmediateRetry {
		t.startAttempt(s, st)
		return
	}
	st.Status = StepWaiting
	t.setTimer(retryTimer(s.Name, st.Attempt+1), t.now.Add(delay))
}

// ImmediateRetry: a retry delay shorter than this starts the next attempt
// at once, without a timer (timers have one-second precision).
const ImmediateRetry = 10 * time.Millisecond

// Backoff is the delay after the given failed attempt (1-based).
func Backoff(p RetryPolicy, attempt int) time.Duration {
	d := float64(p.InitialInterval) * math.Pow(p.BackoffCoefficient, float64(attempt-1))
	if d > float64(p.MaxInterval) || math.IsInf(d, 0) || math.IsNaN(d) {
		return p.MaxInterval.D()
	}
	return time.Duration(d)
}

func (t *transition) timer(id string) {
	if _, ok := t.inst.Timers[id]; !ok {
		t.ignored = fmt.Sprintf("timer %q is not pending", id)
		return
	}
	t.changed = true
	delete(t.inst.Timers, id)
	if id == deadlineTimer {
		t.finish(StatusFailed, "", fmt.Sprintf("deadline of %s exceeded", t.def.Deadline))
		return
	}
	kind, step, attempt, ok := parseTimer(id)
	if !ok {
		return // an unknown pending timer is dropped
	}
	s, sok := t.def.index[step]
	st := t.inst.Steps[step]
	if !sok || st == nil {
		return
	}
	switch kind {
	case "retry":
		if st.Status == StepWaiting && st.Attempt+1 == attempt {
			t.startAttempt(s, st)
		}
	case "timeout":
		if st.Status == StepRunning && st.Attempt == attempt {
			msg := fmt.Sprintf("attempt %d timed out after %s", attempt, s.Timeout)
			t.endAttempt(st, "", msg)
			t.attemptFailed(s, st, msg, false, 0)
		}
	case "sleep":
		if st.Status == StepRunning {
			st.Status, st.Ended = StepCompleted, t.now
			t.follow(s)
		}
	case "wait":
		if st.Status == StepRunning {
			t.failStep(s, st, fmt.Sprintf("no %q signal within %s", s.Signal, s.Timeout))
		}
	case "rate":
		if st.Status == StepRunning && st.Attempt == attempt && st.Gate == GateRate {
			t.gates = append(t.gates, rateOp(s, st, Holder{Instance: t.inst.ID, Step: s.Name, Attempt: attempt}))
		}
	}
}

// signal completes the running wait step for the signal, or keeps the
// signal for a wait step that has not started yet.
func (t *transition) signal(ev Event) {
	// running: the wait step for the signal that runs now; pending: the
	// first one that has not started.
	var running, pending *Step
	any := false
	for i := range t.def.Steps {
		s := &t.def.Steps[i]
		if s.Kind != KindWait || s.Signal != ev.Signal {
			continue
		}
		any = true
		st := t.inst.Steps[s.Name]
		switch {
		case st == nil:
			if pending == nil {
				pending = s
			}
		case st.Status == StepRunning:
			running = s
		case st.OutputRef == ev.OutputRef:
			// This very signal (its payload key names it) completed a
			// wait step already: a redelivery, perhaps after a crash.
			// Taking it again would change the instance and hide that
			// the event was applied.
			t.ignored = fmt.Sprintf("signal %q already taken by step %q", ev.Signal, s.Name)
			return
		}
	}
	switch {
	case !any:
		t.ignored = fmt.Sprintf("no wait step waits for signal %q", ev.Signal)
		return
	case running != nil:
		t.changed = true
		t.completeWait(running, t.inst.Steps[running.Name], ev.OutputRef)
		return
	case pending == nil:
		t.ignored = fmt.Sprintf("signal %q: every wait step for it has ended", ev.Signal)
		return
	}
	if _, seen := t.inst.Signals[ev.Signal]; seen {
		t.ignored = fmt.Sprintf("signal %q already received", ev.Signal)
		return
	}
	t.changed = true
	if t.inst.Signals == nil {
		t.inst.Signals = map[string]string{}
	}
	t.inst.Signals[ev.Signal] = ev.OutputRef
}

func (t *transition) completeWait(s *Step, st *StepState, ref string) {
	delete(t.inst.Timers, waitTimer(s.Name))
	st.Status, st.Ended, st.OutputRef = StepCompleted, t.now, ref
	t.follow(s)
}

// repair fails an attempt the repair loop presumes lost, unless it already
// finished: then the repair lost its race and changes nothing.
func (t *transition) repair(ev Event) {
	s, ok := t.def.index[ev.Step]
	st := t.inst.Steps[ev.Step]
	if !ok || st == nil || s.Kind != KindTask || st.Status != StepRunning || st.Attempt != ev.Attempt || st.Gate != "" {
		t.ignored = fmt.Sprintf("repair of %s attempt %d lost its race: the attempt is no longer running", ev.Step, ev.Attempt)
		return
	}
	t.changed = true
	delete(t.inst.Timers, timeoutTimer(s.Name, st.Attempt))
	msg := fmt.Sprintf("attempt %d presumed lost: %s", st.Attempt, ev.Reason)
	t.endAttempt(st, "", msg)
	t.attemptFailed(s, st, msg, false, 0)
}

// endAttempt records the running attempt of st as ended now, by worker
// (if known), with error msg ("" on success).
func (t *transition) endAttempt(st *StepState, worker, msg string) {
	if len(msg) > MaxHistoryError {
		msg = truncateUTF8(msg, MaxHistoryError)
	}
	st.History = append(st.History, AttemptRecord{Attempt: st.Attempt, Started: st.AttemptStarted, Ended: t.now, Worker: worker, Error: msg})
}

// truncateUTF8 cuts s to at most n bytes without splitting a character.
func truncateUTF8(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func parseTimer(id string) (kind, step string, attempt int, ok bool) {
	parts := strings.Split(id, ".")
	if len(parts) != 3 {
		return "", "", 0, false
	}
	n, err := strconv.Atoi(parts[2])
	if err != nil {
		return "", "", 0, false
	}
	return parts[0], parts[1], n, true
}

func (t *transition) setTimer(id string, at time.Time) {
	if t.inst.Timers == nil {
		t.inst.Timers = map[string]time.Time{}
	}
	t.inst.Timers[id] = at
	t.timers = append(t.timers, Timer{Instance: t.inst.ID, ID: id, At: at})
}

// activate starts a step.
func (t *transition) activate(name string) {
	if t.err != nil || t.inst.Status.Terminal() {
		return
	}
	s := t.def.index[name]
	st := &StepState{Status: StepRunning, Started: t.now}
	old := t.inst.Steps[name]
	if old != nil {
		// Activated again by an operator's retry: attempts go on from
		// where they were, so task ids and data keys stay fresh. A bulk
		// step that ran is not run again: its children exist.
		if s.Kind == KindBulk && old.Status.Terminal() {
			t.bulkRanBefore(s, old)
			return
		}
		st.Attempt = old.Attempt
		st.History = old.History // Clone gave this instance its own copy
	}
	t.inst.Steps[name] = st
	switch s.Kind {
	case KindTask:
		st.InputRef = t.inst.InputRef
		if s.Input != "" {
			v, err := t.def.eval(s.Name, "input", t.inst, t)
			if err != nil {
				t.exprFailed(s, st, err)
				return
			}
			st.InputRef = StepInputKey(t.inst.ID, s.Name)
			if old != nil {
				st.InputRef = StepRetryInputKey(t.inst.ID, s.Name, st.Attempt+1)
			}
			t.writes = append(t.writes, Write{Key: st.InputRef, Value: v})
		}
		if (s.Concurrency != nil || s.RateLimit != nil) && !t.stepGateKeys(s, st) {
			return
		}
		t.startAttempt(s, st)
	case KindParallel:
		st.Pending = len(s.Branches)
		for _, b := range s.Branches {
			t.activate(b)
		}
	case KindSwitch:
		for i, c := range s.Cases {
			v, err := t.def.eval(s.Name, fmt.Sprintf("case %d condition", i+1), t.inst, t)
			if err != nil {
				t.exprFailed(s, st, err)
				return
			}
			b, isBool := v.(bool)
			if !isBool {
				t.exprFailed(s, st, &ExprError{Step: s.Name, What: fmt.Sprintf("case %d condition", i+1), Err: fmt.Errorf("result is %T, not bool", v)})
				return
			}
			if b {
				st.Status, st.Ended, st.OutputRef = StepCompleted, t.now, ""
				t.activate(c.Next)
				return
			}
		}
		st.Status, st.Ended = StepCompleted, t.now
		if s.Default != "" {
			t.activate(s.Default)
			return
		}
		t.chainEnd(s.Name)
	case KindBulk:
		t.activateBulk(s, st)
	case KindWorkflow:
		t.activateChild(s, st)
	case KindSleep:
		t.setTimer(sleepTimer(s.Name), t.now.Add(s.Duration.D()))
	case KindWait:
		if ref, ok := t.inst.Signals[s.Signal]; ok {
			delete(t.inst.Signals, s.Signal)
			t.completeWait(s, st, ref)
			return
		}
		if s.Timeout > 0 {
			t.setTimer(waitTimer(s.Name), t.now.Add(s.Timeout.D()))
		}
	}
}

// exprFailed fails a step whose expression failed. A data load error is
// not the step's fault: it aborts the transition so the event is retried.
func (t *transition) exprFailed(s *Step, st *StepState, err error) {
	var ee *ExprError
	if !errors.As(err, &ee) {
		t.err = err
		return
	}
	t.failStep(s, st, fmt.Sprintf("evaluating %s: %v", ee.What, ee.Err))
}

func (t *transition) startAttempt(s *Step, st *StepState) {
	st.Attempt++
	st.Status = StepRunning
	if t.paused {
		t.hold(st, "")
		return
	}
	t.enterGates(s, st)
}

// enterGates takes an attempt through its flow-control gates, slot then
// rate, to its task.
func (t *transition) enterGates(s *Step, st *StepState) {
	switch {
	case st.Slot != "":
		st.Gate, st.GateSince = GateSlot, t.now
		t.gates = append(t.gates, GateOp{Kind: OpAcquire, Key: st.Slot, Holder: Holder{Instance: t.inst.ID, Step: s.Name, Attempt: st.Attempt},
			Limit: s.Concurrency.Limit, Queue: true})
		return
	case st.Rate != "":
		st.Gate, st.GateSince = GateRate, t.now
		t.gates = append(t.gates, rateOp(s, st, Holder{Instance: t.inst.ID, Step: s.Name, Attempt: st.Attempt}))
		return
	}
	t.publishAttempt(s, st)
}

// publishAttempt starts an attempt that passed its gates: its task is
// published and its timeout starts.
func (t *transition) publishAttempt(s *Step, st *StepState) {
	st.AttemptStarted = t.now
	t.tasks = append(t.tasks, taskFor(t.def, t.inst, s, st))
	if s.Timeout > 0 {
		t.setTimer(timeoutTimer(s.Name, st.Attempt), t.now.Add(s.Timeout.D()))
	}
}

func taskFor(def *Definition, inst *Instance, s *Step, st *StepState) Task {
	return Task{
		Instance:    inst.ID,
		Workflow:    inst.Workflow,
		Version:     inst.Version,
		Step:        s.Name,
		Type:        s.Task,
		Attempt:     st.Attempt,
		InputRef:    st.InputRef,
		EffectKey:   EffectKey(inst.ID, s.Name),
		Once:        s.Once,
		Timeout:     s.Timeout.D(),
		MaxAttempts: s.Retry.withDefaults().MaxAttempts,
		Trace:       inst.Trace,
	}
}

func (t *transition) failStep(s *Step, st *StepState, why string) {
	st.Status = StepFailed
	st.Error = why
	st.Ended = t.now
	if s.OnFailure != "" {
		t.activate(s.OnFailure)
		return
	}
	t.finish(StatusFailed, "", fmt.Sprintf("step %q %s", s.Name, why))
}

// follow continues after a completed step.
func (t *transition) follow(s *Step) {
	if s.Next != "" {
		t.activate(s.Next)
		return
	}
	t.chainEnd(s.Name)
}

// chainEnd is called when the chain that last ran step ends. In the root
// scope that completes the instance; in a branch it counts down the
// owning parallel step.
func (t *transition) chainEnd(last string) {
	if t.err != nil || t.inst.Status.Terminal() {
		return
	}
	scope := scopeOwner(t.def.scopes[last])
	if scope == "" {
		out := t.inst.Steps[last].OutputRef
		if t.def.Output != "" {
			v, err := t.def.eval("", "output", t.inst, t)
			if err != nil {
				var ee *ExprError
				if !errors.As(err, &ee) {
					t.err = err
					return
				}
				t.finish(StatusFailed, "", err.Error())
				return
			}
			out = InstanceOutputKey(t.inst.ID)
			t.writes = append(t.writes, Write{Key: out, Value: v})
		}
		t.finish(StatusCompleted, out, "")
		return
	}
	p := t.inst.Steps[scope]
	p.Pending--
	if p.Pending > 0 {
		return
	}
	p.Status, p.Ended = StepCompleted, t.now
	t.follow(t.def.index[scope])
}

func (t *transition) finish(status Status, outputRef, errMsg string) {
	t.changed = true
	t.inst.Status = status
	t.inst.OutputRef = outputRef
	t.inst.Error = errMsg
	t.inst.Ended = t.now
	t.inst.Timers = nil
	t.tasks = nil // nothing more to run once the instance is over
	t.timers = nil
	t.children = nil
	t.events = nil
	t.gates = nil // releases are derived from the states (decision)
	if t.inst.Parent != nil {
		t.events = append(t.events, parentNotice(t.inst))
	}
	t.events = append(t.events, childCancels(t.def, t.inst)...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Load makes the transition a Data view that sees the values it has
// decided to write (they are written only after Apply returns, before the
// CAS), so a later step in the same transition can read, say, the output
// a bulk step just produced.
func (t *transition) Load(key string) (any, error) {
	for i := len(t.writes) - 1; i >= 0; i-- {
		if t.writes[i].Key == key {
			return t.writes[i].Value, nil
		}
	}
	return t.data.Load(key)
}
