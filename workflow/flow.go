package workflow

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Flow control: concurrency limits and rate limits.
//
// A concurrency limit is enforced by a slot record per (workflow, step,
// key value) in a KV bucket (SlotRecord): the holders, at most the limit,
// and the waiters in arrival order. An instance (workflow limit) or a
// task attempt (step limit) that needs a slot enters a gate: its state
// says it waits (Instance.Gate, StepState.Gate) and the transition asks
// for a GateOp acquire. The dispatcher carries the op out after the
// instance's CAS, with a CAS on the slot record, and sends the holder an
// EventGrant once the record lists it among the holders; only applying
// that grant lets the instance or attempt run. A transition that ends a
// holder (its attempt or its instance ended, however: result, timeout,
// repair, cancel, deadline) asks for a release, derived by comparing the
// states before and after (gateReleases), so no path can forget it.
//
// Every op is idempotent by holder id, and the work a state owes is
// re-derived from the state (Outstanding), so a crash between the two CAS
// writes is recovered like any lost publish. The repair loop reconciles
// the slot records with the instance states (SlotLive): a holder or
// waiter whose instance ended, vanished or moved on is dropped, waiters
// are promoted into free slots, and every holder still waiting is sent
// its grant again. So a slot cannot leak for longer than a repair sweep.
//
// A rate limit is a record of the attempt starts of the last Per per key
// value (RateRecord); an attempt takes a start if fewer than Limit
// started within Per, and otherwise waits on a timer for the moment the
// oldest start leaves the window, then tries again. Nothing is dropped.

// Concurrency bounds how many instances (workflow) or attempts (task
// step) run at once per key value.
type Concurrency struct {
	// Key is an expression over input whose value (a string or an
	// integer) partitions the limit: 'input.customerId'. Default empty:
	// one limit for the whole workflow or step.
	Key string `yaml:"key,omitempty"`
	// Limit is how many may run at once per key value; at least 1.
	Limit int `yaml:"limit"`
	// OnLimit (workflow only) is what a new instance does when the
	// limit is reached: OnLimitQueue (default) waits for a slot in
	// arrival order; OnLimitSkip ends it at once as skipped.
	OnLimit LimitPolicy `yaml:"on_limit,omitempty"`
}

// RateLimit bounds how often attempts of a task step start per key value.
type RateLimit struct {
	// Key is an expression over input, as Concurrency.Key.
	Key string `yaml:"key,omitempty"`
	// Limit is how many attempts may start within Per; at least 1, at
	// most MaxRateLimit.
	Limit int `yaml:"limit"`
	// Per is the window; positive. Waiting attempts retry on timers,
	// which have one-second precision.
	Per Duration `yaml:"per"`
}

// LimitPolicy is what a new instance does when its workflow's
// concurrency limit is reached (concurrency.on_limit): OnLimitQueue or
// OnLimitSkip. Empty means OnLimitQueue.
type LimitPolicy string

// Flow control limits and policies.
const (
	OnLimitQueue LimitPolicy = "queue"
	OnLimitSkip  LimitPolicy = "skip"
	// MaxRateLimit caps RateLimit.Limit: the rate record holds one entry
	// per start within the window.
	MaxRateLimit = 10_000
	// MaxSlotLimit caps Concurrency.Limit: the slot record lists holders.
	MaxSlotLimit = 10_000
)

// Gates an instance or an attempt can wait at.
const (
	GateSlot = "slot" // waits for a concurrency slot
	GateRate = "rate" // waits for a rate-limit start
	// GatePaused: an attempt that was to start while its workflow was
	// paused (jetflow pause) waits for the resume; pause.go.
	GatePaused = "paused"
)

func (d *Definition) validateConcurrency(step string, c *Concurrency, workflowLevel bool) error {
	if c.Limit < 1 || c.Limit > MaxSlotLimit {
		return d.errf(step, "concurrency.limit must be between 1 and %d, got %d", MaxSlotLimit, c.Limit)
	}
	switch c.OnLimit {
	case "", OnLimitQueue:
	case OnLimitSkip:
		if !workflowLevel {
			return d.errf(step, "concurrency.on_limit is only allowed on a workflow's concurrency (a step's attempts always queue)")
		}
	default:
		return d.errf(step, "concurrency.on_limit must be %s (default) or %s, got %q", OnLimitQueue, OnLimitSkip, c.OnLimit)
	}
	return d.compileKey(step, "concurrency key", c.Key)
}

func (d *Definition) validateRateLimit(step string, r *RateLimit) error {
	if r.Limit < 1 || r.Limit > MaxRateLimit {
		return d.errf(step, "rate_limit.limit must be between 1 and %d, got %d", MaxRateLimit, r.Limit)
	}
	if r.Per <= 0 {
		return d.errf(step, "rate_limit.per must be a positive duration (\"1s\", \"1m\"), got %s", r.Per)
	}
	return d.compileKey(step, "rate_limit key", r.Key)
}

// compileKey compiles a flow-control key: an expression over input only.
func (d *Definition) compileKey(step, what, src string) error {
	if src == "" {
		return nil
	}
	if err := d.compile(step, what, src); err != nil {
		return err
	}
	c := d.compiled[exprKey(step, what)]
	if !c.usesInput || len(c.steps) > 0 || strings.Contains(src, "steps") {
		return d.errf(step, "%s %q must be an expression over input only (such as 'input.customerId'): it is evaluated before any step runs", what, src)
	}
	return nil
}

// keyValue evaluates a flow-control key to its canonical string: a
// string as it is, an integer as its digits. Empty src: "".
func (d *Definition) keyValue(step, what, src string, inst *Instance, data Data) (string, error) {
	if src == "" {
		return "", nil
	}
	v, err := d.eval(step, what, inst, data)
	if err != nil {
		return "", err
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case json.Number:
		if _, err := x.Int64(); err == nil {
			return x.String(), nil
		}
	case float64:
		if x == float64(int64(x)) {
			return strconv.FormatInt(int64(x), 10), nil
		}
	}
	return "", &ExprError{Step: step, What: what, Err: fmt.Errorf("must give a string or an integer, got %T", v)}
}

// SlotKey names the slot record of a workflow's concurrency limit (step
// "") or a task step's, for one key value. Letters, digits, '-', '_',
// '=' and '.': a valid KV key.
func SlotKey(workflowName, step, value string) string {
	if step == "" {
		step = "="
	}
	return "slot." + workflowName + "." + step + "." + digest(value)
}

// RateKey names the rate record of a task step's rate limit for one key
// value.
func RateKey(workflowName, step, value string) string {
	return "rate." + workflowName + "." + step + "." + digest(value)
}

// Holder identifies who holds or waits for a slot (or took a rate start):
// an instance (workflow limit, Step "") or one attempt of a task step.
type Holder struct {
	Instance string `msgpack:"i" json:"instance"`
	Step     string `msgpack:"s,omitempty" json:"step,omitempty"`
	Attempt  int    `msgpack:"a,omitempty" json:"attempt,omitempty"`
}

func (h Holder) String() string {
	if h.Step == "" {
		return h.Instance
	}
	return h.Instance + "/" + h.Step + "/" + strconv.Itoa(h.Attempt)
}

// GateOpKind is what a GateOp does.
type GateOpKind string

// Gate op kinds.
const (
	OpAcquire GateOpKind = "acquire" // join a slot record; granted once a holder
	OpRelease GateOpKind = "release" // leave a slot record (as holder or waiter)
	OpRate    GateOpKind = "rate"    // take a start from a rate record
)

// GateOp asks the dispatcher to change a slot or rate record after the
// instance's CAS, and to tell the holder the outcome (EventGrant).
type GateOp struct {
	Kind   GateOpKind
	Key    string
	Holder Holder
	Limit  int
	// Queue (acquire): wait in line when no slot is free; false: be
	// denied (on_limit: skip).
	Queue bool
	// Per (rate): the window.
	Per time.Duration
}

// GrantMsgID is the message id of the grant (or denial) of a gate to a
// holder.
func GrantMsgID(gate string, h Holder) string { return "grant/" + gate + "/" + h.String() }

// GrantEvent is the event that tells a holder the outcome of its gate.
// at is set for a rate limit: when the start was taken (granted) or
// when one frees (denied).
func GrantEvent(gate string, h Holder, denied bool, at time.Time) OutEvent {
	id := GrantMsgID(gate, h)
	if denied {
		id += "/denied"
	}
	return OutEvent{
		Event: Event{Kind: EventGrant, Instance: h.Instance, Step: h.Step, Attempt: h.Attempt, Gate: gate, Denied: denied, GateAt: at},
		MsgID: id,
	}
}

// SlotRecord is the stored state of one concurrency slot: who holds it
// and who waits, in arrival order. Every change is a CAS on its revision.
type SlotRecord struct {
	Holders []Holder `msgpack:"h" json:"holders"`
	Waiters []Holder `msgpack:"w,omitempty" json:"waiters,omitempty"`
}

func indexOf(list []Holder, h Holder) int {
	for i, x := range list {
		if x == h {
			return i
		}
	}
	return -1
}

// Acquire adds h to the record: a holder if a slot is free and nobody
// waits before it, else a waiter (queue) or nothing (denied). It reports
// whether h holds a slot afterwards, whether the record changed, and the
// waiters promoted to holders on the way (h excluded). Idempotent: a
// holder acquiring again is granted and changes nothing.
func (r SlotRecord) Acquire(h Holder, limit int, queue bool) (out SlotRecord, granted, changed bool, promoted []Holder) {
	out = r.clone()
	if indexOf(out.Holders, h) >= 0 {
		return out, true, false, nil
	}
	if indexOf(out.Waiters, h) < 0 {
		if !queue && (len(out.Holders) >= limit || len(out.Waiters) > 0) {
			return out, false, false, nil
		}
		out.Waiters = append(out.Waiters, h)
		changed = true
	}
	for _, p := range out.promote(limit) {
		changed = true
		if p == h {
			granted = true
		} else {
			promoted = append(promoted, p)
		}
	}
	return out, granted, changed, promoted
}

// Release removes h (as holder or waiter) and promotes waiters into the
// slots that freed. Idempotent.
func (r SlotRecord) Release(h Holder, limit int) (out SlotRecord, changed bool, promoted []Holder) {
	out = r.clone()
	if i := indexOf(out.Holders, h); i >= 0 {
		out.Holders = append(out.Holders[:i], out.Holders[i+1:]...)
		changed = true
	}
	if i := indexOf(out.Waiters, h); i >= 0 {
		out.Waiters = append(out.Waiters[:i], out.Waiters[i+1:]...)
		changed = true
	}
	if p := out.promote(limit); len(p) > 0 {
		changed = true
		promoted = p
	}
	return out, changed, promoted
}

// Reconcile drops every holder and waiter that live reports gone and
// promotes waiters into the freed slots.
func (r SlotRecord) Reconcile(live func(Holder) bool, limit int) (out SlotRecord, changed bool, promoted []Holder) {
	out = SlotRecord{}
	for _, h := range r.Holders {
		if live(h) {
			out.Holders = append(out.Holders, h)
		} else {
			changed = true
		}
	}
	for _, h := range r.Waiters {
		if live(h) {
			out.Waiters = append(out.Waiters, h)
		} else {
			changed = true
		}
	}
	if p := out.promote(limit); len(p) > 0 {
		changed = true
		promoted = p
	}
	return out, changed, promoted
}

// promote moves waiters, first come first, into free slots.
func (r *SlotRecord) promote(limit int) []Holder {
	var p []Holder
	for len(r.Holders) < limit && len(r.Waiters) > 0 {
		h := r.Waiters[0]
		r.Waiters = r.Waiters[1:]
		r.Holders = append(r.Holders, h)
		p = append(p, h)
	}
	r.norm()
	return p
}

// norm makes empty lists nil, so equal records compare equal.
func (r *SlotRecord) norm() {
	if len(r.Holders) == 0 {
		r.Holders = nil
	}
	if len(r.Waiters) == 0 {
		r.Waiters = nil
	}
}

func (r SlotRecord) clone() SlotRecord {
	return SlotRecord{Holders: append([]Holder(nil), r.Holders...), Waiters: append([]Holder(nil), r.Waiters...)}
}

// Empty reports a record with neither holders nor waiters.
func (r SlotRecord) Empty() bool { return len(r.Holders) == 0 && len(r.Waiters) == 0 }

// RateRecord is the stored state of one rate limit: the starts within
// the window, oldest first.
type RateRecord struct {
	Starts []RateStart `msgpack:"s" json:"starts"`
}

// RateStart is one attempt start of a rate limit.
type RateStart struct {
	Holder Holder    `msgpack:"h" json:"holder"`
	At     time.Time `msgpack:"t" json:"at"`
}

// Take takes a start for h at now if fewer than limit started within
// (now-per, now]. Idempotent: a holder whose start is within the window
// is granted again without a new start. When granted, at is the time of
// h's start (now, or the earlier start that is granted again): the
// attempt's recorded start, on which the limit is kept. When denied, at
// is when the oldest start leaves the window.
func (r RateRecord) Take(h Holder, limit int, per time.Duration, now time.Time) (out RateRecord, granted, changed bool, at time.Time) {
	cut := now.Add(-per)
	for _, s := range r.Starts {
		if s.At.After(cut) {
			out.Starts = append(out.Starts, s)
		} else {
			changed = true
		}
	}
	for _, s := range out.Starts {
		if s.Holder == h {
			return out, true, changed, s.At
		}
	}
	if len(out.Starts) >= limit {
		return out, false, changed, out.Starts[len(out.Starts)-limit].At.Add(per)
	}
	out.Starts = append(out.Starts, RateStart{Holder: h, At: now})
	return out, true, true, now
}

// holding lists the holders an instance state holds or waits for, by
// slot key: the instance itself while it runs under a workflow limit,
// and the current attempt of every running task step under a step limit.
func holding(inst *Instance) map[Holder]string {
	if inst == nil || inst.Status.Terminal() {
		return nil
	}
	var out map[Holder]string
	add := func(h Holder, key string) {
		if out == nil {
			out = map[Holder]string{}
		}
		out[h] = key
	}
	if inst.Slot != "" {
		add(Holder{Instance: inst.ID}, inst.Slot)
	}
	for name, st := range inst.Steps {
		if st.Slot != "" && st.Status == StepRunning {
			add(Holder{Instance: inst.ID, Step: name, Attempt: st.Attempt}, st.Slot)
		}
	}
	return out
}

// gateReleases is what a transition from old to new must release: every
// holder old held or waited for that new no longer does.
func gateReleases(def *Definition, old, new *Instance) []GateOp {
	before := holding(old)
	if len(before) == 0 {
		return nil
	}
	after := holding(new)
	var out []GateOp
	for _, h := range sortedHolders(before) {
		if _, still := after[h]; !still {
			out = append(out, GateOp{Kind: OpRelease, Key: before[h], Holder: h, Limit: SlotLimit(def, h.Step)})
		}
	}
	return out
}

func sortedHolders(m map[Holder]string) []Holder {
	keys := make([]string, 0, len(m))
	by := make(map[string]Holder, len(m))
	for h := range m {
		keys = append(keys, h.String())
		by[h.String()] = h
	}
	sort.Strings(keys)
	out := make([]Holder, len(keys))
	for i, k := range keys {
		out[i] = by[k]
	}
	return out
}

// SlotLimit is the limit of the workflow's (step "") or a step's slot.
func SlotLimit(def *Definition, step string) int {
	if step == "" {
		if def.Concurrency != nil {
			return def.Concurrency.Limit
		}
		return 1
	}
	if s, ok := def.index[step]; ok && s.Concurrency != nil {
		return s.Concurrency.Limit
	}
	return 1
}

// owedGates re-derives the gate ops an instance state owes: an acquire or
// rate op for every wait, a release for every slot it no longer holds
// (its release may have been lost) — all idempotent.
func owedGates(def *Definition, inst *Instance) []GateOp {
	var out []GateOp
	if inst.Slot != "" {
		h := Holder{Instance: inst.ID}
		switch {
		case inst.Status.Terminal():
			out = append(out, GateOp{Kind: OpRelease, Key: inst.Slot, Holder: h, Limit: SlotLimit(def, "")})
		case inst.Gate == GateSlot:
			out = append(out, acquireOp(def, inst))
		}
	}
	for _, name := range sortedKeys(inst.Steps) {
		st := inst.Steps[name]
		s, ok := def.index[name]
		if !ok || s.Kind != KindTask {
			continue
		}
		h := Holder{Instance: inst.ID, Step: name, Attempt: st.Attempt}
		running := st.Status == StepRunning && !inst.Status.Terminal()
		switch {
		case st.Slot != "" && !running:
			out = append(out, GateOp{Kind: OpRelease, Key: st.Slot, Holder: h, Limit: SlotLimit(def, name)})
		case running && st.Gate == GateSlot:
			out = append(out, GateOp{Kind: OpAcquire, Key: st.Slot, Holder: h, Limit: SlotLimit(def, name), Queue: true})
		case running && st.Gate == GateRate && !hasRateTimer(inst, name, st.Attempt):
			out = append(out, rateOp(s, st, h))
		}
	}
	return out
}

func acquireOp(def *Definition, inst *Instance) GateOp {
	return GateOp{Kind: OpAcquire, Key: inst.Slot, Holder: Holder{Instance: inst.ID}, Limit: def.Concurrency.Limit,
		Queue: def.Concurrency.OnLimit != OnLimitSkip}
}

func rateOp(s *Step, st *StepState, h Holder) GateOp {
	return GateOp{Kind: OpRate, Key: st.Rate, Holder: h, Limit: s.RateLimit.Limit, Per: s.RateLimit.Per.D()}
}

func hasRateTimer(inst *Instance, step string, attempt int) bool {
	_, ok := inst.Timers[rateTimer(step, attempt)]
	return ok
}

func rateTimer(step string, attempt int) string { return "rate." + step + "." + strconv.Itoa(attempt) }

// SlotLive reports whether an instance state (nil: the instance does not
// exist) still holds or waits for a slot as h: the repair loop drops a
// holder or waiter for which it is false.
func SlotLive(inst *Instance, h Holder) bool {
	_, ok := holding(inst)[h]
	return ok
}

// SlotWaiting reports whether an instance state waits for its grant as h
// (the record lists it as a holder, but the grant was not applied yet, or
// it waits in line).
func SlotWaiting(inst *Instance, h Holder) bool {
	if !SlotLive(inst, h) {
		return false
	}
	if h.Step == "" {
		return inst.Gate == GateSlot
	}
	return inst.Steps[h.Step].Gate == GateSlot
}

// enterInstanceGate puts a new instance under the workflow's concurrency
// limit: it waits for a slot before its start step. It reports false
// when the instance failed instead (its key could not be evaluated).
func (t *transition) enterInstanceGate() bool {
	c := t.def.Concurrency
	v, err := t.def.keyValue("", "concurrency key", c.Key, t.inst, t)
	if err != nil {
		if _, ok := err.(*ExprError); !ok {
			t.err = err
			return false
		}
		t.finish(StatusFailed, "", fmt.Sprintf("concurrency key: %v", err))
		return false
	}
	t.inst.Slot = SlotKey(t.def.Name, "", v)
	t.inst.Gate = GateSlot
	t.gates = append(t.gates, acquireOp(t.def, t.inst))
	return true
}

// stepGateKeys evaluates a task step's flow-control keys when it is
// activated; false: the step failed.
func (t *transition) stepGateKeys(s *Step, st *StepState) bool {
	if s.Concurrency != nil {
		v, err := t.def.keyValue(s.Name, "concurrency key", s.Concurrency.Key, t.inst, t)
		if err != nil {
			t.exprFailed(s, st, err)
			return false
		}
		st.Slot = SlotKey(t.def.Name, s.Name, v)
	}
	if s.RateLimit != nil {
		v, err := t.def.keyValue(s.Name, "rate_limit key", s.RateLimit.Key, t.inst, t)
		if err != nil {
			t.exprFailed(s, st, err)
			return false
		}
		st.Rate = RateKey(t.def.Name, s.Name, v)
	}
	return true
}

// grant applies the outcome of a gate to the instance or the attempt.
func (t *transition) grant(ev Event) {
	if ev.Step == "" {
		if t.inst.Gate != GateSlot || ev.Gate != GateSlot {
			t.ignored = "grant for an instance that does not wait for a slot"
			return
		}
		t.changed = true
		if ev.Denied {
			t.finish(StatusSkipped, "", fmt.Sprintf("skipped: the concurrency limit of %d was reached (on_limit: skip)", t.def.Concurrency.Limit))
			return
		}
		t.inst.Gate = ""
		if resume := t.inst.Resume; len(resume) > 0 {
			t.inst.Resume = nil
			for _, name := range resume {
				t.activate(name)
			}
			return
		}
		t.activate(t.def.Start)
		return
	}
	s, ok := t.def.index[ev.Step]
	st := t.inst.Steps[ev.Step]
	if !ok || st == nil || s.Kind != KindTask || st.Status != StepRunning || st.Attempt != ev.Attempt || st.Gate != ev.Gate {
		t.ignored = fmt.Sprintf("stale %s grant for step %q attempt %d", ev.Gate, ev.Step, ev.Attempt)
		return
	}
	switch {
	case ev.Gate == GateRate && ev.Denied:
		if hasRateTimer(t.inst, s.Name, st.Attempt) {
			t.ignored = "rate denial: a retry timer is pending"
			return
		}
		t.changed = true
		t.setTimer(rateTimer(s.Name, st.Attempt), ev.GateAt)
	case ev.Denied:
		t.ignored = "denied slot for a step (steps always queue)"
	case ev.Gate == GatePaused:
		t.releasePaused(s, st)
	case t.paused:
		// Granted while the workflow is paused: the attempt keeps its
		// slot (if any) and waits for the resume; a rate start is given
		// up and taken again then, so the limit is kept on real starts.
		t.changed = true
		held := ""
		if st.Slot != "" {
			held = GateSlot
		}
		t.hold(st, held)
	default:
		t.changed = true
		t.passGate(s, st)
		if ev.Gate == GateRate && !ev.GateAt.IsZero() && st.Gate == "" {
			// The attempt started when it took its start from the rate
			// record: the limit is kept on these times.
			st.AttemptStarted = ev.GateAt
		}
	}
}

// passGate moves an attempt past the gate it was granted: from the slot
// to the rate limit, if any, or to its task.
func (t *transition) passGate(s *Step, st *StepState) {
	if st.Gate == GateSlot && st.Rate != "" {
		st.Gate = GateRate
		t.gates = append(t.gates, rateOp(s, st, Holder{Instance: t.inst.ID, Step: s.Name, Attempt: st.Attempt}))
		return
	}
	st.Gate = ""
	t.publishAttempt(s, st)
}

// UsesSlots reports whether the definition has a concurrency limit, on
// the workflow or on a step.
func (d *Definition) UsesSlots() bool {
	if d.Concurrency != nil {
		return true
	}
	for i := range d.Steps {
		if d.Steps[i].Concurrency != nil {
			return true
		}
	}
	return false
}
