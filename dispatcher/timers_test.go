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

func start(t *testing.T, c *jetstream.Client, wf, key string) string {
	t.Helper()
	require.NoError(t, c.PublishStart(context.Background(), jetstream.Start{Workflow: wf, EventKey: key, Payload: []byte(`{}`)}))
	return workflow.InstanceID(wf, key)
}

func TestSleepNeverFiresEarly(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: nap
version: 1
steps:
  - {name: z, kind: sleep, duration: 2s}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	id := start(t, e.Client, "nap", "n1")
	inst := e.WaitTerminal(id, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	slept := inst.Steps["z"].Ended.Sub(inst.Steps["z"].Started)
	require.GreaterOrEqual(t, slept, 2*time.Second, "a sleep must never end early")
	t.Logf("sleep of 2s took %s (bound: 2s + up to 1s rounding to the schedule's whole second + 250ms arming + processing)", slept)
}

func TestTimersFireAfterDispatcherAndServerRestart(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: nap
version: 1
steps:
  - {name: z, kind: sleep, duration: 3s, next: after}
  - {name: after, kind: task, task: echo}
`)
	_, d1 := e.Dispatcher(nil, dispatcher.Config{RepairInterval: -1})
	id := start(t, e.Client, "nap", "r1")
	jftest.Eventually(t, 10*time.Second, func() bool {
		in := e.Instance(id)
		return in != nil && len(in.Timers) == 1
	}, "timer not set")
	require.NoError(t, d1.Stop())
	e.Restart()
	// Repairs off: the schedule itself, stored in the stream, must fire.
	e.Dispatcher(nil, dispatcher.Config{RepairInterval: -1})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	inst := e.WaitTerminal(id, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
}

// The signal path and the timeout path use two workflows: a signal raced
// against a 2 s timeout made the outcome depend on how fast the machine
// was. The signalled one has a timeout no run can reach; the other is
// never signalled, so its timeout is the only way on.
func TestSignalResumesWaitStepAndTimeoutFailsIt(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	const approval = `
name: %s
version: 1
steps:
  - {name: ask, kind: wait, signal: approved, timeout: %s, on_failure: rejected, next: done}
  - {name: done, kind: task, task: echo, input: 'steps.ask.output'}
  - {name: rejected, kind: task, task: echo}
`
	e.Register(fmt.Sprintf(approval, "approve", "24h"))
	e.Register(fmt.Sprintf(approval, "approve-by", "2s"))
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	ctx := context.Background()
	yes := start(t, e.Client, "approve", "yes")
	// A signal that arrives before the instance waits is kept for it.
	require.NoError(t, e.Client.Signal(ctx, yes, "approved", []byte(`{"by":"ann"}`), "s1"))
	require.NoError(t, e.Client.Signal(ctx, yes, "approved", []byte(`{"by":"bob"}`), "s1")) // same id: absorbed
	inst := e.WaitTerminal(yes, 10*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	out, err := e.Client.LoadData(ctx, inst.OutputRef)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"by": "ann"}, out)

	no := start(t, e.Client, "approve-by", "no")
	inst = e.WaitTerminal(no, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	require.Equal(t, workflow.StepFailed, inst.Steps["ask"].Status)
	require.Contains(t, inst.Steps["ask"].Error, `no "approved" signal within 2s`)
	require.Equal(t, workflow.StepCompleted, inst.Steps["rejected"].Status)
	require.GreaterOrEqual(t, d.Stats().Signals, uint64(1))
}

func TestRepairRecoversDeletedTask(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: lost
version: 1
steps:
  - {name: a, kind: task, task: slowpoke, retry: {max_attempts: 3, initial_interval: 1ms}}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{RepairInterval: 100 * time.Millisecond, StaleTask: time.Second})
	id := start(t, e.Client, "lost", "t1")
	jftest.Eventually(t, 10*time.Second, func() bool {
		counts, err := e.Client.StreamCounts(context.Background())
		return err == nil && counts[jetstream.StreamTasks] == 1
	}, "task not published")
	// Lose the task message: no worker will ever see attempt 1.
	require.NoError(t, e.Client.PurgeSubject(context.Background(), jetstream.StreamTasks, jetstream.TaskSubject("slowpoke")))
	var attempts sync.Map
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"slowpoke": func(_ context.Context, t *worker.Task) (any, error) {
		attempts.Store(t.Attempt, true)
		return "ok", nil
	}})
	inst := e.WaitTerminal(id, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	// Usually attempt 2; a machine slow enough that a repair (StaleTask
	// 1s) came before the purge lost that attempt's task too.
	require.GreaterOrEqual(t, inst.Steps["a"].Attempt, 2, "the repair superseded the lost attempt")
	_, ran1 := attempts.Load(1)
	require.False(t, ran1, "attempt 1 was lost, never run")
	require.GreaterOrEqual(t, d.Stats().RepairsApplied, uint64(1))
}

func TestRepairFiresLostTimer(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: nap
version: 1
steps:
  - {name: z, kind: sleep, duration: 2s}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{RepairInterval: 100 * time.Millisecond, TimerGrace: 500 * time.Millisecond})
	id := start(t, e.Client, "nap", "lost-timer")
	jftest.Eventually(t, 10*time.Second, func() bool {
		in := e.Instance(id)
		return in != nil && len(in.Timers) == 1
	}, "timer not set")
	require.NoError(t, e.Client.PurgeSubject(context.Background(), jetstream.StreamEvents, "jetflow.timer.>"))
	inst := e.WaitTerminal(id, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	require.GreaterOrEqual(t, inst.Steps["z"].Ended.Sub(inst.Steps["z"].Started), 2*time.Second)
	require.GreaterOrEqual(t, d.Stats().TimersFired, uint64(1))
}

// TestConductorSweeperRace reproduces the Conductor 3.17 failure mode at
// a higher rate: two dispatchers, each with a repair loop sweeping every
// 25 ms and forced to repair every running attempt, race real completions.
// Afterwards, from the stored state and the full revision history: every
// instance completed exactly once, no state moved backwards, and nothing
// is RUNNING with all its work terminal.
func TestConductorSweeperRace(t *testing.T) {
	t.Parallel()
	for _, mode := range []struct {
		name   string
		repair time.Duration
		force  bool
	}{
		{"forced repairs every 25ms", 25 * time.Millisecond, true},
		{"repairs every 25ms", 25 * time.Millisecond, false},
		{"repairs off (event path alone)", -1, false},
	} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			n := 3000
			switch {
			case testing.Short():
				n = 600
			case raceDetector:
				n = 1000
			}
			e := jftest.Start(t, jetstream.Config{})
			e.Register(`
name: race
version: 1
steps:
  - {name: a, kind: task, task: noop, next: b, retry: {max_attempts: 100, initial_interval: 1ms}}
  - {name: b, kind: task, task: noop, next: c, retry: {max_attempts: 100, initial_interval: 1ms}}
  - {name: c, kind: task, task: noop, retry: {max_attempts: 100, initial_interval: 1ms}}
`)
			// Watch every revision of every instance from before the first start.
			var mu sync.Mutex
			terminalWrites := map[string]int{}
			backwards := 0
			writes := int64(0) // every revision of every instance: the progress the wait below follows
			wctx, stopWatch := context.WithCancel(context.Background())
			defer stopWatch()
			ready := make(chan struct{})
			watchDone := make(chan struct{})
			go func() {
				defer close(watchDone)
				_ = e.NewClient().WatchInstances(wctx, false, func() { close(ready) }, func(in *workflow.Instance) {
					mu.Lock()
					defer mu.Unlock()
					writes++
					if terminalWrites[in.ID] > 0 {
						backwards++ // any write after a terminal one is a state change after the end
					}
					if in.Status.Terminal() {
						terminalWrites[in.ID]++
					}
				})
			}()
			<-ready
			cfg := dispatcher.Config{RepairInterval: mode.repair, ForceRepairs: mode.force, TimerGrace: 50 * time.Millisecond}
			d1, _ := e.Dispatcher(e.NewClient(), cfg)
			d2, _ := e.Dispatcher(e.NewClient(), cfg)
			var runs atomic.Int64
			e.Worker(e.NewClient(), worker.Config{Concurrency: 64}, map[string]worker.Handler{"noop": func(context.Context, *worker.Task) (any, error) {
				runs.Add(1)
				return nil, nil
			}})
			pub := e.NewClient()
			begin := time.Now()
			for i := 0; i < n; i++ {
				require.NoError(t, pub.PublishStart(context.Background(), jetstream.Start{Workflow: "race", EventKey: fmt.Sprint(i), Payload: []byte(`{}`)}))
			}
			finished := func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(terminalWrites) == n
			}
			// The point is that every instance ends, once, whatever the
			// sweeps do; how fast depends on the machine (a sweep every 25ms
			// over a thousand running instances is most of the work, and a
			// loaded machine makes it several times slower). So the wait
			// fails when no instance was written for 30s, or after 10
			// minutes in all, not at a fixed bound.
			jftest.EventuallyProgressing(t, 30*time.Second, 10*time.Minute, finished, func() int64 {
				mu.Lock()
				defer mu.Unlock()
				return writes
			}, "not every instance finished: %s", stringer(func() string {
				return unfinished(e, n, func(id string) bool {
					mu.Lock()
					defer mu.Unlock()
					return terminalWrites[id] > 0
				})
			}))
			elapsed := time.Since(begin)
			stopWatch()
			<-watchDone
			s1, s2 := d1.Stats(), d2.Stats()
			t.Logf("%d workflows (3 tasks each) completed in %s: %.0f workflows/s; handler runs %d; repairs sent %d, applied %d, lost their race %d; CAS conflicts %d; retried %d",
				n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), runs.Load(),
				s1.RepairsSent+s2.RepairsSent, s1.RepairsApplied+s2.RepairsApplied, s1.RepairsLost+s2.RepairsLost, s1.Conflicts+s2.Conflicts, s1.Retried+s2.Retried)
			mu.Lock()
			defer mu.Unlock()
			require.Zero(t, backwards, "writes after a terminal state")
			for id, k := range terminalWrites {
				require.Equal(t, 1, k, "instance %s reached a terminal state %d times", id, k)
			}
			ids, err := e.Client.ListInstanceIDs(context.Background())
			require.NoError(t, err)
			require.Len(t, ids, n)
			maxAttempt := 0
			for _, id := range ids {
				in := e.Instance(id)
				require.Equal(t, workflow.StatusCompleted, in.Status, "%s: %s", id, in.Error)
				for name, st := range in.Steps {
					require.Equal(t, workflow.StepCompleted, st.Status, "%s step %s", id, name)
					maxAttempt = max(maxAttempt, st.Attempt)
				}
			}
			t.Logf("highest attempt of a step: %d", maxAttempt)
			if mode.force {
				require.Positive(t, s1.RepairsLost+s2.RepairsLost, "repairs raced completions")
			}
		})
	}
}

// stringer formats as what f returns when formatted (a failure message
// computed only when it is printed).
type stringer func() string

func (f stringer) String() string { return f() }

// unfinished describes the instances of a sweeper race that are not
// terminal yet: how many, and the state of a few.
func unfinished(e *jftest.Env, n int, done func(id string) bool) string {
	ids, err := e.Client.ListInstanceIDs(context.Background())
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	left := 0
	for _, id := range ids {
		if done(id) {
			continue
		}
		left++
		if left > 5 {
			continue
		}
		in := e.Instance(id)
		fmt.Fprintf(&b, "\n  %s %s events=%d updated=%s", id, in.Status, in.Events, in.Updated.Format(time.RFC3339Nano))
		for name, st := range in.Steps {
			fmt.Fprintf(&b, " | %s %s attempt %d started %s", name, st.Status, st.Attempt, st.AttemptStarted.Format("15:04:05.000"))
		}
	}
	return fmt.Sprintf("%d of %d stored instances not terminal (%d started)%s", left, len(ids), n, b.String())
}
