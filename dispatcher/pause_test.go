package dispatcher_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

const pausedDef = `
name: pz
version: 1
steps:
  - {name: a, kind: task, task: pz-a, next: b}
  - {name: b, kind: task, task: pz-b}
`

// runLedger counts the handler runs per instance and step.
type runLedger struct {
	mu   sync.Mutex
	runs map[string]int
}

func (l *runLedger) handler(ctx context.Context, t *worker.Task) (any, error) {
	l.mu.Lock()
	l.runs[t.Instance+"/"+t.Step]++
	l.mu.Unlock()
	return map[string]any{"ok": true}, nil
}

func (l *runLedger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.runs {
		n += c
	}
	return n
}

type pauseEnv struct {
	*jftest.Env
	t      *testing.T
	ledger *runLedger
}

func setupPause(t *testing.T, def string) *pauseEnv {
	t.Helper()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(def)
	l := &runLedger{runs: map[string]int{}}
	return &pauseEnv{Env: e, t: t, ledger: l}
}

func (p *pauseEnv) worker() {
	p.Worker(nil, worker.Config{Name: "w", Concurrency: 8},
		map[string]worker.Handler{"pz-a": p.ledger.handler, "pz-b": p.ledger.handler})
}

// setPaused pauses or resumes pz and waits until every dispatcher
// applied it, as jetflow pause does.
func (p *pauseEnv) setPaused(paused bool) {
	p.t.Helper()
	ctx := context.Background()
	st, _, err := p.Client.SetPaused(ctx, "pz", paused, time.Now())
	require.NoError(p.t, err)
	jftest.Eventually(p.t, 10*time.Second, func() bool {
		c, err := p.Client.AwaitPause(ctx, st.Revision, time.Second)
		return err == nil && len(c.Confirmed) > 0 && len(c.Unconfirmed) == 0
	}, "the dispatchers did not confirm the pause record")
}

func (p *pauseEnv) trigger(n int, prefix string) []string {
	p.t.Helper()
	ids := make([]string, n)
	for i := range n {
		key := fmt.Sprintf("%s%d", prefix, i)
		ids[i] = workflow.InstanceID("pz", key)
		require.NoError(p.t, p.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "pz", EventKey: key, Payload: []byte(`{}`)}))
	}
	return ids
}

// waitHeld polls until every instance exists with step's attempt held
// by the pause.
func (p *pauseEnv) waitHeld(ids []string, step string) {
	p.t.Helper()
	jftest.Eventually(p.t, 30*time.Second, func() bool {
		for _, id := range ids {
			in := p.Instance(id)
			if in == nil || in.Steps[step] == nil || in.Steps[step].Gate != workflow.GatePaused {
				return false
			}
		}
		return true
	}, "not every instance is held at step %s", step)
}

// requireNothingDispatched checks, polling for a while (a few repair
// sweeps), that no task of pz is in the task stream or was run.
func (p *pauseEnv) requireNothingDispatched(d *dispatcher.Dispatcher, base uint64) {
	p.t.Helper()
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		require.Zero(p.t, p.ledger.total(), "a handler ran while the workflow is paused")
		require.Equal(p.t, base, d.Stats().TasksPublished, "a task was published while the workflow is paused")
		qs, err := p.Client.TaskQueues(context.Background())
		require.NoError(p.t, err)
		for _, q := range qs {
			if strings.HasPrefix(q.TaskType, "pz-") {
				require.Zero(p.t, q.Stored, "tasks of %s are stored while the workflow is paused", q.TaskType)
			}
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a negative check
	}
}

// requireExactlyOnce checks that every step of every instance ran once.
func (p *pauseEnv) requireExactlyOnce(ids []string, steps ...string) {
	p.t.Helper()
	p.ledger.mu.Lock()
	defer p.ledger.mu.Unlock()
	for _, id := range ids {
		for _, s := range steps {
			require.Equal(p.t, 1, p.ledger.runs[id+"/"+s], "%s step %s ran %d times", id, s, p.ledger.runs[id+"/"+s])
		}
	}
}

// TestPauseHoldsTriggersAndResumeCompletesThem: 100 instances triggered
// while their workflow is paused are all created and none of their tasks
// is published or run; after the resume all 100 complete and every step
// ran exactly once per instance.
func TestPauseHoldsTriggersAndResumeCompletesThem(t *testing.T) {
	t.Parallel()
	p := setupPause(t, pausedDef)
	d, _ := p.Dispatcher(nil, dispatcher.Config{Name: "d1", RepairInterval: 100 * time.Millisecond})
	p.worker()
	p.setPaused(true)
	ids := p.trigger(100, "k")
	p.waitHeld(ids, "a")
	p.requireNothingDispatched(d, 0)

	p.setPaused(false)
	counts := waitAllTerminal(t, p.Env, ids, 60*time.Second)
	require.Equal(t, 100, counts[workflow.StatusCompleted])
	p.requireExactlyOnce(ids, "a", "b")
}

// TestPauseLetsARunningTaskFinish: a task that runs when the pause is set
// finishes and its result is recorded; the next step waits; the resume
// completes the instance.
func TestPauseLetsARunningTaskFinish(t *testing.T) {
	t.Parallel()
	p := setupPause(t, pausedDef)
	p.Dispatcher(nil, dispatcher.Config{Name: "d1", RepairInterval: 100 * time.Millisecond})
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	p.Worker(nil, worker.Config{Name: "w"}, map[string]worker.Handler{
		"pz-a": func(ctx context.Context, task *worker.Task) (any, error) {
			once.Do(func() { close(started) })
			<-release
			return p.ledger.handler(ctx, task)
		},
		"pz-b": p.ledger.handler,
	})
	ids := p.trigger(1, "run")
	<-started
	p.setPaused(true)
	close(release)
	p.waitHeld(ids, "b")
	in := p.Instance(ids[0])
	require.Equal(t, workflow.StepCompleted, in.Steps["a"].Status, "the task running at the pause finished")
	p.setPaused(false)
	require.Equal(t, workflow.StatusCompleted, p.WaitTerminal(ids[0], 30*time.Second).Status)
	p.requireExactlyOnce(ids, "a", "b")
}

// TestPauseHoldsWhatATimerStarts: a sleep timer that fires while the
// workflow is paused completes the sleep step, and the next step's
// attempt waits for the resume.
func TestPauseHoldsWhatATimerStarts(t *testing.T) {
	t.Parallel()
	p := setupPause(t, `
name: pz
version: 1
steps:
  - {name: a, kind: task, task: pz-a, next: nap}
  - {name: nap, kind: sleep, duration: 2s, next: b}
  - {name: b, kind: task, task: pz-b}
`)
	p.Dispatcher(nil, dispatcher.Config{Name: "d1", RepairInterval: 100 * time.Millisecond})
	p.worker()
	ids := p.trigger(1, "nap")
	jftest.Eventually(t, 30*time.Second, func() bool {
		in := p.Instance(ids[0])
		return in != nil && in.Steps["nap"] != nil
	}, "the sleep did not start")
	p.setPaused(true)
	p.waitHeld(ids, "b")
	in := p.Instance(ids[0])
	require.Equal(t, workflow.StepCompleted, in.Steps["nap"].Status)
	require.Empty(t, in.Timers, "no timeout or timer runs for the held attempt")
	p.setPaused(false)
	require.Equal(t, workflow.StatusCompleted, p.WaitTerminal(ids[0], 30*time.Second).Status)
	p.requireExactlyOnce(ids, "a", "b")
}

// TestPauseSurvivesADispatcherRestart: triggers that arrive while the
// only dispatcher is down and the workflow is paused are held by the
// dispatcher that starts next (it applies the pause records before its
// first event), and the resume releases them.
func TestPauseSurvivesADispatcherRestart(t *testing.T) {
	t.Parallel()
	p := setupPause(t, pausedDef)
	_, run := p.Dispatcher(nil, dispatcher.Config{Name: "d1", RepairInterval: 100 * time.Millisecond})
	p.worker()
	p.setPaused(true)
	first := p.trigger(10, "before")
	p.waitHeld(first, "a")
	require.NoError(t, run.Stop())

	later := p.trigger(10, "while-down")
	d2, _ := p.Dispatcher(nil, dispatcher.Config{Name: "d2", RepairInterval: 100 * time.Millisecond})
	ids := append(first, later...)
	p.waitHeld(ids, "a")
	p.requireNothingDispatched(d2, 0)

	p.setPaused(false)
	counts := waitAllTerminal(t, p.Env, ids, 60*time.Second)
	require.Equal(t, len(ids), counts[workflow.StatusCompleted])
	p.requireExactlyOnce(ids, "a", "b")
}

// TestPauseReleaseLostAtResumeIsSentByTheRepairLoop: the releases sent
// when the dispatcher sees the resume are lost (as when the pass that
// holds an attempt read the pause just before the resume, after the
// release sweep): the repair loop releases the held attempts.
func TestPauseReleaseLostAtResumeIsSentByTheRepairLoop(t *testing.T) {
	t.Parallel()
	p := setupPause(t, pausedDef)
	// Every release sent at the resume is dropped (whether the repair
	// loop had seen the attempts held by then or not, only its own
	// rounds can release them).
	f := &faulty{Backend: p.Client, dropPublish: func(dec workflow.Decision) bool {
		for _, ev := range dec.Events {
			if !strings.Contains(ev.MsgID, "/resume-") {
				return false
			}
		}
		return len(dec.Events) > 0
	}}
	p.Dispatcher(f, dispatcher.Config{Name: "d1", RepairInterval: 100 * time.Millisecond})
	p.worker()
	p.setPaused(true)
	ids := p.trigger(5, "lost")
	p.waitHeld(ids, "a")
	p.setPaused(false)
	counts := waitAllTerminal(t, p.Env, ids, 90*time.Second)
	require.Equal(t, len(ids), counts[workflow.StatusCompleted])
	p.requireExactlyOnce(ids, "a", "b")
}

// TestPauseHoldsAttemptsQueuedAtASlot: attempts that already wait for a
// concurrency slot when the pause is set are held when the slot is
// granted (keeping it), and after the resume run one at a time, each
// once.
func TestPauseHoldsAttemptsQueuedAtASlot(t *testing.T) {
	t.Parallel()
	p := setupPause(t, `
name: pz
version: 1
steps:
  - {name: a, kind: task, task: pz-a, concurrency: {limit: 1}, next: b}
  - {name: b, kind: task, task: pz-b}
`)
	d, _ := p.Dispatcher(nil, dispatcher.Config{Name: "d1", RepairInterval: 100 * time.Millisecond})
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	running, peak := 0, 0
	p.Worker(nil, worker.Config{Name: "w", Concurrency: 8}, map[string]worker.Handler{
		"pz-a": func(ctx context.Context, task *worker.Task) (any, error) {
			mu.Lock()
			running++
			peak = max(peak, running)
			mu.Unlock()
			defer func() { mu.Lock(); running--; mu.Unlock() }()
			once.Do(func() { close(started) })
			<-release
			return p.ledger.handler(ctx, task)
		},
		"pz-b": p.ledger.handler,
	})
	ids := p.trigger(5, "slot")
	<-started
	jftest.Eventually(t, 30*time.Second, func() bool {
		waiting := 0
		for _, id := range ids {
			if in := p.Instance(id); in != nil && in.Steps["a"] != nil && in.Steps["a"].Gate == workflow.GateSlot {
				waiting++
			}
		}
		return waiting == 4
	}, "four attempts do not wait for the slot")
	p.setPaused(true)
	published := d.Stats().TasksPublished
	close(release)
	// The first instance's step a ends and frees the slot; the next in
	// line gets it and is held by the pause, keeping it.
	jftest.Eventually(t, 30*time.Second, func() bool {
		for _, id := range ids {
			in := p.Instance(id)
			if in != nil && in.Steps["a"] != nil && in.Steps["a"].Gate == workflow.GatePaused && in.Steps["a"].Held == workflow.GateSlot {
				return true
			}
		}
		return false
	}, "no attempt is held with its slot")
	require.Equal(t, 1, p.ledger.total(), "only the attempt that ran before the pause ran")
	require.LessOrEqual(t, d.Stats().TasksPublished, published+0, "nothing was published after the pause")
	p.setPaused(false)
	counts := waitAllTerminal(t, p.Env, ids, 60*time.Second)
	require.Equal(t, 5, counts[workflow.StatusCompleted])
	p.requireExactlyOnce(ids, "a", "b")
	require.Equal(t, 1, peak, "the limit held")
}
