package dispatcher_test

import (
	"context"
	"fmt"
	"strings"
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

// rerunDefs binds one subject to three workflows that differ only in
// trigger.on_duplicate, so every publish is the same duplicate for all
// three.
func rerunDefs(task string) []string {
	def := func(name, policy string) string {
		return fmt.Sprintf(`
name: %s
version: 1
trigger: {subject: orders.placed, key: id%s}
steps:
  - {name: a, kind: task, task: %s, next: b}
  - {name: b, kind: task, task: %s}
`, name, policy, task, task)
	}
	return []string{
		def("rerun", ", on_duplicate: rerun"),
		def("ignore", ", on_duplicate: ignore"),
		def("default", ""),
	}
}

func publishPlaced(t *testing.T, c *jetstream.Client, key string, v int, msgID string) (duplicate bool) {
	t.Helper()
	hdr := map[string]string{}
	if msgID != "" {
		hdr[jetstream.HeaderMsgID] = msgID
	}
	dup, err := c.Publish(context.Background(), "orders.placed", []byte(fmt.Sprintf(`{"id":%q,"v":%d}`, key, v)), hdr)
	require.NoError(t, err)
	return dup
}

// requireRuns checks that the instances are exactly want, each completed,
// each step run once by the handler and accepted once.
func requireRuns(t *testing.T, e *jftest.Env, l *effectLedger, want ...string) {
	t.Helper()
	for _, id := range want {
		e.WaitTerminal(id, 20*time.Second)
	}
	ids, err := e.Client.ListInstanceIDs(context.Background())
	require.NoError(t, err)
	require.ElementsMatch(t, want, ids)
	for _, id := range want {
		inst := e.Instance(id)
		require.Equal(t, workflow.StatusCompleted, inst.Status, "%s: %s", id, inst.Error)
		require.EqualValues(t, 3, inst.Events, "%s: start + one accepted result per step", id)
		for _, step := range []string{"a", "b"} {
			require.Equal(t, 1, inst.Steps[step].Attempt, "%s %s", id, step)
			require.Equal(t, 1, l.callsOf(workflow.EffectKey(id, step)), "%s step %s ran %d times", id, step, l.callsOf(workflow.EffectKey(id, step)))
		}
	}
}

// TestRerunAfterEarlierRunEnded: under on_duplicate: rerun, a duplicate
// that arrives after the event key's run completed starts a second run
// "<id>-r2" with the new payload; the same publish leaves the ignore and
// default workflows at one instance. A re-publish inside the duplicate
// window is dropped by the stream before any dispatcher sees it, so it
// reruns nothing.
func TestRerunAfterEarlierRunEnded(t *testing.T) {
	t.Parallel()
	// A window far longer than the first runs take, so the re-publish
	// after them is inside it on any machine; shortened to 1s after it.
	e := jftest.Start(t, jetstream.Config{DuplicateWindow: 10 * time.Minute})
	for _, src := range rerunDefs("step") {
		e.Register(src)
	}
	l := newEffectLedger()
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"step": l.handler("w")})
	ctx := context.Background()
	first := workflow.InstanceID("rerun", "K")
	ignore, def := workflow.InstanceID("ignore", "K"), workflow.InstanceID("default", "K")

	require.False(t, publishPlaced(t, e.Client, "K", 1, "evt-K"))
	requireRuns(t, e, l, first, ignore, def)

	// Inside the window: the stream drops the re-publish (layer 1); no
	// dispatcher sees it, so there is nothing to rerun.
	require.True(t, publishPlaced(t, e.Client, "K", 2, "evt-K"), "a re-publish inside the window is a stream duplicate")
	require.EqualValues(t, 1, d.Stats().Triggers)
	require.NoError(t, e.Client.SetDuplicateWindow(ctx, jetstream.StreamTriggers, time.Second))

	// After the window: re-publish until the stream stores it. The one
	// stored copy is the duplicate that reruns. (nats-server purges
	// expired ids on a timer that a window update reschedules, but the
	// purge can run before the new window is in place and then waits out
	// the old one: each failed try updates the window again, between two
	// short values, which reschedules the purge.)
	windows := []time.Duration{2 * time.Second, time.Second}
	tries := 0
	jftest.Eventually(t, 60*time.Second, func() bool {
		if !publishPlaced(t, e.Client, "K", 2, "evt-K") {
			return true
		}
		tries++
		require.NoError(t, e.Client.SetDuplicateWindow(ctx, jetstream.StreamTriggers, windows[tries%2]))
		return false
	}, "the trigger stream still remembered evt-K")
	second := workflow.RunID(first, 2)
	require.Equal(t, first+"-r2", second)
	jftest.Eventually(t, 20*time.Second, func() bool {
		s := d.Stats()
		return s.Triggers == 2 && s.Started+s.DuplicateTriggers == 6 && s.Completed == 4
	}, "the duplicate was not applied: %+v", d.Stats())
	waitQuiet(t, e, 20*time.Second)
	requireRuns(t, e, l, first, second, ignore, def)

	s := d.Stats()
	require.EqualValues(t, 4, s.Started, "three first runs and one rerun")
	require.EqualValues(t, 1, s.Reruns)
	require.EqualValues(t, 2, s.DuplicateTriggers, "ignore and default dropped the duplicate")
	require.EqualValues(t, 2, s.DuplicateDiffer)
	require.Zero(t, s.DeadLettered)

	one, two := e.Instance(first), e.Instance(second)
	require.Equal(t, 1, one.RunNumber())
	require.Equal(t, 2, two.RunNumber())
	require.Equal(t, "K", two.EventKey, "a rerun keeps the event key")
	require.Positive(t, one.TriggerSeq)
	require.Greater(t, two.TriggerSeq, one.TriggerSeq, "each run records the trigger message that started it")
	require.Equal(t, workflow.TriggerInputKey(first, one.TriggerSeq), one.InputRef)
	require.Equal(t, workflow.TriggerInputKey(second, two.TriggerSeq), two.InputRef)
	require.Equal(t, workflow.InputKey(ignore), e.Instance(ignore).InputRef, "ignore keeps the input key it always had")
	for id, v := range map[string]int64{first: 1, second: 2, ignore: 1, def: 1} {
		in, err := e.Client.LoadData(ctx, e.Instance(id).InputRef)
		require.NoError(t, err)
		require.Equal(t, map[string]any{"id": "K", "v": v}, in, "%s runs with the payload of the trigger that started it", id)
	}
	require.Equal(t, 8, l.totalCalls(), "four runs of two steps, each once")
}

// gate holds handler calls for the instances it is closed for.
type gate struct {
	mu      sync.Mutex
	held    map[string]chan struct{}
	entered map[string]int
}

func newGate() *gate { return &gate{held: map[string]chan struct{}{}, entered: map[string]int{}} }

func (g *gate) hold(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.held[id] = make(chan struct{})
}

func (g *gate) release(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.held[id])
}

func (g *gate) waiting(id string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.entered[id] > 0
}

func (g *gate) handler(l *effectLedger) worker.Handler {
	h := l.handler("w")
	return func(ctx context.Context, task *worker.Task) (any, error) {
		g.mu.Lock()
		ch := g.held[task.Instance]
		g.entered[task.Instance]++
		g.mu.Unlock()
		if ch != nil {
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return h(ctx, task)
	}
}

func rerunStats(ds ...*dispatcher.Dispatcher) (s dispatcher.Stats) {
	s = sumStats(ds...)
	for _, d := range ds {
		s.Reruns += d.Stats().Reruns
	}
	return s
}

// TestRerunIgnoresDuplicatesWhileRunning: a duplicate that arrives while
// the latest run is still running is dropped, as under ignore; and a burst
// of distinct duplicates (no Nats-Msg-Id, from three connections, to two
// racing dispatchers) after the run ended starts exactly one new run: all
// of them choose run 2, one KV Create wins, the rest are its duplicates.
func TestRerunIgnoresDuplicatesWhileRunning(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(rerunDefs("step")[0])
	l := newEffectLedger()
	g := newGate()
	var ds []*dispatcher.Dispatcher
	for i := 0; i < 2; i++ {
		d, _ := e.Dispatcher(e.NewClient(), dispatcher.Config{})
		ds = append(ds, d)
	}
	e.Worker(nil, worker.Config{Concurrency: 8}, map[string]worker.Handler{"step": g.handler(l)})
	first := workflow.InstanceID("rerun", "K")
	second, third := workflow.RunID(first, 2), workflow.RunID(first, 3)

	// Run 1 is held in its first step; a duplicate is dropped.
	g.hold(first)
	publishPlaced(t, e.Client, "K", 1, "")
	jftest.Eventually(t, 10*time.Second, func() bool { return g.waiting(first) }, "run 1 did not start")
	publishPlaced(t, e.Client, "K", 2, "")
	jftest.Eventually(t, 10*time.Second, func() bool { return rerunStats(ds...).DuplicateTriggers == 1 },
		"the duplicate was not dropped: %+v", rerunStats(ds...))
	require.Nil(t, e.Instance(second), "a duplicate while run 1 runs started a rerun")
	g.release(first)
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(first, 10*time.Second).Status)

	// Run 1 ended: a burst of distinct duplicates starts one run 2, which
	// is held running while the burst lasts.
	g.hold(second)
	const copies = 30
	pubs := []*jetstream.Client{e.NewClient(), e.NewClient(), e.NewClient()}
	var wg sync.WaitGroup
	var published atomic.Int64
	for i := 0; i < copies; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := pubs[i%len(pubs)].Publish(context.Background(), "orders.placed", []byte(fmt.Sprintf(`{"id":"K","v":%d}`, 100+i)), nil)
			if err == nil {
				published.Add(1)
			}
		}()
	}
	wg.Wait()
	require.EqualValues(t, copies, published.Load())
	jftest.Eventually(t, 20*time.Second, func() bool {
		s := rerunStats(ds...)
		return s.Triggers == copies+2 && s.Started+s.DuplicateTriggers == copies+2
	}, "the burst was not applied: %+v", rerunStats(ds...))
	s := rerunStats(ds...)
	require.EqualValues(t, 2, s.Started, "run 1 and exactly one rerun")
	require.EqualValues(t, 1, s.Reruns)
	require.EqualValues(t, copies, s.DuplicateTriggers, "one while run 1 ran, and all but one of the burst")
	require.Nil(t, e.Instance(third))
	two := e.Instance(second)
	require.NotNil(t, two)
	require.Equal(t, workflow.StatusRunning, two.Status)
	g.release(second)
	waitQuiet(t, e, 20*time.Second)
	requireRuns(t, e, l, first, second)
	in, err := e.Client.LoadData(context.Background(), two.InputRef)
	require.NoError(t, err)
	require.Equal(t, two.InputDigest, workflow.Digest([]byte(fmt.Sprintf(`{"id":"K","v":%d}`, in.(map[string]any)["v"]))),
		"run 2's input is the payload of the trigger it records")
}

// instantDef ends in its start transition (the switch matches nothing), so
// a run is terminal the moment it is created: a redelivery of its trigger
// always finds it ended, which is when a missing guard would rerun.
const instantDef = `
name: instant
version: 1
trigger: {subject: instant.created, key: id, on_duplicate: rerun}
steps:
  - name: route
    kind: switch
    cases:
      - {when: 'input.work == true', next: work}
  - {name: work, kind: task, task: never}
`

// TestRerunRedeliveredTriggerStartsNoSecondRun: a dispatcher applies the
// trigger that starts run 2 and dies before acking it; NATS redelivers the
// same message (same stream sequence, delivery 2) to a new dispatcher after
// run 2 ended and after another duplicate started run 3. The redelivery is
// recognised by the stream sequence recorded in run 2 and starts nothing.
func TestRerunRedeliveredTriggerStartsNoSecondRun(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{DispatcherAckWait: 3 * time.Second})
	e.Register(instantDef)
	first := workflow.InstanceID("instant", "K")
	second, third, fourth := workflow.RunID(first, 2), workflow.RunID(first, 3), workflow.RunID(first, 4)
	publish := func(v int) {
		t.Helper()
		_, err := e.Client.Publish(context.Background(), "instant.created", []byte(fmt.Sprintf(`{"id":"K","v":%d}`, v)), nil)
		require.NoError(t, err)
	}

	var dropped, redelivered atomic.Int64
	var droppedSeq atomic.Uint64
	c1 := e.NewClient()
	d1, r1 := e.Dispatcher(&faulty{Backend: c1, dropTriggerAck: func(m jetstream.Delivery) bool {
		if !strings.Contains(string(m.Data()), `"v":2`) {
			return false
		}
		if m.Deliveries() > 1 {
			redelivered.Add(1)
			return false
		}
		dropped.Add(1)
		droppedSeq.Store(m.StreamSeq())
		return true
	}}, dispatcher.Config{})

	publish(1)
	one := e.WaitTerminal(first, 10*time.Second)
	require.Equal(t, workflow.StatusCompleted, one.Status)
	publish(2) // starts run 2; its ack is withheld
	jftest.Eventually(t, 10*time.Second, func() bool { return dropped.Load() == 1 }, "the trigger of run 2 was not applied")
	two := e.Instance(second)
	require.NotNil(t, two)
	require.Equal(t, workflow.StatusCompleted, two.Status, "run 2 ended in its start transition")
	require.EqualValues(t, 1, two.Events)
	require.Equal(t, droppedSeq.Load(), two.TriggerSeq)
	require.EqualValues(t, 1, d1.Stats().Reruns)

	// The dispatcher "dies" with the message unacked. Another duplicate
	// arrives; a new dispatcher applies it (run 3) and gets the redelivery.
	require.NoError(t, r1.Stop())
	c1.Close()
	publish(3)
	d2, _ := e.Dispatcher(nil, dispatcher.Config{})
	jftest.Eventually(t, 10*time.Second, func() bool { return e.Instance(third) != nil }, "run 3 did not start")
	// Usually run 3 exists before the ack wait ends, so the redelivery
	// finds run 2 behind a later run; TestChooseRun covers both orders.
	t.Logf("run 3 started %s the redelivery was applied", map[bool]string{true: "before", false: "after"}[d2.Stats().DuplicateTriggers == 0])
	jftest.Eventually(t, 20*time.Second, func() bool {
		s := d2.Stats()
		return s.Triggers == 2 && s.Started+s.DuplicateTriggers == 2
	}, "the new dispatcher did not get the redelivery and run 3's trigger: %+v", d2.Stats())
	require.Zero(t, redelivered.Load(), "the redelivery went to the new dispatcher")

	s := d2.Stats()
	require.EqualValues(t, 1, s.Started, "run 3 only")
	require.EqualValues(t, 1, s.Reruns)
	require.EqualValues(t, 1, s.DuplicateTriggers, "the redelivery of run 2's trigger")
	three := e.WaitTerminal(third, 10*time.Second)
	require.Equal(t, workflow.StatusCompleted, three.Status)
	require.Nil(t, e.Instance(fourth), "the redelivered trigger started another run")
	ids, err := e.Client.ListInstanceIDs(context.Background())
	require.NoError(t, err)
	require.ElementsMatch(t, []string{first, second, third}, ids)
	in, err := e.Client.LoadData(context.Background(), three.InputRef)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"id": "K", "v": int64(3)}, in)
}
