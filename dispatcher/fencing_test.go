package dispatcher_test

import (
	"context"
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

const chainDef = `
name: %s
version: 1
steps:
  - {name: a, kind: task, task: %[2]s, next: b}
  - {name: b, kind: task, task: %[2]s, next: c}
  - {name: c, kind: task, task: %[2]s}
`

// checkAcceptedOnce asserts that every instance completed with each of
// its three steps accepted exactly once (attempt 1, one event per step),
// and that each accepted output is one the ledger saw a handler return.
func checkAcceptedOnce(t *testing.T, e *jftest.Env, l *effectLedger, ids []string) {
	t.Helper()
	ctx := context.Background()
	for _, id := range ids {
		inst := e.Instance(id)
		require.NotNil(t, inst, id)
		require.Equal(t, workflow.StatusCompleted, inst.Status, "%s: %s", id, inst.Error)
		require.EqualValues(t, 4, inst.Events, "%s: start + one accepted result per step", id)
		for _, step := range []string{"a", "b", "c"} {
			st := inst.Steps[step]
			require.Equal(t, workflow.StepCompleted, st.Status, "%s %s", id, step)
			require.Equal(t, 1, st.Attempt, "%s %s", id, step)
			key := workflow.EffectKey(id, step)
			require.GreaterOrEqual(t, l.callsOf(key), 1, "%s: completed without a handler call", key)
			out, err := e.Client.LoadData(ctx, st.OutputRef)
			require.NoError(t, err, key)
			require.Contains(t, l.outputsOf(key), out, "%s: accepted output is not one a handler returned", key)
		}
	}
	known := map[string]bool{}
	for _, id := range ids {
		known[id] = true
	}
	for _, key := range l.keys() {
		require.True(t, known[strings.Split(key, "/")[0]], "ledger entry %s belongs to no instance", key)
	}
}

// TestZombieWorkerIsFencedAfterAckDeadline: workers' handlers stop past
// their ack deadline without heartbeats, their tasks go to another worker,
// and the zombies wake up after the instance finished and report. Each
// step still has exactly one accepted result, and the accepted output is
// the live worker's.
func TestZombieWorkerIsFencedAfterAckDeadline(t *testing.T) {
	t.Parallel()
	n, zombies := 12, 3
	if testing.Short() {
		n, zombies = 6, 2
	}
	const window = 100 * time.Millisecond
	e := jftest.Start(t, jetstream.Config{
		WorkerAckWait: time.Second,
		// The shortest window, so a zombie's late result reaches the
		// dispatcher's fence instead of being dropped as a duplicate
		// publish (either is fine; the log says which happened).
		DuplicateWindow: window,
	})
	e.Register(fmt.Sprintf(chainDef, "zchain", "zstep"))
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	l := newEffectLedger()
	paused := make(chan string, zombies)
	// zombie pauses on the first step b it is the first to run: a GC
	// pause, SIGSTOP, a stuck call. It stops responding (heartbeats are
	// off) until another worker has finished the instance, and a little
	// longer, then reports as if nothing happened.
	zombie := func() worker.Handler {
		var done atomic.Bool
		return func(_ context.Context, t *worker.Task) (any, error) {
			k := l.begin(t.EffectKey)
			if t.Step == "b" && k == 1 && done.CompareAndSwap(false, true) {
				paused <- t.EffectKey
				pauseUntil(60*time.Second, func() bool {
					inst := e.Instance(t.Instance)
					return inst != nil && inst.Status.Terminal()
				})
				pauseUntil(10*window, func() bool { return false })
				out := fmt.Sprintf("%s#%d@zombie", t.EffectKey, k)
				l.end(t.EffectKey, out)
				return out, nil
			}
			out := fmt.Sprintf("%s#%d@z", t.EffectKey, k)
			l.end(t.EffectKey, out)
			return out, nil
		}
	}
	// The zombie-prone workers run alone (one handler each) until every
	// one of them has paused, so the pauses are certain.
	var zRuns []*jftest.Running
	for i := 0; i < zombies; i++ {
		_, r := e.Worker(e.NewClient(), worker.Config{Concurrency: 1, HeartbeatInterval: time.Hour}, map[string]worker.Handler{"zstep": zombie()})
		zRuns = append(zRuns, r)
	}
	ids := make([]string, n)
	for i := range ids {
		key := fmt.Sprint(i)
		ids[i] = workflow.InstanceID("zchain", key)
		require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "zchain", EventKey: key, Payload: []byte(`{}`)}))
	}
	var zombieKeys []string
	for len(zombieKeys) < zombies {
		select {
		case k := <-paused:
			zombieKeys = append(zombieKeys, k)
		case <-time.After(60 * time.Second):
			t.Fatalf("only %d of %d workers paused", len(zombieKeys), zombies)
		}
	}
	e.Worker(e.NewClient(), worker.Config{Concurrency: 8}, map[string]worker.Handler{"zstep": l.handler("live")})
	for _, id := range ids {
		e.WaitTerminal(id, 60*time.Second)
	}
	// Stopping a worker waits for its handlers, so every zombie has
	// reported when this returns.
	for _, r := range zRuns {
		require.NoError(t, r.Stop())
	}
	waitQuiet(t, e, 30*time.Second)
	checkAcceptedOnce(t, e, l, ids)
	for _, key := range zombieKeys {
		require.GreaterOrEqual(t, l.callsOf(key), 2, "%s: the paused task was never redelivered", key)
		require.Equal(t, l.callsOf(key), l.returnedOf(key), "%s: the zombie never woke", key)
		id := strings.Split(key, "/")[0]
		out, err := e.Client.LoadData(context.Background(), e.Instance(id).Steps["b"].OutputRef)
		require.NoError(t, err)
		require.NotContains(t, out, "@zombie", "%s: the zombie's late output replaced the accepted one", key)
	}
	total, keys, repeated, most := l.summary()
	t.Logf("zombies: %d handlers paused past the ack deadline and reported after their instance ended; raw handler invocations %d for %d steps (%d steps ran more than once, at most %d times); accepted results: exactly one per step; late results that reached the dispatcher and were ignored as stale: %d (the rest were dropped as duplicate publishes)",
		len(zombieKeys), total, keys, repeated, most, d.Stats().StaleEvents)
}

// pauseUntil is a handler that stops responding (no heartbeat, no
// result) until cond holds or timeout passes. It polls on a ticker: it is
// the paused handler, not a test waiting for an effect.
func pauseUntil(timeout time.Duration, cond func() bool) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			return
		}
	}
}

// killable is a worker whose connection the test closes mid-handler.
type killable struct {
	client *jetstream.Client
	killed atomic.Bool
	dead   chan struct{} // closed once the connection is closed
}

// TestKilledWorkersLeaveOneAcceptedResultPerStep runs a few hundred
// three-step instances over three workers and kills a worker (closes its
// connection) mid-handler three times, replacing it each time. Every step
// ends with exactly one accepted result; the ledger's raw invocation count
// shows what at-least-once delivery cost.
func TestKilledWorkersLeaveOneAcceptedResultPerStep(t *testing.T) {
	t.Parallel()
	n := 300
	switch {
	case testing.Short():
		n = 60
	case raceDetector:
		n = 150
	}
	const kills = 3
	e := jftest.Start(t, jetstream.Config{WorkerAckWait: time.Second})
	e.Register(fmt.Sprintf(chainDef, "kchain", "kstep"))
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	l := newEffectLedger()
	var due atomic.Int32 // kills whose threshold was reached
	caught := make(chan *killable, kills)
	handler := func(w *killable) worker.Handler {
		return func(_ context.Context, t *worker.Task) (any, error) {
			k, calls := l.beginCount(t.EffectKey)
			if calls%(3*n/4) == 0 && calls/(3*n/4) <= kills {
				due.Add(1) // kills fall due after 1/4, 2/4 and 3/4 of the steps' calls
			}
			if !w.killed.Load() {
				if p := due.Load(); p > 0 && due.CompareAndSwap(p, p-1) {
					w.killed.Store(true)
					caught <- w
				}
			}
			if w.killed.Load() {
				<-w.dead // the connection closes under this handler
			}
			out := fmt.Sprintf("%s#%d", t.EffectKey, k)
			l.end(t.EffectKey, out)
			return out, nil
		}
	}
	start := func() {
		w := &killable{client: e.NewClient(), dead: make(chan struct{})}
		e.Worker(w.client, worker.Config{Concurrency: 8}, map[string]worker.Handler{"kstep": handler(w)})
	}
	for i := 0; i < 3; i++ {
		start()
	}
	ids := make([]string, n)
	for i := range ids {
		key := fmt.Sprint(i)
		ids[i] = workflow.InstanceID("kchain", key)
		require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "kchain", EventKey: key, Payload: []byte(`{}`)}))
	}
	began := time.Now()
	for i := 0; i < kills; i++ {
		select {
		case w := <-caught:
			w.client.Close()
			start()
			close(w.dead)
		case <-time.After(60 * time.Second):
			t.Fatalf("kill %d never fell due", i+1)
		}
	}
	for _, id := range ids {
		e.WaitTerminal(id, 60*time.Second)
	}
	took := time.Since(began)
	checkAcceptedOnce(t, e, l, ids)
	total, keys, repeated, most := l.summary()
	require.Equal(t, 3*n, keys)
	t.Logf("killed %d workers mid-handler during %d instances (%d steps) in %s: raw handler invocations %d (%d steps ran more than once, at most %d times); accepted results exactly %d; stale results ignored: %d",
		kills, n, 3*n, took.Round(time.Millisecond), total, repeated, most, 3*n, d.Stats().StaleEvents)
}
