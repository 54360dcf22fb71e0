package dispatcher_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

const limitedDef = `
name: limited
version: 1
concurrency: {key: input.customer, limit: 1}
steps:
  - {name: work, kind: task, task: slow}
`

// commitLog records every instance state the dispatchers commit, with its
// revision: the KV stream sequence, one order over all instances.
type commitLog struct {
	mu      sync.Mutex
	commits []commit
}

type commit struct {
	inst *workflow.Instance
	rev  uint64
}

func (l *commitLog) hook(inst *workflow.Instance, rev uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.commits = append(l.commits, commit{inst.Clone(), rev})
}

// recording is a backend that records every instance write that
// committed in log.
func recording(b dispatcher.Backend, log *commitLog) *faulty {
	return &faulty{Backend: b, putInstance: func(ctx context.Context, inner dispatcher.Backend, in *workflow.Instance, rev uint64, expires bool) (uint64, error) {
		n, err := inner.PutInstance(ctx, in, rev, expires)
		if err == nil {
			log.hook(in, n)
		}
		return n, err
	}}
}

// slotLoser is a backend that loses the slot ops for which lose returns
// true: the op is not carried out and reports nothing (no grant), as when
// the process dies between the instance's CAS and the slot record's.
type slotLoser struct {
	*faulty
	lose func() bool
}

func (s *slotLoser) UpdateSlot(ctx context.Context, key string, fn func(workflow.SlotRecord) (workflow.SlotRecord, bool)) (workflow.SlotRecord, error) {
	if s.lose() {
		return workflow.SlotRecord{}, nil
	}
	return s.faulty.UpdateSlot(ctx, key, fn)
}

// runningUnderSlot reports whether a committed state runs under its
// workflow's concurrency slot: granted and not ended.
func runningUnderSlot(in *workflow.Instance) bool {
	return in.Slot != "" && in.Gate == "" && !in.Status.Terminal()
}

// maxRunningPerSlot replays the committed states in revision order and
// returns, per slot key, the most instances that ran under it at once,
// and the first revision at which more than limit did.
func (l *commitLog) maxRunningPerSlot(limit int) (peak map[string]int, violation string) {
	l.mu.Lock()
	cs := append([]commit(nil), l.commits...)
	l.mu.Unlock()
	sort.Slice(cs, func(i, j int) bool { return cs[i].rev < cs[j].rev })
	running := map[string]map[string]bool{} // slot -> instances
	peak = map[string]int{}
	for _, c := range cs {
		in := c.inst
		if in.Slot == "" {
			continue
		}
		set := running[in.Slot]
		if set == nil {
			set = map[string]bool{}
			running[in.Slot] = set
		}
		if runningUnderSlot(in) {
			set[in.ID] = true
		} else {
			delete(set, in.ID)
		}
		if len(set) > peak[in.Slot] {
			peak[in.Slot] = len(set)
		}
		if len(set) > limit && violation == "" {
			violation = fmt.Sprintf("revision %d: %d instances run under slot %s: %v", c.rev, len(set), in.Slot, set)
		}
	}
	return peak, violation
}

// keyedLedger tracks the handlers running per key, outside NATS.
type keyedLedger struct {
	mu      sync.Mutex
	running map[string]int
	peak    map[string]int
	runs    atomic.Int64
}

func newKeyedLedger() *keyedLedger {
	return &keyedLedger{running: map[string]int{}, peak: map[string]int{}}
}

func (l *keyedLedger) handler(field string, d time.Duration) worker.Handler {
	return func(ctx context.Context, t *worker.Task) (any, error) {
		in, err := t.Input()
		if err != nil {
			return nil, err
		}
		k := fmt.Sprint(in.(map[string]any)[field])
		l.mu.Lock()
		l.running[k]++
		if l.running[k] > l.peak[k] {
			l.peak[k] = l.running[k]
		}
		l.mu.Unlock()
		defer func() {
			l.mu.Lock()
			l.running[k]--
			l.mu.Unlock()
		}()
		l.runs.Add(1)
		select { // the work itself takes d
		case <-time.After(d):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return map[string]any{"done": k}, nil
	}
}

func (l *keyedLedger) maxPeak() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := 0
	for _, p := range l.peak {
		m = max(m, p)
	}
	return m
}

func startLimited(t *testing.T, e *jftest.Env, n, keys int) []string {
	t.Helper()
	ids := make([]string, n)
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("i%d", i)
		ids[i] = workflow.InstanceID("limited", key)
		require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{
			Workflow: "limited", EventKey: key, Payload: []byte(fmt.Sprintf(`{"customer": "c%d"}`, i%keys)),
		}))
	}
	return ids
}

// waitAllTerminal polls until every instance ended and returns how many
// completed.
func waitAllTerminal(t *testing.T, e *jftest.Env, ids []string, timeout time.Duration) map[workflow.Status]int {
	t.Helper()
	var counts map[workflow.Status]int
	jftest.Eventually(t, timeout, func() bool {
		counts = map[workflow.Status]int{}
		for _, id := range ids {
			in := e.Instance(id)
			if in == nil || !in.Status.Terminal() {
				return false
			}
			counts[in.Status]++
		}
		return true
	}, "not every instance ended")
	return counts
}

// requireNoSlotRecords asserts that every slot was released: no record
// holds a holder or a waiter.
func requireNoSlotRecords(t *testing.T, e *jftest.Env, timeout time.Duration) {
	t.Helper()
	jftest.Eventually(t, timeout, func() bool {
		keys, err := e.Client.SlotKeys(context.Background())
		return err == nil && len(keys) == 0
	}, "slot records left behind")
}

func TestConcurrencyLimitHoldsInEveryCommittedState(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(limitedDef)
	log := &commitLog{}
	e.Dispatcher(recording(e.Client, log), dispatcher.Config{})
	l := newKeyedLedger()
	e.Worker(nil, worker.Config{Concurrency: 64}, map[string]worker.Handler{"slow": l.handler("customer", 20*time.Millisecond)})
	ids := startLimited(t, e, 200, 10)

	// Sampled while it runs: every slot record read (one consistent
	// value each) lists at most one holder. (Instances read one by one
	// are no snapshot: the commit log below is the exact check.)
	sampled := 0
	jftest.Eventually(t, 120*time.Second, func() bool {
		keys, err := e.Client.SlotKeys(context.Background())
		require.NoError(t, err)
		for _, k := range keys {
			rec, err := e.Client.GetSlot(context.Background(), k)
			require.NoError(t, err)
			require.LessOrEqual(t, len(rec.Holders), 1, "sampled: slot %s has holders %v", k, rec.Holders)
		}
		sampled++
		done := 0
		for _, id := range ids {
			if in := e.Instance(id); in != nil && in.Status.Terminal() {
				done++
			}
		}
		return done == len(ids)
	}, "not every instance ended")

	counts := waitAllTerminal(t, e, ids, time.Second)
	require.Equal(t, 200, counts[workflow.StatusCompleted], "%v", counts)
	peak, violation := log.maxRunningPerSlot(1)
	require.Empty(t, violation)
	require.Len(t, peak, 10, "ten slots")
	require.Equal(t, 1, l.maxPeak(), "handlers running at once for one key")
	require.EqualValues(t, 200, l.runs.Load())
	requireNoSlotRecords(t, e, 10*time.Second)
	t.Logf("%d commits checked, %d samples", len(log.commits), sampled)
}

func TestConcurrencyLimitSurvivesDispatcherAndWorkerKills(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(limitedDef)
	log := &commitLog{}
	fast := dispatcher.Config{RepairInterval: 200 * time.Millisecond, StaleGate: 2 * time.Second, SlotRepairInterval: time.Second}

	// Dispatcher A loses its first 40 slot ops after the instance's
	// commit (an acquire, a release and its promotions never happen), as
	// when a process dies between the instance's CAS and the slot
	// record's; then it is stopped.
	var dropped atomic.Int64
	lossy := &slotLoser{faulty: recording(e.NewClient(), log), lose: func() bool { return dropped.Add(1) <= 40 }}
	_, runA := e.Dispatcher(lossy, fast)
	_, runB := e.Dispatcher(recording(e.NewClient(), log), fast)
	l := newKeyedLedger()
	_, runW := e.Worker(e.NewClient(), worker.Config{Concurrency: 32}, map[string]worker.Handler{"slow": l.handler("customer", 20*time.Millisecond)})
	ids := startLimited(t, e, 200, 10)

	completed := func() int {
		n := 0
		for _, id := range ids {
			if in := e.Instance(id); in != nil && in.Status.Terminal() {
				n++
			}
		}
		return n
	}
	jftest.Eventually(t, 60*time.Second, func() bool { return dropped.Load() >= 40 }, "dispatcher A dropped too little")
	require.NoError(t, runA.Stop()) // A is gone with what it dropped
	jftest.Eventually(t, 120*time.Second, func() bool { return completed() >= 60 }, "no progress after A stopped")
	require.NoError(t, runW.Stop())
	e.Worker(e.NewClient(), worker.Config{Concurrency: 32}, map[string]worker.Handler{"slow": l.handler("customer", 20*time.Millisecond)})
	jftest.Eventually(t, 120*time.Second, func() bool { return completed() >= 120 }, "no progress after the worker restarted")
	require.NoError(t, runB.Stop())
	e.Dispatcher(recording(e.NewClient(), log), fast)

	counts := waitAllTerminal(t, e, ids, 180*time.Second)
	require.Equal(t, 200, counts[workflow.StatusCompleted], "%v", counts)
	_, violation := log.maxRunningPerSlot(1)
	require.Empty(t, violation)
	requireNoSlotRecords(t, e, 30*time.Second)
}

const blockingLimitedDef = `
name: held
version: 1
concurrency: {key: input.k, limit: 1, on_limit: %s}
steps:
  - {name: work, kind: task, task: block}
`

// gateHandler blocks each task until its instance's key is let go.
type gateHandler struct {
	mu      sync.Mutex
	release map[string]chan struct{}
	started chan string
}

func newGateHandler() *gateHandler {
	return &gateHandler{release: map[string]chan struct{}{}, started: make(chan string, 100)}
}

func (g *gateHandler) ch(id string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	c, ok := g.release[id]
	if !ok {
		c = make(chan struct{})
		g.release[id] = c
	}
	return c
}

func (g *gateHandler) handle(ctx context.Context, t *worker.Task) (any, error) {
	g.started <- t.Instance // nextStarted: the test takes it
	select {
	case <-g.ch(t.Instance):
		return "ok", nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// nextStarted is the instance of the next task the gate handler started.
func nextStarted(t *testing.T, g *gateHandler) string {
	t.Helper()
	select {
	case id := <-g.started:
		return id
	case <-time.After(20 * time.Second):
		t.Fatal("no task started within 20s")
		return ""
	}
}

func cancel(t *testing.T, e *jftest.Env, id string) {
	t.Helper()
	require.NoError(t, e.Client.PublishEvent(context.Background(), workflow.Event{Kind: workflow.EventCancel, Instance: id, Reason: "test"}, "cancel/"+id))
}

func TestConcurrencySlotOfCancelledInstanceIsReleased(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(fmt.Sprintf(blockingLimitedDef, "queue"))
	// No repair loop: the release itself must free the slot.
	e.Dispatcher(nil, dispatcher.Config{RepairInterval: -1})
	g := newGateHandler()
	e.Worker(nil, worker.Config{Concurrency: 8}, map[string]worker.Handler{"block": g.handle})
	start := func(key string) string {
		require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "held", EventKey: key, Payload: []byte(`{"k": "same"}`)}))
		return workflow.InstanceID("held", key)
	}
	x := start("x")
	require.Equal(t, x, nextStarted(t, g))
	y := start("y")
	z := start("z")
	jftest.Eventually(t, 10*time.Second, func() bool {
		in := e.Instance(z)
		return in != nil && in.Gate == workflow.GateSlot
	}, "z does not wait")
	rec, err := e.Client.GetSlot(context.Background(), e.Instance(x).Slot)
	require.NoError(t, err)
	require.Equal(t, []workflow.Holder{{Instance: x}}, rec.Holders)

	cancel(t, e, z) // a waiter leaves the line
	require.Equal(t, workflow.StatusCancelled, e.WaitTerminal(z, 10*time.Second).Status)
	cancel(t, e, x) // the holder's slot goes to the next in line
	require.Equal(t, workflow.StatusCancelled, e.WaitTerminal(x, 10*time.Second).Status)
	close(g.ch(x)) // x's handler was never told; its result is stale
	require.Equal(t, y, nextStarted(t, g))
	close(g.ch(y))
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(y, 10*time.Second).Status)
	requireNoSlotRecords(t, e, 10*time.Second)
}

func TestConcurrencyLeakedSlotIsReconciled(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	def := e.Register(fmt.Sprintf(blockingLimitedDef, "queue"))
	d, _ := e.Dispatcher(nil, dispatcher.Config{RepairInterval: -1})
	g := newGateHandler()
	e.Worker(nil, worker.Config{Concurrency: 8}, map[string]worker.Handler{"block": g.handle})
	// A holder whose instance does not exist (its release was lost and
	// the instance has expired since) takes the only slot.
	key := workflow.SlotKey(def.Name, "", "same")
	_, err := e.Client.UpdateSlot(context.Background(), key, func(r workflow.SlotRecord) (workflow.SlotRecord, bool) {
		r.Holders = append(r.Holders, workflow.Holder{Instance: "held-gone"})
		return r, true
	})
	require.NoError(t, err)
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "held", EventKey: "w", Payload: []byte(`{"k": "same"}`)}))
	w := workflow.InstanceID("held", "w")
	jftest.Eventually(t, 10*time.Second, func() bool {
		rec, err := e.Client.GetSlot(context.Background(), key)
		return err == nil && len(rec.Waiters) == 1
	}, "w does not wait")
	dispatcher.ReconcileSlots(context.Background(), d)
	require.Equal(t, w, nextStarted(t, g))
	close(g.ch(w))
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(w, 10*time.Second).Status)
	requireNoSlotRecords(t, e, 10*time.Second)
}

func TestConcurrencyOnLimitSkip(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(fmt.Sprintf(blockingLimitedDef, "skip"))
	e.Dispatcher(nil, dispatcher.Config{})
	g := newGateHandler()
	e.Worker(nil, worker.Config{Concurrency: 8}, map[string]worker.Handler{"block": g.handle})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "held", EventKey: "a", Payload: []byte(`{"k": 1}`)}))
	a := workflow.InstanceID("held", "a")
	require.Equal(t, a, nextStarted(t, g))
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "held", EventKey: "b", Payload: []byte(`{"k": 1}`)}))
	b := e.WaitTerminal(workflow.InstanceID("held", "b"), 10*time.Second)
	require.Equal(t, workflow.StatusSkipped, b.Status)
	require.Contains(t, b.Error, "on_limit: skip")
	require.Empty(t, b.Steps, "a skipped instance runs no step")
	// Another key is not limited by this one.
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "held", EventKey: "c", Payload: []byte(`{"k": 2}`)}))
	c := workflow.InstanceID("held", "c")
	require.Equal(t, c, nextStarted(t, g))
	close(g.ch(a))
	close(g.ch(c))
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(a, 10*time.Second).Status)
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(c, 10*time.Second).Status)
	requireNoSlotRecords(t, e, 10*time.Second)
}

const ratedDef = `
name: rated
version: 1
steps:
  - {name: call, kind: task, task: api, rate_limit: {key: input.account, limit: 10, per: 1s}}
`

// attemptStarts are the start times of the attempts of a step, as
// committed: the first committed state in which each instance's attempt
// had passed its gates.
func (l *commitLog) attemptStarts(step string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]bool{}
	var out []time.Time
	for _, c := range l.commits {
		st := c.inst.Steps[step]
		if st == nil || st.Gate != "" || st.AttemptStarted.IsZero() {
			continue
		}
		k := fmt.Sprintf("%s/%d", c.inst.ID, st.Attempt)
		if !seen[k] {
			seen[k] = true
			out = append(out, st.AttemptStarted)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Before(out[j]) })
	return out
}

func TestRateLimitSpreadsStartsAndDropsNone(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(ratedDef)
	log := &commitLog{}
	e.Dispatcher(recording(e.Client, log), dispatcher.Config{})
	var mu sync.Mutex
	var handled []time.Time
	e.Worker(nil, worker.Config{Concurrency: 64}, map[string]worker.Handler{"api": func(_ context.Context, t *worker.Task) (any, error) {
		mu.Lock()
		handled = append(handled, time.Now())
		mu.Unlock()
		return "ok", nil
	}})
	var ids []string
	for i := 0; i < 100; i++ {
		key := fmt.Sprintf("r%d", i)
		ids = append(ids, workflow.InstanceID("rated", key))
		require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "rated", EventKey: key, Payload: []byte(`{"account": "acme"}`)}))
	}
	counts := waitAllTerminal(t, e, ids, 120*time.Second)
	require.Equal(t, 100, counts[workflow.StatusCompleted], "%v", counts)

	starts := log.attemptStarts("call")
	require.Len(t, starts, 100, "every attempt started once")
	// No window of 1 s holds more than 10 starts: any 11 consecutive
	// starts span at least 1 s.
	for i := 0; i+10 < len(starts); i++ {
		require.GreaterOrEqual(t, starts[i+10].Sub(starts[i]), time.Second,
			"starts %d..%d (%s .. %s) fall within one second", i, i+10, starts[i].Format(time.StampMilli), starts[i+10].Format(time.StampMilli))
	}
	require.GreaterOrEqual(t, starts[99].Sub(starts[0]), 9*time.Second, "100 starts at 10 per second")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, handled, 100)
	t.Logf("starts span %s; handlers ran over %s", starts[99].Sub(starts[0]), handled[len(handled)-1].Sub(handled[0]))
}

const kidDef = `
name: kid
version: 1
steps:
  - {name: do, kind: task, task: kidwork}
`

const momDef = `
name: mom
version: 1
steps:
  - name: call
    kind: workflow
    workflow: kid
    input: '{"n": input.n, "fail": input.fail, "block": input.block}'
    next: after
    on_failure: recover
  - {name: after, kind: task, task: echo, input: 'steps.call.output'}
  - {name: recover, kind: task, task: echo, input: '{"recovered": steps.call.error}'}
`

// kidWork doubles n, fails permanently on fail, and on block waits until
// the test lets its instance go (g).
func kidWork(g *gateHandler) worker.Handler {
	return func(ctx context.Context, t *worker.Task) (any, error) {
		in, err := t.Input()
		if err != nil {
			return nil, err
		}
		m := in.(map[string]any)
		if m["block"] == true {
			if _, err := g.handle(ctx, t); err != nil {
				return nil, err
			}
		}
		if m["fail"] == true {
			return nil, worker.Permanent(fmt.Errorf("kid says no"))
		}
		return map[string]any{"twice": m["n"].(int64) * 2}, nil
	}
}

func setupChildren(t *testing.T, cfg dispatcher.Config, wrap func(dispatcher.Backend) dispatcher.Backend) (*jftest.Env, *gateHandler, *jftest.Running) {
	e := jftest.Start(t, jetstream.Config{})
	e.Register(kidDef)
	e.Register(momDef)
	var b dispatcher.Backend = e.Client
	if wrap != nil {
		b = wrap(b)
	}
	_, run := e.Dispatcher(b, cfg)
	g := newGateHandler()
	e.Worker(nil, worker.Config{Concurrency: 8}, map[string]worker.Handler{"kidwork": kidWork(g), "echo": echo})
	return e, g, run
}

func startMom(t *testing.T, e *jftest.Env, key, payload string) (parent, child string) {
	t.Helper()
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "mom", EventKey: key, Payload: []byte(payload)}))
	parent = workflow.InstanceID("mom", key)
	return parent, workflow.ChildInstanceID("kid", parent, "call", 1)
}

func TestChildWorkflowCompletesWithItsOutput(t *testing.T) {
	t.Parallel()
	e, _, _ := setupChildren(t, dispatcher.Config{}, nil)
	parent, child := startMom(t, e, "ok", `{"n": 21}`)
	p := e.WaitTerminal(parent, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, p.Status, p.Error)
	out, err := e.Client.LoadData(context.Background(), p.OutputRef)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"twice": int64(42)}, out)
	c := e.Instance(child)
	require.NotNil(t, c, "the child's id derives from (parent, step, attempt)")
	require.Equal(t, workflow.StatusCompleted, c.Status)
	require.Equal(t, &workflow.ParentRef{ID: parent, Step: "call", Index: 1}, c.Parent)
	ids, err := e.Client.ListInstanceIDs(context.Background())
	require.NoError(t, err)
	require.Len(t, ids, 2, "one child")
}

func TestChildWorkflowFailureFailsTheStep(t *testing.T) {
	t.Parallel()
	e, _, _ := setupChildren(t, dispatcher.Config{}, nil)
	parent, child := startMom(t, e, "bad", `{"n": 1, "fail": true}`)
	p := e.WaitTerminal(parent, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, p.Status, p.Error)
	require.Equal(t, workflow.StepFailed, p.Steps["call"].Status)
	require.Contains(t, p.Steps["call"].Error, "child workflow kid failed")
	require.Contains(t, p.Steps["call"].Error, "kid says no")
	require.Equal(t, workflow.StepCompleted, p.Steps["recover"].Status, "on_failure ran")
	require.Nil(t, p.Steps["after"])
	require.Equal(t, workflow.StatusFailed, e.Instance(child).Status)
}

func TestChildWorkflowMissingFailsTheStep(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: orphan
version: 1
steps:
  - {name: call, kind: workflow, workflow: ghost, on_failure: recover}
  - {name: recover, kind: task, task: echo}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "orphan", EventKey: "o", Payload: []byte(`{}`)}))
	p := e.WaitTerminal(workflow.InstanceID("orphan", "o"), 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, p.Status, p.Error)
	require.Equal(t, workflow.StepFailed, p.Steps["call"].Status)
	require.Contains(t, p.Steps["call"].Error, "ghost")
}

func TestChildWorkflowCancelledWithItsParent(t *testing.T) {
	t.Parallel()
	e, g, _ := setupChildren(t, dispatcher.Config{}, nil)
	parent, child := startMom(t, e, "cancel", `{"n": 1, "block": true}`)
	require.Equal(t, child, nextStarted(t, g))
	cancel(t, e, parent)
	require.Equal(t, workflow.StatusCancelled, e.WaitTerminal(parent, 10*time.Second).Status)
	c := e.WaitTerminal(child, 10*time.Second)
	require.Equal(t, workflow.StatusCancelled, c.Status)
	require.Contains(t, c.Error, "parent")
	close(g.ch(child))
}

func TestChildWorkflowSurvivesDispatcherRestart(t *testing.T) {
	t.Parallel()
	e, g, run := setupChildren(t, dispatcher.Config{}, nil)
	parent, child := startMom(t, e, "restart", `{"n": 5, "block": true}`)
	require.Equal(t, child, nextStarted(t, g))
	require.NoError(t, run.Stop()) // between the child's start and its completion
	close(g.ch(child))
	e.Dispatcher(e.NewClient(), dispatcher.Config{})
	p := e.WaitTerminal(parent, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, p.Status, p.Error)
	out, err := e.Client.LoadData(context.Background(), p.OutputRef)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"twice": int64(10)}, out)
}

func TestChildWorkflowLostNoticeIsReconciled(t *testing.T) {
	t.Parallel()
	// The child's final commit is published nowhere: its notice to the
	// parent is lost, as when the process dies after the child's CAS.
	var dropped atomic.Int64
	drop := func(dec workflow.Decision) bool {
		for _, ev := range dec.Events {
			if ev.Event.Kind == workflow.EventChildDone && dropped.Add(1) == 1 {
				return true
			}
		}
		return false
	}
	e, _, _ := setupChildren(t, dispatcher.Config{RepairInterval: 200 * time.Millisecond, StaleBulk: time.Second},
		func(b dispatcher.Backend) dispatcher.Backend { return &faulty{Backend: b, dropPublish: drop} })
	parent, _ := startMom(t, e, "lost", `{"n": 3}`)
	p := e.WaitTerminal(parent, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, p.Status, p.Error)
	require.GreaterOrEqual(t, dropped.Load(), int64(1), "the notice was dropped")
}

// TestChildWorkflowWhoseStartIsLateIsCancelledWithItsParent: the parent is
// cancelled while its child's start message is still on its way (here:
// held back); the child is created cancelled, and its start, when it
// comes, runs nothing.
func TestChildWorkflowWhoseStartIsLateIsCancelledWithItsParent(t *testing.T) {
	t.Parallel()
	var (
		mu   sync.Mutex
		held []workflow.Child
	)
	hold := func(dec workflow.Decision) bool {
		mu.Lock()
		defer mu.Unlock()
		held = append(held, dec.Children...)
		return len(dec.Children) > 0
	}
	// The repair loop is off: nothing else may publish the start.
	e, g, _ := setupChildren(t, dispatcher.Config{RepairInterval: -1},
		func(b dispatcher.Backend) dispatcher.Backend { return &faulty{Backend: b, dropPublish: hold} })
	parent, child := startMom(t, e, "late", `{"n": 1}`)
	jftest.Eventually(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(held) == 1
	}, "the child's start was never decided")
	cancel(t, e, parent)
	require.Equal(t, workflow.StatusCancelled, e.WaitTerminal(parent, 10*time.Second).Status)
	c := e.WaitTerminal(child, 10*time.Second)
	require.Equal(t, workflow.StatusCancelled, c.Status, "the child is created cancelled")
	require.Contains(t, c.Error, "parent")

	// The late start arrives: nothing runs.
	mu.Lock()
	late := held
	mu.Unlock()
	require.NoError(t, e.Client.PublishChildren(context.Background(), late))
	jftest.Eventually(t, 20*time.Second, func() bool {
		sts, _ := e.Client.CollectStats(context.Background(), 200*time.Millisecond)
		for _, st := range sts {
			var v struct {
				Stats dispatcher.Stats `json:"stats"`
			}
			if json.Unmarshal(st, &v) == nil && v.Stats.DuplicateTriggers > 0 {
				return true
			}
		}
		return false
	}, "the late start was not applied as a duplicate")
	c = e.Instance(child)
	require.Equal(t, workflow.StatusCancelled, c.Status)
	require.Empty(t, c.Steps, "no step of the child ran")
	require.Empty(t, g.started, "no task of the child ran")
}
