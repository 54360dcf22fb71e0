package dispatcher_test

import (
	"context"
	"fmt"
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

const floodDef = `
name: flood
version: 1
trigger: {subject: flood.created, key: id}
steps:
  - {name: a, kind: task, task: flood-a, next: b}
  - {name: b, kind: task, task: flood-b}
`

// busyDef is the load that runs while the flood lasts.
const busyDef = `
name: busy
version: 1
steps:
  - {name: x, kind: task, task: busy, next: y}
  - {name: y, kind: task, task: busy}
`

// floodCounts is what a burst of trigger publishes did, as the
// publishers saw it.
type floodCounts struct {
	published  int // publishes acknowledged by the trigger stream
	idsPerKey  int // of one key's copies, how many carried a Nats-Msg-Id
	duplicates int // acknowledged with Duplicate=true: absorbed by layer 1
	took       time.Duration
}

// stored is how many of the publishes the trigger stream kept.
func (f floodCounts) stored() int { return f.published - f.duplicates }

func (f floodCounts) add(g floodCounts) floodCounts {
	return floodCounts{published: f.published + g.published, duplicates: f.duplicates + g.duplicates, took: f.took + g.took}
}

// floodCopy publishes copy i of the trigger for key. Three kinds, mixed:
// i%5 == 0 is a publish on the trigger subject without Nats-Msg-Id (only
// the KV guard can stop it); i%5 == 1 an explicit start on
// jetflow.start.flood; the rest publishes on the trigger subject. Copies
// with an id all carry jetstream.TriggerMsgID, so a key has one id across
// both subjects (dedup is per stream).
func floodCopy(ctx context.Context, c *jetstream.Client, key string, i int) (dup, withID bool, err error) {
	body := []byte(fmt.Sprintf(`{"id":%q,"note":"same payload every time"}`, key))
	id := jetstream.TriggerMsgID("flood", key)
	switch i % 5 {
	case 0:
		dup, err = c.Publish(ctx, "flood.created", body, nil)
		return dup, false, err
	case 1:
		dup, err = c.Publish(ctx, jetstream.StartSubject("flood"), body, map[string]string{jetstream.HeaderEventKey: key, jetstream.HeaderMsgID: id})
	default:
		dup, err = c.Publish(ctx, "flood.created", body, map[string]string{jetstream.HeaderMsgID: id})
	}
	return dup, true, err
}

// floodTriggers publishes every key copies times, concurrently from every
// client (8 goroutines each). Keys go one after another, so the copies of
// one key race each other across the connections.
func floodTriggers(t *testing.T, clients []*jetstream.Client, keys []string, copies int) floodCounts {
	t.Helper()
	type job struct {
		key  string
		copy int
	}
	jobs := make(chan job, 64)
	go func() {
		defer close(jobs)
		for _, k := range keys {
			for i := 0; i < copies; i++ {
				jobs <- job{k, i}
			}
		}
	}()
	var published, dups, withID atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	begin := time.Now()
	for _, c := range clients {
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					dup, hasID, err := floodCopy(context.Background(), c, j.key, j.copy)
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						continue
					}
					published.Add(1)
					if hasID {
						withID.Add(1)
					}
					if dup {
						dups.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		require.NoError(t, err)
	}
	require.EqualValues(t, len(keys)*copies, published.Load())
	return floodCounts{
		published: int(published.Load()), duplicates: int(dups.Load()),
		idsPerKey: int(withID.Load()) / len(keys), took: time.Since(begin),
	}
}

// waitOutDuplicateWindow publishes a trigger for key with a fresh
// Nats-Msg-Id, then publishes it again every 100ms until the trigger
// stream stops reporting it as a duplicate. The server forgets ids in the
// order it stored them, so by then every id stored before the probe is
// forgotten too: the duplicate window has passed for all of them.
func waitOutDuplicateWindow(t *testing.T, c *jetstream.Client, key string, timeout time.Duration) floodCounts {
	t.Helper()
	ctx := context.Background()
	body := []byte(fmt.Sprintf(`{"id":%q,"note":"same payload every time"}`, key))
	hdr := map[string]string{jetstream.HeaderMsgID: "probe/" + key}
	begin := time.Now()
	dup, err := c.Publish(ctx, "flood.created", body, hdr)
	require.NoError(t, err)
	require.False(t, dup, "a fresh id is not a duplicate")
	res := floodCounts{published: 1}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		select {
		case <-deadline:
			t.Fatalf("the trigger stream still remembered id probe/%s after %s", key, timeout)
		case <-tick.C:
		}
		dup, err := c.Publish(ctx, "flood.created", body, hdr)
		require.NoError(t, err)
		res.published++
		if !dup {
			res.took = time.Since(begin)
			return res
		}
		res.duplicates++
	}
}

// floodFleet is two dispatchers racing on the shared consumer, one worker
// and three publisher connections, each on its own connection.
type floodFleet struct {
	ds      []*dispatcher.Dispatcher
	runs    []*jftest.Running
	clients []*jetstream.Client
	pubs    []*jetstream.Client
}

func startFloodFleet(e *jftest.Env, handlers map[string]worker.Handler) *floodFleet {
	f := &floodFleet{}
	for i := 0; i < 2; i++ {
		c := e.NewClient()
		d, r := e.Dispatcher(c, dispatcher.Config{})
		f.ds, f.runs, f.clients = append(f.ds, d), append(f.runs, r), append(f.clients, c)
	}
	wc := e.NewClient()
	_, r := e.Worker(wc, worker.Config{Concurrency: 32}, handlers)
	f.runs, f.clients = append(f.runs, r), append(f.clients, wc)
	for i := 0; i < 3; i++ {
		c := e.NewClient()
		f.pubs, f.clients = append(f.pubs, c), append(f.clients, c)
	}
	return f
}

func (f *floodFleet) stop(t *testing.T) {
	for _, r := range f.runs {
		require.NoError(t, r.Stop())
	}
	for _, c := range f.clients {
		c.Close()
	}
}

// TestDuplicateFloodStartsEachKeyOnce floods the trigger stream with 100
// copies of each of 300 event keys from three connections — with and
// without Nats-Msg-Id, on the trigger subject and as explicit starts —
// while two dispatchers race for them and other instances run. It does it
// again after the duplicate window has passed and again after a server
// restart. Every time: one instance per key, each step run and accepted
// once, and every copy accounted for by exactly one of the two layers.
func TestDuplicateFloodStartsEachKeyOnce(t *testing.T) {
	t.Parallel()
	nKeys, copies, replays, nBusy := 300, 100, 10, 200
	switch {
	case testing.Short():
		nKeys, copies, replays, nBusy = 60, 40, 5, 40
	case raceDetector:
		copies = 25
	}
	const window = 2 * time.Second
	e := jftest.Start(t, jetstream.Config{
		DuplicateWindow: window,
		// Long ack waits: nothing here may be redelivered for being slow,
		// so every count below is exact.
		DispatcherAckWait: 30 * time.Second,
		WorkerAckWait:     30 * time.Second,
	})
	e.Register(floodDef)
	e.Register(busyDef)
	l := newEffectLedger()
	handlers := map[string]worker.Handler{"flood-a": l.handler("w"), "flood-b": l.handler("w"), "busy": l.handler("w")}
	ctx := context.Background()
	keys := make([]string, nKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("order-%04d", i)
	}
	streamed := func() int {
		counts, err := e.Client.StreamCounts(ctx)
		require.NoError(t, err)
		return int(counts[jetstream.StreamTriggers])
	}
	// check asserts the state every phase must leave: exactly one
	// instance per key (and per busy start), completed, each step with one
	// accepted result (attempt 1, one event per step) and one handler call.
	check := func() {
		t.Helper()
		ids, err := e.Client.ListInstanceIDs(ctx)
		require.NoError(t, err)
		require.Len(t, ids, nKeys+nBusy, "one instance per event key, nothing else")
		for _, k := range keys {
			id := workflow.InstanceID("flood", k)
			inst := e.Instance(id)
			require.NotNil(t, inst, k)
			require.Equal(t, workflow.StatusCompleted, inst.Status, "%s: %s", k, inst.Error)
			require.EqualValues(t, 3, inst.Events, "%s: start + one accepted result per step", k)
			for _, step := range []string{"a", "b"} {
				require.Equal(t, workflow.StepCompleted, inst.Steps[step].Status, k)
				require.Equal(t, 1, inst.Steps[step].Attempt, k)
				require.Equal(t, 1, l.callsOf(workflow.EffectKey(id, step)), "%s step %s ran more than once", k, step)
			}
		}
		for i := 0; i < nBusy; i++ {
			inst := e.Instance(workflow.InstanceID("busy", fmt.Sprint(i)))
			require.NotNil(t, inst)
			require.Equal(t, workflow.StatusCompleted, inst.Status)
			require.EqualValues(t, 3, inst.Events)
		}
		require.Equal(t, 2*(nKeys+nBusy), l.totalCalls(), "handler invocations")
	}

	// Phase 1: the flood, under load.
	fleet := startFloodFleet(e, handlers)
	busyErr := make(chan error, 1)
	go func() {
		for i := 0; i < nBusy; i++ {
			if err := fleet.pubs[0].PublishStart(ctx, jetstream.Start{Workflow: "busy", EventKey: fmt.Sprint(i), Payload: []byte(`{}`)}); err != nil {
				busyErr <- err
				return
			}
		}
		busyErr <- nil
	}()
	began := time.Now()
	f1 := floodTriggers(t, fleet.pubs, keys, copies)
	require.NoError(t, <-busyErr)
	stored1 := f1.stored() + nBusy
	require.Equal(t, stored1, streamed(), "layer 1: the stream keeps exactly the publishes not acked as duplicates")
	require.Positive(t, f1.duplicates, "layer 1 absorbed nothing")
	require.LessOrEqual(t, f1.duplicates, nKeys*(f1.idsPerKey-1), "the first copy of each id is stored")
	jftest.Eventually(t, 60*time.Second, func() bool {
		s := sumStats(fleet.ds...)
		return int(s.Started+s.DuplicateTriggers) >= stored1
	}, "flood not absorbed: %+v", sumStats(fleet.ds...))
	require.EqualValues(t, nKeys+nBusy, sumStats(fleet.ds...).Started, "instances started: one per event key")
	jftest.Eventually(t, 60*time.Second, func() bool {
		return int(sumStats(fleet.ds...).Completed) >= nKeys+nBusy
	}, "instances did not complete: %+v", sumStats(fleet.ds...))
	processed := time.Since(began)
	waitQuiet(t, e, 30*time.Second)
	s1 := sumStats(fleet.ds...)
	require.EqualValues(t, nKeys+nBusy, s1.Started)
	require.EqualValues(t, nKeys+nBusy, s1.Completed)
	require.EqualValues(t, stored1-nKeys-nBusy, s1.DuplicateTriggers, "layer 2: every stored duplicate stopped by the KV guard")
	require.Equal(t, s1.Triggers, s1.Started+s1.DuplicateTriggers, "each trigger delivery is one start or one counted duplicate")
	require.Zero(t, s1.DuplicateDiffer)
	require.Zero(t, s1.DeadLettered)
	check()
	t.Logf("flood: %d publishes in %s (%.0f/s) from 3 connections; layer 1 (Nats-Msg-Id) absorbed %d, layer 2 (instance key in KV) absorbed %d; %d instances started; all absorbed and %d instances completed in %s (%.0f triggers/s); %d CAS conflicts between the two dispatchers",
		f1.published, f1.took.Round(time.Millisecond), float64(f1.published)/f1.took.Seconds(),
		f1.duplicates, s1.DuplicateTriggers, s1.Started, s1.Completed, processed.Round(time.Millisecond),
		float64(stored1)/processed.Seconds(), s1.Conflicts)

	// Phase 2: replays after the duplicate window. Layer 1 has forgotten
	// every id, so at least one copy per key gets through; layer 2 must
	// stop all of them.
	probe := waitOutDuplicateWindow(t, fleet.pubs[1], keys[0], 30*time.Second)
	f2 := floodTriggers(t, fleet.pubs, keys, replays)
	require.LessOrEqual(t, f2.duplicates, nKeys*(f2.idsPerKey-1), "after the window the first copy of each id is stored again")
	stored2 := f2.stored() + probe.stored()
	require.Equal(t, stored1+stored2, streamed())
	jftest.Eventually(t, 30*time.Second, func() bool {
		s := sumStats(fleet.ds...)
		return int(s.Started+s.DuplicateTriggers) >= stored1+stored2
	}, "replays not absorbed: %+v", sumStats(fleet.ds...))
	waitQuiet(t, e, 30*time.Second)
	s2 := sumStats(fleet.ds...)
	require.EqualValues(t, nKeys+nBusy, s2.Started, "a replay after the window started an instance")
	require.EqualValues(t, s1.DuplicateTriggers+uint64(stored2), s2.DuplicateTriggers)
	require.Equal(t, s2.Triggers, s2.Started+s2.DuplicateTriggers)
	check()
	t.Logf("after the window (probe waited %s): %d replays, layer 1 absorbed %d, layer 2 absorbed %d",
		probe.took.Round(time.Millisecond), f2.published+probe.published, f2.duplicates+probe.duplicates, stored2)

	// Phase 3: replays after a server restart, to fresh dispatchers with
	// empty caches.
	fleet.stop(t)
	e.Restart()
	fleet = startFloodFleet(e, handlers)
	f3 := floodTriggers(t, fleet.pubs, keys, replays)
	require.Equal(t, stored1+stored2+f3.stored(), streamed(), "the trigger stream survived the restart")
	jftest.Eventually(t, 30*time.Second, func() bool {
		s := sumStats(fleet.ds...)
		return int(s.DuplicateTriggers) >= f3.stored()
	}, "replays after restart not absorbed: %+v", sumStats(fleet.ds...))
	waitQuiet(t, e, 30*time.Second)
	s3 := sumStats(fleet.ds...)
	require.Zero(t, s3.Started, "a replay after the restart started an instance")
	require.Equal(t, s3.Triggers, s3.DuplicateTriggers, "every trigger delivered after the restart is a duplicate")
	check()
	t.Logf("after restart: %d replays, layer 1 absorbed %d, layer 2 absorbed %d; handler invocations in all: %d for %d steps",
		f3.published, f3.duplicates, s3.DuplicateTriggers, l.totalCalls(), 2*(nKeys+nBusy))
}

// TestDuplicateStartWritesNoData: a duplicate start whose payload differs
// takes another branch at once; the values it would write must not land
// under keys the real instance writes later (data keys are write-once and
// the first value stands). Here the duplicate would route straight to b
// and write b's input "bogus"; the real instance reaches b after a and
// must run it with "real". With on_duplicate: rerun each trigger's input
// has its own key, so the duplicate's transition really sees its own
// payload (with ignore, both read the first payload under the instance's
// input key).
func TestDuplicateStartWritesNoData(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: branchy
version: 1
trigger: {subject: branchy.created, key: id, on_duplicate: rerun}
steps:
  - name: route
    kind: switch
    cases:
      - {when: input.fast, next: b}
    default: a
  - {name: a, kind: task, task: gate, next: b}
  - {name: b, kind: task, task: echo, input: 'input.tag'}
`)
	_, first := e.Dispatcher(nil, dispatcher.Config{})
	release := make(chan struct{})
	var seen sync.Map
	e.Worker(e.NewClient(), worker.Config{}, map[string]worker.Handler{
		"gate": func(ctx context.Context, _ *worker.Task) (any, error) {
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return nil, nil
		},
		"echo": func(_ context.Context, task *worker.Task) (any, error) {
			in, err := task.Input()
			seen.Store(task.Instance, in)
			return in, err
		},
	})
	ctx := context.Background()
	id := workflow.InstanceID("branchy", "x")
	require.NoError(t, e.Client.PublishRaw(ctx, "branchy.created", []byte(`{"id":"x","fast":false,"tag":"real"}`)))
	jftest.Eventually(t, 30*time.Second, func() bool {
		inst := e.Instance(id)
		return inst != nil && inst.Steps["a"] != nil
	}, "instance waits in step a")
	// A dispatcher that has not cached the instance (a replica, or after
	// a restart) gets the duplicate: same key, other payload, no message
	// id (so the stream keeps it).
	require.NoError(t, first.Stop())
	d, _ := e.Dispatcher(e.NewClient(), dispatcher.Config{})
	require.NoError(t, e.Client.PublishRaw(ctx, "branchy.created", []byte(`{"id":"x","fast":true,"tag":"bogus"}`)))
	jftest.Eventually(t, 30*time.Second, func() bool {
		return d.Stats().DuplicateTriggers > 0
	}, "duplicate seen")
	close(release)
	inst := e.WaitTerminal(id, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	got, _ := seen.Load(id)
	require.Equal(t, "real", got)
}
