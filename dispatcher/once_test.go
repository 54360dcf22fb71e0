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
	"github.com/jetflow/jetflow/tasktoken"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

const payDef = `
name: pay
version: 1
steps:
  - {name: prep, kind: task, task: prep, next: charge}
  - name: charge
    kind: task
    task: charge
    once: true
    retry: {max_attempts: 4, initial_interval: 100ms}
    next: ship
  - {name: ship, kind: task, task: ship}
`

// unknownOutcome is the text of the failure for a claim without outcome.
const unknownOutcome = "was claimed by an earlier delivery that did not record an outcome; it may or may not have happened"

// TestOnceStepNeverRunsTwice runs instances whose middle step is marked
// once: true while one worker is killed mid-handler and another pauses
// past its ack deadline and wakes up later. No effect key ever gets a
// second handler call or a second recorded outcome; steps whose claimer
// died fail with the "may or may not have happened" error; the paused
// claimer's outcome, recorded late, is what later attempts report; and a
// task delivered again after the step completed reports the recorded
// outcome without calling the handler.
// With task tokens the dispatchers claim and record for the workers
// (the effect service); without, the workers write the bucket.
func TestOnceStepNeverRunsTwice(t *testing.T) {
	t.Parallel()
	for _, tokens := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "tokens"}[tokens], func(t *testing.T) {
			t.Parallel()
			testOnceStepNeverRunsTwice(t, tokens)
		})
	}
}

// onceTokens returns a dispatcher config with task tokens (and the key
// set, to sign tasks in the test) when tokens is set.
func onceTokens(t testing.TB, tokens bool) (dispatcher.Config, *tasktoken.KeySet) {
	t.Helper()
	if !tokens {
		return dispatcher.Config{}, nil
	}
	k, err := tasktoken.NewKey()
	require.NoError(t, err)
	keys := tasktoken.KeySet{Keys: []tasktoken.Key{k}}
	ring, err := tasktoken.Static(keys)
	require.NoError(t, err)
	return dispatcher.Config{TaskTokens: ring}, &keys
}

func testOnceStepNeverRunsTwice(t *testing.T, tokens bool) {
	n := 100
	switch {
	case testing.Short():
		n = 30
	case raceDetector:
		n = 60
	}
	if tokens {
		n /= 2 // the same paths, on a shared machine
	}
	e := jftest.Start(t, jetstream.Config{WorkerAckWait: time.Second})
	e.Register(payDef)
	dcfg, signer := onceTokens(t, tokens)
	d, _ := e.Dispatcher(nil, dcfg)
	l := newEffectLedger()
	plain := l.handler("any")
	ctx := context.Background()

	// K is killed (its connection closed) under its first charge handler;
	// every charge handler it has running dies with it, claims made.
	killer := &killable{client: e.NewClient(), dead: make(chan struct{})}
	caught := make(chan struct{})
	e.Worker(killer.client, worker.Config{Concurrency: 4}, map[string]worker.Handler{
		"prep": plain, "ship": plain,
		"charge": func(_ context.Context, t *worker.Task) (any, error) {
			k := l.begin(t.EffectKey)
			if killer.killed.CompareAndSwap(false, true) {
				close(caught)
			}
			<-killer.dead
			out := fmt.Sprintf("%s#%d@killed", t.EffectKey, k)
			l.end(t.EffectKey, out)
			return out, nil
		},
	})
	ids := make([]string, n)
	for i := range ids {
		key := fmt.Sprint(i)
		ids[i] = workflow.InstanceID("pay", key)
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "pay", EventKey: key, Payload: []byte(`{}`)}))
	}
	select {
	case <-caught:
	case <-time.After(60 * time.Second):
		t.Fatal("the worker to kill never ran a charge")
	}
	killer.client.Close()

	// Z pauses under its first charge (heartbeats off, so the task goes to
	// another worker, which finds the claim without an outcome) until the
	// instance shows that failure, then records its outcome late.
	paused := make(chan string, 1)
	var zPaused atomic.Bool
	// (Concurrency above the number of task types: each task type's pull
	// holds a slot while it waits.)
	_, zRun := e.Worker(e.NewClient(), worker.Config{Concurrency: 4, HeartbeatInterval: time.Hour}, map[string]worker.Handler{
		"prep": plain, "ship": plain,
		"charge": func(_ context.Context, t *worker.Task) (any, error) {
			k := l.begin(t.EffectKey)
			who := "z"
			if zPaused.CompareAndSwap(false, true) {
				who = "zombie"
				paused <- t.EffectKey
				pauseUntil(60*time.Second, func() bool {
					inst := e.Instance(t.Instance)
					return inst != nil && (inst.Status.Terminal() || strings.Contains(inst.Steps["charge"].Error, unknownOutcome))
				})
			}
			out := fmt.Sprintf("%s#%d@%s", t.EffectKey, k, who)
			l.end(t.EffectKey, out)
			return out, nil
		},
	})
	close(killer.dead)
	var zombieKey string
	select {
	case zombieKey = <-paused:
	case <-time.After(60 * time.Second):
		t.Fatal("the worker to pause never ran a charge")
	}
	for i := 0; i < 2; i++ {
		e.Worker(e.NewClient(), worker.Config{Concurrency: 8}, map[string]worker.Handler{"prep": plain, "charge": plain, "ship": plain})
	}
	for _, id := range ids {
		e.WaitTerminal(id, 60*time.Second)
	}
	require.NoError(t, zRun.Stop()) // the zombie has recorded and reported

	// The checks: per effect key of a once step, at most one handler call
	// and at most one recorded outcome, and the instance agrees with the
	// record.
	var completed, unknown, killedKeys, claimedOnly int
	zombieOutcome := ""
	for _, id := range ids {
		inst := e.Instance(id)
		key := workflow.EffectKey(id, "charge")
		calls := l.callsOf(key)
		require.LessOrEqual(t, calls, 1, "%s: a once step's handler ran twice", key)
		hist, err := e.Client.EffectHistory(ctx, key)
		require.NoError(t, err, key)
		require.NotEmpty(t, hist, "%s: never claimed", key)
		require.False(t, hist[0].Done, "%s: the first revision is the claim", key)
		outcomes := 0
		for _, h := range hist {
			if h.Done {
				outcomes++
			}
		}
		require.LessOrEqual(t, outcomes, 1, "%s: more than one recorded outcome", key)
		last := hist[len(hist)-1]
		if calls == 0 {
			// The killed worker's claim landed (the dispatcher's answer,
			// or the server's, never reached it) and it died before
			// calling the handler: the claim stays without an outcome,
			// and the step fails as unknown, never runs.
			require.False(t, last.Done, "%s: an outcome recorded without a handler call", key)
			claimedOnly++
		}
		outs := l.outputsOf(key)
		switch inst.Status {
		case workflow.StatusCompleted:
			completed++
			require.True(t, last.Done, "%s: completed without a recorded outcome", key)
			require.Empty(t, last.Error)
			require.Equal(t, last.OutputRef, inst.Steps["charge"].OutputRef, "%s: the accepted result is the recorded outcome", key)
			out, err := e.Client.LoadData(ctx, last.OutputRef)
			require.NoError(t, err)
			require.Equal(t, outs, []string{out.(string)})
		case workflow.StatusFailed:
			unknown++
			require.Contains(t, inst.Error, unknownOutcome, key)
			require.Contains(t, inst.Error, key)
			if !last.Done {
				killedKeys++
				require.LessOrEqual(t, len(outs), 1)
				for _, o := range outs {
					require.Contains(t, o, "@killed", "%s: only a killed claimer leaves no outcome", key)
				}
			}
		default:
			t.Fatalf("%s: %s", id, inst.Status)
		}
		if key == zombieKey {
			require.True(t, last.Done, "the paused claimer recorded its outcome when it woke")
			zombieOutcome = fmt.Sprintf("%s (attempts: %d)", inst.Status, inst.Steps["charge"].Attempt)
		}
	}
	keys, err := e.Client.EffectKeys(ctx)
	require.NoError(t, err)
	require.Len(t, keys, n, "only once steps claim effect keys")
	require.Positive(t, killedKeys, "the killed worker's claims stay unresolved")

	// A task delivered again after its step completed (a lost ack, a
	// replay) reports the recorded outcome; the handler does not run.
	var done string
	for _, id := range ids {
		if e.Instance(id).Status == workflow.StatusCompleted {
			done = id
			break
		}
	}
	require.NotEmpty(t, done, "no instance completed")
	inst := e.Instance(done)
	key := workflow.EffectKey(done, "charge")
	before := l.totalCalls()
	redo := workflow.Task{
		Instance: done, Workflow: "pay", Version: 1, Step: "charge", Type: "charge", Attempt: 1,
		InputRef: inst.Steps["charge"].InputRef, EffectKey: key, Once: true, MaxAttempts: 4,
	}
	if signer != nil {
		redo.Token = signer.Sign(done, "charge", 1, time.Now())
	}
	task, err := jetstream.EncodeMessage(redo)
	require.NoError(t, err)
	require.NoError(t, e.Client.PublishRaw(ctx, jetstream.TaskSubject("charge"), task))
	waitQuiet(t, e, 30*time.Second)
	require.Equal(t, before, l.totalCalls(), "a redelivered once task ran its handler")
	require.Equal(t, 1, l.callsOf(key))
	require.Equal(t, inst.Events, e.Instance(done).Events, "the replayed result changed the instance")

	if tokens {
		require.Positive(t, metricValue(t, d, "jetflow_effect_requests_total", map[string]string{"op": "claim", "outcome": "claimed"}),
			"with task tokens the workers claim through the dispatcher")
		require.Positive(t, metricValue(t, d, "jetflow_effect_requests_total", map[string]string{"op": "record", "outcome": "recorded"}))
	}
	total, _, repeated, _ := l.summary()
	t.Logf("once: %d instances; %d completed, %d failed with an unknown outcome (%d of them claimed by the killed worker and never resolved, %d of those before it called the handler); the paused claimer's instance: %s; raw handler invocations %d (%d keys ran more than once, none of them a once step); stale results ignored: %d",
		n, completed, unknown, killedKeys, claimedOnly, zombieOutcome, total, repeated, d.Stats().StaleEvents)
}

// TestOnceStepErrorIsFinal: a once step's handler error is its recorded
// outcome, reported as permanent: no retry runs the handler again.
func TestOnceStepErrorIsFinal(t *testing.T) {
	t.Parallel()
	for _, tokens := range []bool{false, true} {
		t.Run(map[bool]string{false: "direct", true: "tokens"}[tokens], func(t *testing.T) {
			t.Parallel()
			testOnceStepErrorIsFinal(t, tokens)
		})
	}
}

func testOnceStepErrorIsFinal(t *testing.T, tokens bool) {
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: once-fail
version: 1
steps:
  - {name: a, kind: task, task: boom, once: true, retry: {max_attempts: 5, initial_interval: 100ms}}
`)
	dcfg, _ := onceTokens(t, tokens)
	e.Dispatcher(nil, dcfg)
	var calls atomic.Int64
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"boom": func(context.Context, *worker.Task) (any, error) {
		calls.Add(1)
		return nil, errors.New("card declined")
	}})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "once-fail", EventKey: "x", Payload: []byte(`{}`)}))
	id := workflow.InstanceID("once-fail", "x")
	inst := e.WaitTerminal(id, 20*time.Second)
	require.Equal(t, workflow.StatusFailed, inst.Status)
	require.Contains(t, inst.Error, "failed permanently on attempt 1: card declined")
	require.EqualValues(t, 1, calls.Load())
	rec, _, err := e.Client.GetEffect(context.Background(), workflow.EffectKey(id, "a"))
	require.NoError(t, err)
	require.True(t, rec.Done)
	require.Equal(t, "card declined", rec.Error)
}
