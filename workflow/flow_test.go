package workflow_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

func TestFlowControlValidation(t *testing.T) {
	t.Parallel()
	base := func(wf, step string) string {
		return fmt.Sprintf(`
name: w
version: 1
%s
steps:
  - name: a
    kind: task
    task: t
%s
`, wf, step)
	}
	cases := []struct {
		name, src, want string
	}{
		{"workflow limit 0", base("concurrency: {key: input.c, limit: 0}", ""), "concurrency.limit must be between 1 and 10000, got 0"},
		{"step limit negative", base("", "    concurrency: {key: input.c, limit: -1}"), `step "a": concurrency.limit must be between 1`},
		{"rate limit 0", base("", "    rate_limit: {limit: 0, per: 1s}"), "rate_limit.limit must be between 1"},
		{"rate per missing", base("", "    rate_limit: {limit: 5}"), "rate_limit.per must be a positive duration"},
		{"key over steps", base("", "    concurrency: {key: 'steps.a.output', limit: 1}"), "must be an expression over input only"},
		{"constant key", base("concurrency: {key: '\"x\"', limit: 1}", ""), "must be an expression over input only"},
		{"unknown variable", base("concurrency: {key: 'foo.bar', limit: 1}", ""), `unknown variable "foo"`},
		{"bad on_limit", base("concurrency: {limit: 1, on_limit: drop}", ""), "concurrency.on_limit must be queue (default) or skip"},
		{"skip on a step", base("", "    concurrency: {limit: 1, on_limit: skip}"), "on_limit is only allowed on a workflow's concurrency"},
		{"concurrency on a sleep step", `
name: w
version: 1
steps:
  - {name: a, kind: sleep, duration: 1s, concurrency: {limit: 1}}
`, "concurrency is not allowed on a sleep step"},
		{"workflow step without workflow", `
name: w
version: 1
steps:
  - {name: a, kind: workflow}
`, "child workflow is empty"},
		{"workflow step with items", `
name: w
version: 1
steps:
  - {name: a, kind: workflow, workflow: c, items: input.x}
`, "items is not allowed on a workflow step"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := workflow.Parse("w.yaml", []byte(c.src))
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
		})
	}
	ok := base("concurrency: {key: input.customerId, limit: 1, on_limit: skip}",
		"    concurrency: {key: 'input.account + \"-\" + input.region', limit: 5}\n    rate_limit: {key: input.account, limit: 10, per: 1s}")
	def, err := workflow.Parse("w.yaml", []byte(ok))
	require.NoError(t, err)
	require.True(t, def.UsesSlots())
}

// TestSlotRecordProperties runs random sequences of acquires, releases
// and reconciliations and checks after every one: never more holders
// than the limit, nobody listed twice, waiters promoted in arrival order
// whenever a slot is free, and every op idempotent.
func TestSlotRecordProperties(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 300; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		limit := 1 + r.IntN(3)
		hs := make([]workflow.Holder, 2+r.IntN(8))
		for i := range hs {
			hs[i] = workflow.Holder{Instance: fmt.Sprintf("i%d", i)}
			if r.IntN(2) == 0 {
				hs[i].Step, hs[i].Attempt = "s", 1+r.IntN(2)
			}
		}
		var rec workflow.SlotRecord
		var arrivals []workflow.Holder // order of first arrival among waiters
		for step := 0; step < 60; step++ {
			h := hs[r.IntN(len(hs))]
			before := rec
			switch r.IntN(3) {
			case 0:
				queue := r.IntN(4) != 0
				next, granted, changed, promoted := rec.Acquire(h, limit, queue)
				again, granted2, changed2, _ := next.Acquire(h, limit, queue)
				require.Equal(t, next, again, "seed %d: acquire is idempotent", seed)
				require.False(t, changed2)
				require.Equal(t, granted, granted2)
				require.Equal(t, granted, contains(next.Holders, h))
				require.NotContains(t, promoted, h)
				if !queue && !granted && !contains(before.Waiters, h) {
					require.False(t, changed, "seed %d: a denied skip changes nothing: %+v -> %+v", seed, before, next)
					require.False(t, contains(next.Waiters, h))
				}
				if !contains(before.Holders, h) && !contains(before.Waiters, h) && contains(next.Waiters, h) {
					arrivals = append(arrivals, h)
				}
				rec = next
			case 1:
				next, _, _ := rec.Release(h, limit)
				again, changed2, _ := next.Release(h, limit)
				require.Equal(t, next, again, "seed %d: release is idempotent", seed)
				require.False(t, changed2)
				require.False(t, contains(next.Holders, h) || contains(next.Waiters, h))
				rec = next
			case 2:
				dead := hs[r.IntN(len(hs))]
				next, _, _ := rec.Reconcile(func(x workflow.Holder) bool { return x != dead }, limit)
				require.False(t, contains(next.Holders, dead) || contains(next.Waiters, dead))
				rec = next
			}
			require.LessOrEqual(t, len(rec.Holders), limit, "seed %d", seed)
			if len(rec.Holders) < limit {
				require.Empty(t, rec.Waiters, "seed %d: a free slot with waiters", seed)
			}
			seen := map[workflow.Holder]bool{}
			for _, x := range append(append([]workflow.Holder{}, rec.Holders...), rec.Waiters...) {
				require.False(t, seen[x], "seed %d: %v listed twice", seed, x)
				seen[x] = true
			}
			// Waiters keep their arrival order.
			pos := -1
			for _, w := range rec.Waiters {
				i := indexOfHolder(arrivals, w)
				require.Greater(t, i, pos, "seed %d: waiters out of arrival order", seed)
				pos = i
			}
		}
	}
}

func contains(list []workflow.Holder, h workflow.Holder) bool { return indexOfHolder(list, h) >= 0 }

func indexOfHolder(list []workflow.Holder, h workflow.Holder) int {
	for i := len(list) - 1; i >= 0; i-- { // the latest arrival of h
		if list[i] == h {
			return i
		}
	}
	return -1
}

// TestRateRecordNeverExceedsLimit takes starts at random times and checks
// that no window of Per ever holds more than Limit of them, that a
// denied holder is told a retry time at which it can take one, and that
// taking again within the window is idempotent.
func TestRateRecordNeverExceedsLimit(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 200; seed++ {
		r := rand.New(rand.NewPCG(seed, 11))
		limit := 1 + r.IntN(5)
		per := time.Duration(1+r.IntN(3)) * time.Second
		now := t0
		var rec workflow.RateRecord
		var starts []time.Time
		for i := 0; i < 100; i++ {
			now = now.Add(time.Duration(r.IntN(600)) * time.Millisecond)
			h := workflow.Holder{Instance: fmt.Sprintf("i%d", r.IntN(20)), Step: "s", Attempt: 1}
			next, granted, _, retry := rec.Take(h, limit, per, now)
			if granted {
				again, g2, _, _ := next.Take(h, limit, per, now)
				require.True(t, g2)
				require.Equal(t, next, again)
				took := len(next.Starts) > 0 && next.Starts[len(next.Starts)-1].Holder == h && next.Starts[len(next.Starts)-1].At.Equal(now)
				if took && !containsStart(rec, h, now, per) {
					starts = append(starts, now)
					// Granted again later in the window: the first start's
					// time, not the time of asking.
					_, g3, _, at3 := next.Take(h, limit, per, now.Add(per/2))
					require.True(t, g3)
					require.True(t, at3.Equal(now), "seed %d: a start granted again reports its first time", seed)
				}
			} else {
				require.True(t, retry.After(now), "seed %d: retry after now", seed)
				_, g, _, _ := next.Take(workflow.Holder{Instance: "fresh"}, limit, per, retry)
				require.True(t, g, "seed %d: a start is free at the retry time", seed)
			}
			rec = next
		}
		for i := 0; i+limit < len(starts); i++ {
			require.GreaterOrEqual(t, starts[i+limit].Sub(starts[i]), per, "seed %d: %d starts within %s", seed, limit+1, per)
		}
	}
}

func containsStart(r workflow.RateRecord, h workflow.Holder, now time.Time, per time.Duration) bool {
	for _, s := range r.Starts {
		if s.Holder == h && s.At.After(now.Add(-per)) {
			return true
		}
	}
	return false
}

const simDef = `
name: sim
version: 1
concurrency: {key: input.k, limit: %d}
steps:
  - {name: a, kind: task, task: t, next: b, retry: {max_attempts: 2, initial_interval: 1ms}}
  - {name: b, kind: task, task: t, concurrency: {key: input.k, limit: 1}}
`

// flowSim drives many instances of simDef through Apply with a model of
// the slot records and the message layer that reorders everything, loses
// what a crash after a CAS loses, and recovers only the way the
// dispatcher does: republishing what a state owes (Outstanding) and
// reconciling the slot records with the states (SlotLive).
type flowSim struct {
	t     *testing.T
	r     *rand.Rand
	def   *workflow.Definition
	data  memData
	insts map[string]*workflow.Instance
	slots map[string]workflow.SlotRecord
	queue []any // workflow.OutEvent, workflow.GateOp, workflow.Task
	now   time.Time
	limit int
	loss  int // percent of post-CAS work lost
	steps int

	// Pausing (TestPauseUnderReorderingAndCrashes): pauses > 0 turns the
	// workflow paused and resumed at random, up to pauses times; stale is
	// the percent of Applies that see the previous pause state.
	pauses, stale  int
	paused, before bool
	resumes        int
	tasks          map[string]int // tasks decided by Apply, per attempt
}

func (s *flowSim) push(items ...any) { s.queue = append(s.queue, items...) }

func (s *flowSim) checkLimits() {
	s.t.Helper()
	run := map[string]int{}
	step := map[string]int{}
	for _, in := range s.insts {
		if in.Slot != "" && in.Gate == "" && !in.Status.Terminal() {
			run[in.Slot]++
			require.LessOrEqual(s.t, run[in.Slot], s.limit, "instances under slot %s", in.Slot)
		}
		if st := in.Steps["b"]; st != nil && st.Status == workflow.StepRunning && st.Gate == "" && !in.Status.Terminal() {
			step[st.Slot]++
			require.LessOrEqual(s.t, step[st.Slot], 1, "attempts of step b under slot %s", st.Slot)
		}
	}
}

func (s *flowSim) apply(ev workflow.Event) {
	s.t.Helper()
	s.now = s.now.Add(time.Millisecond)
	ev.Paused = s.paused
	if s.stale > 0 && s.r.IntN(100) < s.stale {
		ev.Paused = s.before // a dispatcher whose watch is behind
	}
	dec, err := workflow.Apply(s.def, s.insts[ev.Instance], ev, s.now, s.data)
	require.NoError(s.t, err)
	if !dec.Changed {
		return
	}
	if s.tasks != nil {
		for _, t := range dec.Tasks {
			require.False(s.t, ev.Paused, "task %s/%s/%d decided while the workflow is paused", t.Instance, t.Step, t.Attempt)
			k := fmt.Sprintf("%s/%s/%d", t.Instance, t.Step, t.Attempt)
			s.tasks[k]++
			require.Equal(s.t, 1, s.tasks[k], "task %s decided twice", k)
		}
	}
	for _, w := range dec.Writes {
		s.data[w.Key] = w.Value
	}
	s.insts[ev.Instance] = dec.Instance // the CAS
	s.checkLimits()
	if s.r.IntN(100) < s.loss {
		return // the process died after the CAS: nothing published
	}
	for _, t := range dec.Tasks {
		s.push(t)
	}
	for _, e := range dec.Events {
		s.push(e)
	}
	for _, g := range dec.Gates {
		s.push(g)
	}
	for _, tm := range dec.Timers {
		s.push(workflow.OutEvent{Event: workflow.Event{Kind: workflow.EventTimer, Instance: tm.Instance, Timer: tm.ID}})
	}
}

func (s *flowSim) gate(op workflow.GateOp) {
	rec := s.slots[op.Key]
	var grants []workflow.Holder
	switch op.Kind {
	case workflow.OpAcquire:
		next, granted, _, promoted := rec.Acquire(op.Holder, op.Limit, op.Queue)
		rec = next
		if granted {
			grants = append(grants, op.Holder)
		}
		grants = append(grants, promoted...)
	case workflow.OpRelease:
		next, _, promoted := rec.Release(op.Holder, op.Limit)
		rec, grants = next, promoted
	}
	s.slots[op.Key] = rec // the slot CAS
	if s.r.IntN(100) < s.loss {
		return // died between the slot CAS and the grants
	}
	for _, h := range grants {
		s.push(workflow.GrantEvent(workflow.GateSlot, h, false, time.Time{}))
	}
}

// repair is what redeliveries, the gate repairs and the slot
// reconciliation do once nothing else moves.
func (s *flowSim) repair() {
	s.releasePaused("repair")
	for _, id := range sortedIDs(s.insts) {
		out := workflow.Outstanding(s.def, s.insts[id])
		for _, g := range out.Gates {
			s.push(g)
		}
		if !s.insts[id].Status.Terminal() {
			for _, t := range out.Tasks {
				s.push(t)
			}
			for _, tm := range out.Timers {
				s.push(workflow.OutEvent{Event: workflow.Event{Kind: workflow.EventTimer, Instance: tm.Instance, Timer: tm.ID}})
			}
		}
	}
	for _, key := range sortedIDs(s.slots) {
		rec := s.slots[key]
		limit := s.limit
		if strings.Contains(key, ".b.") {
			limit = 1
		}
		next, _, _ := rec.Reconcile(func(h workflow.Holder) bool { return workflow.SlotLive(s.insts[h.Instance], h) }, limit)
		s.slots[key] = next
		for _, h := range next.Holders {
			if workflow.SlotWaiting(s.insts[h.Instance], h) {
				s.push(workflow.GrantEvent(workflow.GateSlot, h, false, time.Time{}))
			}
		}
	}
}

// togglePause pauses or resumes the workflow; a resume sends the
// releases of every held attempt, as the dispatchers' sweep does.
func (s *flowSim) togglePause() {
	s.before, s.paused = s.paused, !s.paused
	if !s.paused {
		s.resumes++
		s.releasePaused(fmt.Sprintf("resume-%d", s.resumes))
	}
}

// releasePaused is the release of the held attempts of every instance,
// sent while the workflow is not paused (the sweep on resume, and the
// repair loop).
func (s *flowSim) releasePaused(round string) {
	if s.paused {
		return
	}
	for _, id := range sortedIDs(s.insts) {
		for _, h := range workflow.PausedAttempts(s.insts[id]) {
			if s.r.IntN(100) >= s.loss {
				s.push(workflow.PauseRelease(h, round))
			}
		}
	}
}

func sortedIDs[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func (s *flowSim) run(n, keys int, cancels int) {
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("sim-%d", i)
		s.data[workflow.InputKey(id)] = map[string]any{"k": fmt.Sprintf("k%d", i%keys)}
		s.push(workflow.OutEvent{Event: workflow.Event{Kind: workflow.EventStart, Instance: id, Workflow: "sim", Version: 1, InputRef: workflow.InputKey(id)}})
	}
	for i := 0; i < cancels; i++ {
		s.push(workflow.OutEvent{Event: workflow.Event{Kind: workflow.EventCancel, Instance: fmt.Sprintf("sim-%d", s.r.IntN(n))}})
	}
	for rounds := 0; ; rounds++ {
		require.Less(s.t, rounds, 200, "no progress")
		if s.paused && rounds > 0 {
			s.togglePause() // stuck while paused: resume, so it can end
		}
		for len(s.queue) > 0 {
			s.steps++
			if s.pauses > 0 && s.r.IntN(20) == 0 {
				s.pauses--
				s.togglePause()
			} else if s.before != s.paused && s.r.IntN(10) == 0 {
				s.before = s.paused // the slow watch caught up
			}
			i := s.r.IntN(len(s.queue)) // any order
			item := s.queue[i]
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			switch x := item.(type) {
			case workflow.OutEvent:
				if x.Event.Kind != workflow.EventStart && s.insts[x.Event.Instance] == nil {
					s.push(x) // not started yet: comes back later
					if len(s.queue) == 1 {
						s.queue = nil // only orphans left (a start was lost)
					}
					continue
				}
				s.apply(x.Event)
			case workflow.GateOp:
				s.gate(x)
			case workflow.Task:
				res := workflow.Event{Kind: workflow.EventResult, Instance: x.Instance, Step: x.Step, Attempt: x.Attempt, OutputRef: "out"}
				if s.r.IntN(10) == 0 {
					res.Error = "flaky"
				}
				s.apply(res)
			}
		}
		done := 0
		for _, in := range s.insts {
			if in.Status.Terminal() {
				done++
			}
		}
		if done == n {
			break
		}
		s.repair()
	}
	s.repair() // a last reconciliation clears what lost releases left
	for k, rec := range s.slots {
		require.True(s.t, rec.Empty(), "slot %s leaked: %+v", k, rec)
	}
}

// TestSlotsUnderReorderingAndCrashes: the limits hold in every state the
// model commits, with messages in any order and work lost after CAS
// writes; every instance ends; no slot is left taken.
func TestSlotsUnderReorderingAndCrashes(t *testing.T) {
	t.Parallel()
	for seed := uint64(0); seed < 40; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 3))
			limit := 1 + r.IntN(3)
			s := &flowSim{t: t, r: r, def: mustParse(t, fmt.Sprintf(simDef, limit)), data: memData{},
				insts: map[string]*workflow.Instance{}, slots: map[string]workflow.SlotRecord{},
				now: t0, limit: limit, loss: []int{0, 5, 20}[seed%3]}
			s.data["out"] = "ok"
			s.run(30, 1+r.IntN(4), r.IntN(5))
			for _, in := range s.insts {
				require.Contains(t, []workflow.Status{workflow.StatusCompleted, workflow.StatusCancelled, workflow.StatusFailed}, in.Status)
			}
		})
	}
}

// TestPauseUnderReorderingAndCrashes: the workflow of the simulation is
// paused and resumed at random while its messages arrive in any order,
// some Applies see the pause state from before the last change (a
// dispatcher whose watch is behind), and work is lost after CAS writes.
// No Apply that sees the workflow paused publishes a task; no attempt's
// task is decided twice; and every instance still ends, each attempt held
// by a pause released once it is resumed.
func TestPauseUnderReorderingAndCrashes(t *testing.T) {
	t.Parallel()
	held := 0
	for seed := uint64(0); seed < 60; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 21))
			limit := 1 + r.IntN(3)
			s := &flowSim{t: t, r: r, def: mustParse(t, fmt.Sprintf(simDef, limit)), data: memData{},
				insts: map[string]*workflow.Instance{}, slots: map[string]workflow.SlotRecord{},
				now: t0, limit: limit, loss: []int{0, 5, 20}[seed%3],
				pauses: 5 + r.IntN(20), stale: []int{0, 10, 30}[seed%3], tasks: map[string]int{}}
			s.data["out"] = "ok"
			s.paused = seed%2 == 0 // half start paused: every trigger is held
			s.before = s.paused
			if s.paused {
				held++
			}
			s.run(30, 1+r.IntN(4), r.IntN(5))
			for _, in := range s.insts {
				require.Contains(t, []workflow.Status{workflow.StatusCompleted, workflow.StatusCancelled, workflow.StatusFailed}, in.Status)
				require.Empty(t, workflow.PausedAttempts(in))
			}
		})
	}
	require.Positive(t, held)
}

const childStepDef = `
name: mom
version: 1
steps:
  - {name: call, kind: workflow, workflow: kid, input: '{"n": input.n}', next: after, on_failure: recover}
  - {name: after, kind: task, task: t}
  - {name: recover, kind: task, task: t}
`

func TestWorkflowStepTransitions(t *testing.T) {
	t.Parallel()
	h := setup(t, childStepDef, map[string]any{"n": int64(2)})
	dec := h.apply(workflow.Event{Kind: workflow.EventStart, Instance: h.id, InputRef: workflow.InputKey(h.id)})
	require.Len(t, dec.Children, 1)
	c := dec.Children[0]
	require.Equal(t, workflow.ParentRef{ID: h.id, Step: "call", Index: 1}, c.Parent)
	require.Equal(t, "kid", c.Workflow)
	require.Equal(t, []workflow.Write{{Key: c.InputRef, Value: map[string]any{"n": int64(2)}}}, dec.Writes)
	// Outstanding republishes the child's pointer while the step runs.
	require.Equal(t, dec.Children, workflow.Outstanding(h.def, h.inst).Children)

	// A notice for another index (an older attempt) changes nothing.
	stale := h.apply(workflow.Event{Kind: workflow.EventChildDone, Instance: h.id, Step: "call", Index: 0, ChildStatus: workflow.StatusCompleted})
	require.False(t, stale.Changed)

	// Cancelling the parent cancels the child.
	cancelled, err := workflow.Apply(h.def, h.inst, workflow.Event{Kind: workflow.EventCancel, Instance: h.id}, h.now, h.data)
	require.NoError(t, err)
	child := workflow.ChildInstanceID("kid", h.id, "call", 1)
	require.Len(t, cancelled.Events, 1)
	require.Equal(t, workflow.EventCancel, cancelled.Events[0].Event.Kind)
	require.Equal(t, child, cancelled.Events[0].Event.Instance)
	require.Equal(t, cancelled.Events, workflow.Outstanding(h.def, cancelled.Instance).Events, "owed by the ended parent")

	// The child's output becomes the step's.
	h.data["kid.out"] = map[string]any{"twice": int64(4)}
	done := h.apply(workflow.Event{Kind: workflow.EventChildDone, Instance: h.id, Step: "call", Index: 1, ChildStatus: workflow.StatusCompleted, OutputRef: "kid.out"})
	require.True(t, done.Changed)
	require.Equal(t, "kid.out", h.inst.Steps["call"].OutputRef)
	require.Len(t, done.Tasks, 1)
	require.Equal(t, "after", done.Tasks[0].Step)
	again := h.apply(workflow.Event{Kind: workflow.EventChildDone, Instance: h.id, Step: "call", Index: 1, ChildStatus: workflow.StatusCompleted, OutputRef: "kid.out"})
	require.False(t, again.Changed, "a second notice changes nothing")

	// A failed child fails the step; on_failure runs.
	f := setup(t, childStepDef, map[string]any{"n": int64(2)})
	f.apply(workflow.Event{Kind: workflow.EventStart, Instance: f.id, InputRef: workflow.InputKey(f.id)})
	failed := f.apply(workflow.Event{Kind: workflow.EventChildDone, Instance: f.id, Step: "call", Index: 1, ChildStatus: workflow.StatusFailed, Error: "boom"})
	require.Equal(t, workflow.StepFailed, f.inst.Steps["call"].Status)
	require.Contains(t, f.inst.Steps["call"].Error, "boom")
	require.Equal(t, "recover", failed.Tasks[0].Step)
}

func TestExplainSaysWhatAGateWaitsFor(t *testing.T) {
	t.Parallel()
	h := setup(t, fmt.Sprintf(simDef, 1), map[string]any{"k": "acme"})
	h.apply(workflow.Event{Kind: workflow.EventStart, Instance: h.id, InputRef: workflow.InputKey(h.id)})
	other := workflow.Holder{Instance: "sim-other"}
	x := workflow.Explain(h.def, h.inst, workflow.ExplainFacts{Now: t0.Add(time.Second), Policy: workflow.RepairPolicy{StaleGate: time.Minute},
		Slots: map[string]workflow.SlotRecord{h.inst.Slot: {Holders: []workflow.Holder{other}, Waiters: []workflow.Holder{{Instance: h.id}}}}})
	require.Len(t, x.Waits, 1)
	w := x.Waits[0]
	require.Equal(t, workflow.WaitSlot, w.For)
	require.Equal(t, 1, w.Position)
	require.Equal(t, []string{"sim-other"}, w.Holders)
	require.Contains(t, w.Detail, "waiting for a concurrency slot of workflow sim")
	require.Contains(t, x.Summary, "waits for a concurrency slot")

	rated := setup(t, `
name: r
version: 1
steps:
  - {name: call, kind: task, task: t, rate_limit: {limit: 2, per: 1s}}
`, map[string]any{})
	rated.apply(workflow.Event{Kind: workflow.EventStart, Instance: rated.id, InputRef: workflow.InputKey(rated.id)})
	rated.apply(workflow.GrantEvent(workflow.GateRate, workflow.Holder{Instance: rated.id, Step: "call", Attempt: 1}, true, t0.Add(2*time.Second)).Event)
	x = workflow.Explain(rated.def, rated.inst, workflow.ExplainFacts{Now: t0})
	require.Equal(t, workflow.WaitRate, x.Waits[0].For)
	require.Contains(t, x.Waits[0].Detail, "waits for its rate limit (at most 2 starts per 1s per key value)")
	require.Contains(t, x.Waits[0].Detail, "tries again at")
}

// TestRetryWaitsForTheSlotAgain: an operator's retry of an instance under
// a workflow concurrency limit takes a slot again before it resumes (it
// gave its slot back when it ended), then resumes the failed step, not
// the start step; a retried workflow step starts a new child.
func TestRetryWaitsForTheSlotAgain(t *testing.T) {
	t.Parallel()
	h := setup(t, fmt.Sprintf(simDef, 1), map[string]any{"k": "acme"})
	h.apply(workflow.Event{Kind: workflow.EventStart, Instance: h.id, InputRef: workflow.InputKey(h.id)})
	h.apply(workflow.GrantEvent(workflow.GateSlot, workflow.Holder{Instance: h.id}, false, time.Time{}).Event)
	h.data["out"] = "ok"
	h.apply(workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, OutputRef: "out"})
	h.apply(workflow.GrantEvent(workflow.GateSlot, workflow.Holder{Instance: h.id, Step: "b", Attempt: 1}, false, time.Time{}).Event)
	failed := h.apply(workflow.Event{Kind: workflow.EventResult, Step: "b", Attempt: 1, Error: "no", Permanent: true})
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
	require.Len(t, failed.Gates, 2, "the instance's and the attempt's slots are released")

	retried := h.apply(workflow.Event{Kind: workflow.EventRetry, Attempt: 0})
	require.Equal(t, workflow.StatusRunning, h.inst.Status)
	require.Equal(t, workflow.GateSlot, h.inst.Gate)
	require.Empty(t, retried.Tasks, "nothing runs before the slot is granted")
	require.Equal(t, []workflow.GateOp{{Kind: workflow.OpAcquire, Key: h.inst.Slot, Holder: workflow.Holder{Instance: h.id}, Limit: 1, Queue: true}}, retried.Gates)
	granted := h.apply(workflow.GrantEvent(workflow.GateSlot, workflow.Holder{Instance: h.id}, false, time.Time{}).Event)
	require.Empty(t, h.inst.Resume)
	require.Equal(t, workflow.StepCompleted, h.inst.Steps["a"].Status, "step a is not run again")
	require.Equal(t, 2, h.inst.Steps["b"].Attempt)
	require.Equal(t, workflow.OpAcquire, granted.Gates[0].Kind, "step b's attempt 2 waits for its own slot")

	m := setup(t, childStepDef, map[string]any{"n": int64(2)})
	m.apply(workflow.Event{Kind: workflow.EventStart, Instance: m.id, InputRef: workflow.InputKey(m.id)})
	m.apply(workflow.Event{Kind: workflow.EventCancel})
	again := m.apply(workflow.Event{Kind: workflow.EventRetry, Attempt: 0})
	require.Len(t, again.Children, 1)
	require.Equal(t, 2, again.Children[0].Parent.Index, "a new child: (parent, step, attempt 2)")
}
