package dispatcher_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
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

const orderDef = `
name: order
version: 1
trigger:
  subject: orders.created
  key: orderId
steps:
  - name: validate
    kind: task
    task: validate
    next: prepare
  - name: prepare
    kind: parallel
    branches: [reserve, charge]
    next: route
  - name: reserve
    kind: task
    task: echo
    input: '{"sku": input.sku}'
  - name: charge
    kind: task
    task: echo
    input: '{"amount": input.amount}'
  - name: route
    kind: switch
    cases:
      - when: steps.charge.output.amount > 100
        next: review
    default: ship
  - name: review
    kind: task
    task: echo
    next: ship
  - name: ship
    kind: task
    task: echo
    input: '{"order": input.orderId, "reviewed": steps.review != nil}'
`

func echo(_ context.Context, t *worker.Task) (any, error) { return t.Input() }

func publishJSON(t *testing.T, c *jetstream.Client, subject, body string) {
	t.Helper()
	_, err := c.Publish(context.Background(), subject, []byte(body), nil)
	require.NoError(t, err)
}

func TestEventToCompletedInstance(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(orderDef)
	e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"validate": echo, "echo": echo})

	publishJSON(t, e.Client, "orders.created", `{"orderId":"A-1","sku":"book","amount":250}`)
	publishJSON(t, e.Client, "orders.created", `{"orderId":"A-2","sku":"pen","amount":5}`)

	big := e.WaitTerminal(workflow.InstanceID("order", "A-1"), 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, big.Status, big.Error)
	require.Contains(t, big.Steps, "review")
	small := e.WaitTerminal(workflow.InstanceID("order", "A-2"), 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, small.Status, small.Error)
	require.NotContains(t, small.Steps, "review")

	out, err := e.Client.LoadData(context.Background(), big.OutputRef)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"order": "A-1", "reviewed": true}, out)
	for _, name := range []string{"validate", "prepare", "reserve", "charge", "route", "ship"} {
		require.Equal(t, workflow.StepCompleted, big.Steps[name].Status, name)
	}
}

func TestSameEventThreeTimesMakesOneInstance(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: once
version: 1
trigger: {subject: once.created, key: "header:Nats-Msg-Id"}
steps:
  - {name: a, kind: task, task: count}
`)
	var runs atomic.Int64
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"count": func(context.Context, *worker.Task) (any, error) {
		runs.Add(1)
		return nil, nil
	}})
	for i := 0; i < 3; i++ {
		_, err := e.Client.Publish(context.Background(), "once.created", []byte(`{}`), map[string]string{jetstream.HeaderMsgID: "evt-1"})
		require.NoError(t, err)
	}
	// A publish without the stream-level dedup (other msg id header name
	// but the same event key) must be stopped by the KV guard.
	inst := e.WaitTerminal(workflow.InstanceID("once", "evt-1"), 10*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	ids, err := e.Client.ListInstanceIDs(context.Background())
	require.NoError(t, err)
	require.Len(t, ids, 1)
	require.EqualValues(t, 1, runs.Load())
	require.EqualValues(t, 1, d.Stats().Started)
}

func TestDuplicateBeyondStreamDedupIsCaughtByKVGuard(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: keyed
version: 1
trigger: {subject: keyed.created, key: id}
steps:
  - {name: a, kind: task, task: echo}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	// No Nats-Msg-Id: every publish is stored; only the KV Create guards.
	publishJSON(t, e.Client, "keyed.created", `{"id":"k1","v":1}`)
	e.WaitTerminal(workflow.InstanceID("keyed", "k1"), 10*time.Second)
	publishJSON(t, e.Client, "keyed.created", `{"id":"k1","v":2}`)
	publishJSON(t, e.Client, "keyed.created", `{"id":"k1","v":1}`)
	jftest.Eventually(t, 10*time.Second, func() bool { return d.Stats().DuplicateTriggers == 2 }, "duplicates not counted: %+v", d.Stats())
	require.EqualValues(t, 1, d.Stats().Started)
	require.EqualValues(t, 1, d.Stats().DuplicateDiffer)
	in, err := e.Client.LoadData(context.Background(), workflow.InputKey(workflow.InstanceID("keyed", "k1")))
	require.NoError(t, err)
	require.Equal(t, map[string]any{"id": "k1", "v": int64(1)}, in, "the first payload wins")
}

func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: flaky
version: 1
steps:
  - name: a
    kind: task
    task: flaky
    retry: {max_attempts: 3, initial_interval: 100ms}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	var calls atomic.Int64
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"flaky": func(_ context.Context, t *worker.Task) (any, error) {
		calls.Add(1)
		if t.Attempt < 3 {
			return nil, fmt.Errorf("attempt %d fails", t.Attempt)
		}
		return "ok", nil
	}})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "flaky", EventKey: "f1", Payload: []byte(`{}`)}))
	inst := e.WaitTerminal(workflow.InstanceID("flaky", "f1"), 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	require.Equal(t, 3, inst.Steps["a"].Attempt)
	require.EqualValues(t, 3, calls.Load())
}

func TestPermanentFailureFailsInstanceWithReason(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: doomed
version: 1
steps:
  - {name: a, kind: task, task: boom, retry: {max_attempts: 5}}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	var calls atomic.Int64
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"boom": func(context.Context, *worker.Task) (any, error) {
		calls.Add(1)
		return nil, worker.Permanent(errors.New("card declined"))
	}})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "doomed", EventKey: "d1", Payload: []byte(`{}`)}))
	inst := e.WaitTerminal(workflow.InstanceID("doomed", "d1"), 10*time.Second)
	require.Equal(t, workflow.StatusFailed, inst.Status)
	require.Contains(t, inst.Error, "card declined")
	require.Contains(t, inst.Error, `step "a"`)
	require.EqualValues(t, 1, calls.Load(), "a permanent failure is not retried")
}

func TestFailureRoutedToHandlerStep(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: compensate
version: 1
steps:
  - {name: a, kind: task, task: boom, retry: {max_attempts: 1}, on_failure: undo}
  - {name: undo, kind: task, task: echo}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"boom": func(context.Context, *worker.Task) (any, error) { return nil, errors.New("nope") },
		"echo": echo,
	})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "compensate", EventKey: "c1", Payload: []byte(`{}`)}))
	inst := e.WaitTerminal(workflow.InstanceID("compensate", "c1"), 10*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	require.Equal(t, workflow.StepFailed, inst.Steps["a"].Status)
	require.Equal(t, workflow.StepCompleted, inst.Steps["undo"].Status)
}

func TestStaleAttemptResultIsIgnored(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: stale
version: 1
steps:
  - {name: a, kind: task, task: slow, retry: {max_attempts: 3, initial_interval: 100ms}}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	release := make(chan struct{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"slow": func(_ context.Context, t *worker.Task) (any, error) {
		if t.Attempt == 1 {
			return nil, errors.New("first attempt fails")
		}
		<-release
		return "second", nil
	}})
	id := workflow.InstanceID("stale", "s1")
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "stale", EventKey: "s1", Payload: []byte(`{}`)}))
	jftest.Eventually(t, 10*time.Second, func() bool {
		inst := e.Instance(id)
		return inst != nil && inst.Steps["a"] != nil && inst.Steps["a"].Attempt == 2
	}, "attempt 2 never started")
	// A zombie reports success for attempt 1 after attempt 2 started.
	require.NoError(t, e.Client.PublishEvent(context.Background(), workflow.Event{
		Kind: workflow.EventResult, Instance: id, Step: "a", Attempt: 1, OutputRef: "",
	}, "zombie"))
	jftest.Eventually(t, 10*time.Second, func() bool { return d.Stats().StaleEvents >= 1 }, "zombie result not seen")
	inst := e.Instance(id)
	require.Equal(t, workflow.StatusRunning, inst.Status, "a stale result must not complete the step")
	close(release)
	inst = e.WaitTerminal(id, 10*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	out, err := e.Client.LoadData(context.Background(), inst.OutputRef)
	require.NoError(t, err)
	require.Equal(t, "second", out)
}

func TestDispatcherRestartResumesEveryInstance(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: chain
version: 1
steps:
  - {name: a, kind: task, task: echo, next: b}
  - {name: b, kind: task, task: echo, next: c}
  - {name: c, kind: task, task: echo}
`)
	_, first := e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	const n = 200
	for i := 0; i < n; i++ {
		require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "chain", EventKey: fmt.Sprint(i), Payload: []byte(`{}`)}))
	}
	// Stop the dispatcher mid-flight, then restart the server too, then a
	// new dispatcher.
	jftest.Eventually(t, 10*time.Second, func() bool {
		ids, _ := e.Client.ListInstanceIDs(context.Background())
		return len(ids) > 10
	}, "no instance started")
	require.NoError(t, first.Stop())
	e.Restart()
	e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	for i := 0; i < n; i++ {
		inst := e.WaitTerminal(workflow.InstanceID("chain", fmt.Sprint(i)), 30*time.Second)
		require.Equal(t, workflow.StatusCompleted, inst.Status)
	}
}

func TestBadInputIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{MaxPayload: 4096})
	e.Register(`
name: strict
version: 1
trigger: {subject: strict.in, key: id}
steps:
  - {name: a, kind: task, task: echo}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	ctx := context.Background()
	cases := []struct {
		name, subject string
		data          []byte
		reason        string
	}{
		{"malformed event", jetstream.EventSubject("x"), []byte("not msgpack at all"), "malformed"},
		{"event for unknown instance", jetstream.EventSubject("nobody-1"), mustEvent(t, workflow.Event{Kind: workflow.EventResult, Instance: "nobody-1", Step: "a", Attempt: 1}), "unknown instance"},
		{"unknown workflow", jetstream.StartSubject("ghost"), []byte(`{}`), "unknown workflow"},
		{"malformed trigger", "strict.in", []byte(`{"id":`), "not valid JSON"},
		{"missing key", "strict.in", []byte(`{"other":1}`), "event key field"},
		{"oversize", "strict.in", []byte(fmt.Sprintf(`{"id":"big","pad":"%0*d"}`, 5000, 0)), "limit is 4096"},
		{"malformed task", jetstream.TaskSubject("echo"), []byte{0xc1}, "malformed"},
		// A NATS user allowed only results (a worker) cannot pass off a
		// cancel, or a result for another instance, on a result subject.
		{"cancel on a result subject", jetstream.EventKindSubject("nobody-2", workflow.EventResult), mustEvent(t, workflow.Event{Kind: workflow.EventCancel, Instance: "nobody-2"}), "published on"},
		{"result for another instance", jetstream.EventKindSubject("nobody-3", workflow.EventResult), mustEvent(t, workflow.Event{Kind: workflow.EventResult, Instance: "nobody-4", Step: "a", Attempt: 1}), "published on"},
	}
	for _, c := range cases {
		if c.subject == jetstream.StartSubject("ghost") {
			require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "ghost", EventKey: "g", Payload: c.data}))
			continue
		}
		require.NoError(t, e.Client.PublishRaw(ctx, c.subject, c.data), c.name)
	}
	var dls []jetstream.DeadLetter
	jftest.Eventually(t, 10*time.Second, func() bool {
		var err error
		dls, err = e.Client.DeadLetters(ctx, 100)
		return err == nil && len(dls) >= len(cases)
	}, "expected %d dead letters", len(cases))
	require.Len(t, dls, len(cases))
	for _, c := range cases {
		found := false
		for _, dl := range dls {
			if dl.SourceSubject == c.subject && containsFold(dl.Reason, c.reason) {
				found = true
			}
		}
		require.True(t, found, "%s: no dead letter with reason %q in %+v", c.name, c.reason, reasons(dls))
	}
	// Nothing loops: the source streams are drained.
	jftest.Eventually(t, 10*time.Second, func() bool {
		counts, err := e.Client.StreamCounts(ctx)
		return err == nil && counts[jetstream.StreamEvents] == 0 && counts[jetstream.StreamTasks] == 0
	}, "rejected messages still in their streams")
	require.EqualValues(t, 0, d.Stats().Started)
}

func mustEvent(t *testing.T, ev workflow.Event) []byte {
	b, err := jetstream.EncodeMessage(ev)
	require.NoError(t, err)
	return b
}

func reasons(dls []jetstream.DeadLetter) []string {
	var out []string
	for _, d := range dls {
		out = append(out, d.SourceSubject+": "+d.Reason)
	}
	return out
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// A stored value jetflow cannot decode (written by something else, or
// corrupted) is a permanent error for the event that needs it: the event
// is dead-lettered on its first delivery with the key and the reason,
// never retried 50 times.
func TestUndecodableStoredValuesAreDeadLettered(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: reads
version: 1
steps:
  - {name: a, kind: task, task: echo, input: '{"x": input.x}'}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	ctx := context.Background()
	garbage := []byte{0xc1, 'n', 'o', 't', ' ', 'a', ' ', 'v', 'a', 'l', 'u', 'e'}

	// An instance record overwritten with garbage.
	wedged := workflow.InstanceID("reads", "wedged")
	require.NoError(t, e.Client.PublishRaw(ctx, "$KV."+jetstream.BucketInstances+"."+wedged, garbage))
	require.NoError(t, e.Client.PublishEvent(ctx, workflow.Event{Kind: workflow.EventCancel, Instance: wedged}, "cancel-wedged"))

	// An input that something else wrote under the key before the
	// instance starts: the first value stands, and it cannot be read.
	bad := workflow.InstanceID("reads", "bad-input")
	require.NoError(t, e.Client.PublishRaw(ctx, "$KV."+jetstream.BucketData+"."+workflow.InputKey(bad), garbage))
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "reads", EventKey: "bad-input", Payload: []byte(`{"x":1}`)}))

	var dls []jetstream.DeadLetter
	jftest.Eventually(t, 20*time.Second, func() bool {
		var err error
		dls, err = e.Client.DeadLetters(ctx, 10)
		return err == nil && len(dls) >= 2
	}, "expected 2 dead letters")
	require.Len(t, dls, 2, "%v", reasons(dls))
	for _, dl := range dls {
		require.EqualValues(t, 1, dl.Deliveries, "%s: dead-lettered on delivery %d", dl.SourceSubject, dl.Deliveries)
		switch dl.SourceSubject {
		case jetstream.EventKindSubject(wedged, workflow.EventCancel):
			require.Contains(t, dl.Reason, "decode instance "+wedged)
		case jetstream.StartSubject("reads"):
			require.Contains(t, dl.Reason, workflow.InputKey(bad))
		default:
			t.Fatalf("unexpected dead letter %s: %s", dl.SourceSubject, dl.Reason)
		}
	}
	require.Zero(t, d.Stats().Retried, "an undecodable value was retried")
	require.Nil(t, e.Instance(bad))
}
