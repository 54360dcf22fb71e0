package security_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/security"
	"github.com/jetflow/jetflow/tasktoken"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// The workflow exercises every kind of request the runtime roles make:
// triggers, tasks and results, a message-schedule timer, a signal, a bulk
// step (child starts, barriers, a recount), a step run at most once
// (the effects bucket) and the completion notice.
const (
	parentDef = `
name: secure-order
version: 1
trigger: {subject: orders.created, key: id}
steps:
  - {name: check, kind: task, task: echo, next: nap}
  - {name: nap, kind: sleep, duration: 1s, next: approve}
  - {name: approve, kind: wait, signal: approved, timeout: 5m, next: notify}
  - {name: notify, kind: bulk, workflow: secure-child, items: input.items, next: charge}
  - {name: charge, kind: task, task: echo, once: true}
`
	childDef = `
name: secure-child
version: 1
steps:
  - {name: one, kind: task, task: echo}
`
)

func echo(_ context.Context, t *worker.Task) (any, error) { return t.Input() }

// TestRolesRunAWorkflow: with the users and permissions `jetflow security
// init` generates, the admin provisions and registers, a dispatcher, a
// worker and a producer run a workflow end to end, and an operator
// follows, signals and reads it, without a single permissions violation
// beyond the worker's attempt to create its consumer (denied, so it binds
// the provisioned one).
func TestRolesRunAWorkflow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	defs := parseDefs(t, parentDef, childDef)
	s := startSecured(t, securedOptions{scope: security.ScopeOf(defs)})

	admin, adminLog := s.connect(security.Admin, jetstream.Config{})
	require.NoError(t, admin.Provision(ctx))
	for i, d := range defs {
		require.NoError(t, admin.PutDefinition(ctx, d, []byte([]string{parentDef, childDef}[i])))
		if d.Trigger != nil {
			require.NoError(t, admin.EnsureTriggerSubjects(ctx, d.Trigger.Subject))
		}
	}
	_, err := admin.EnsureTaskConsumer(ctx, "echo")
	require.NoError(t, err)

	dc, dispatcherLog := s.connect(security.Dispatcher, jetstream.Config{})
	require.NoError(t, dc.Provision(ctx), "a dispatcher binds what the admin provisioned")
	key, err := tasktoken.NewKey()
	require.NoError(t, err)
	tokens, err := tasktoken.Static(tasktoken.KeySet{Keys: []tasktoken.Key{key}})
	require.NoError(t, err)
	d, err := dispatcher.New(dc, dispatcher.Config{StatsInterval: -1, RetryDelay: 200 * time.Millisecond, Logger: jftest.Logger(t), TaskTokens: tokens})
	require.NoError(t, err)
	runInBackground(t, d.Run)

	wc, workerLog := s.connect(security.Worker, jetstream.Config{})
	require.NoError(t, wc.Bind(ctx))
	w, err := worker.New(jftest.App(wc), worker.Config{Logger: jftest.Logger(t)})
	require.NoError(t, err)
	require.NoError(t, w.Handle("echo", echo))
	runInBackground(t, w.Run)

	oc, operatorLog := s.connect(security.Operator, jetstream.Config{})
	require.NoError(t, oc.Bind(ctx))
	done := make(chan string, 16)
	sub, err := oc.SubscribeDone("*", func(id string, _ workflow.Status) { done <- id })
	require.NoError(t, err)
	defer sub.Stop()

	// The input is larger than what a task message carries inline, so the
	// worker reads it from the data bucket.
	pc, producerLog := s.connect(security.Producer, jetstream.Config{})
	pad := strings.Repeat("x", 2*jetstream.InlineLimit)
	_, err = pc.Publish(ctx, "orders.created", []byte(`{"id":"o-1","items":[1,2,3],"pad":"`+pad+`"}`), nil)
	require.NoError(t, err)
	// Bad input on either side is dead-lettered by the role that sees it.
	_, err = pc.Publish(ctx, "orders.created", []byte(`not json`), nil)
	require.NoError(t, err)
	require.NoError(t, admin.PublishRaw(ctx, jetstream.TaskSubject("echo"), []byte{0xc1}))

	id := workflow.InstanceID("secure-order", "o-1")
	jftest.Eventually(t, 30*time.Second, func() bool {
		in, _, err := oc.GetInstance(ctx, id)
		return err == nil && in.Steps["approve"] != nil && in.Steps["approve"].Status == workflow.StepRunning
	}, "instance %s never waited for its signal", id)
	require.NoError(t, oc.Signal(ctx, id, "approved", []byte(`{"by":"ann"}`), "s1"))
	var inst *workflow.Instance
	jftest.Eventually(t, 60*time.Second, func() bool {
		inst, _, err = oc.GetInstance(ctx, id)
		return err == nil && inst.Status.Terminal()
	}, "instance %s did not finish", id)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	out, err := oc.LoadData(ctx, inst.OutputRef)
	require.NoError(t, err)
	require.Contains(t, out, "pad")
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the operator saw no completion notice")
	}

	// The operator's other reads and acts.
	ids, err := oc.ListInstanceIDs(ctx)
	require.NoError(t, err)
	require.Len(t, ids, 4) // the parent and three children
	got, err := oc.Definitions(ctx)
	require.NoError(t, err)
	require.Len(t, got, 2)
	_, err = oc.DeadLetters(ctx, 10)
	require.NoError(t, err)
	stats, err := oc.CollectStats(ctx, time.Second)
	require.NoError(t, err)
	require.Len(t, stats, 1, "the dispatcher answers the operator's stats request")
	// Presence: the dispatcher and the worker announce themselves, the
	// operator reads who is there and the task queues.
	jftest.Eventually(t, 30*time.Second, func() bool {
		ws, werr := oc.Present(ctx, jetstream.PresenceWorker)
		ds, derr := oc.Present(ctx, jetstream.PresenceDispatcher)
		return werr == nil && derr == nil && len(ws) == 1 && len(ds) == 1 && slices.Equal(ws[0].TaskTypes, []string{"echo"})
	}, "the operator does not see the worker and the dispatcher")
	queues, err := oc.TaskQueues(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, queues)
	_, err = oc.TaskQueue(ctx, "echo")
	require.NoError(t, err)
	// What jetflow explain reads besides: a task message, bulk barriers.
	_, err = oc.FindTask(ctx, "echo", workflow.TaskMsgID(id, "check", 1))
	require.NoError(t, err)
	_, _, err = oc.BarrierIndexes(ctx, id, "notify")
	require.NoError(t, err)
	jftest.Eventually(t, 30*time.Second, func() bool {
		reg := prometheus.NewRegistry()
		reg.MustRegister(d.Collector())
		fams, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range fams {
			if f.GetName() == "jetflow_task_backlog" {
				return len(f.GetMetric()) > 0
			}
		}
		return false
	}, "the dispatcher never read the task queues")
	require.NoError(t, oc.PublishStart(ctx, jetstream.Start{Workflow: "secure-child", EventKey: "manual", Payload: []byte(`{}`)}))
	child := workflow.InstanceID("secure-child", "manual")
	jftest.Eventually(t, 30*time.Second, func() bool {
		in, _, err := oc.GetInstance(ctx, child)
		return err == nil && in.Status == workflow.StatusCompleted
	}, "explicitly started %s did not finish", child)
	require.NoError(t, oc.PublishEvent(ctx, workflow.Event{Kind: workflow.EventCancel, Instance: child, Reason: "late"}, "cancel/"+child))
	// The worker role may publish results, but only with the task's token
	// (task tokens): one it makes up is dead-lettered.
	require.NoError(t, wc.PublishEvent(ctx, workflow.Event{Kind: workflow.EventResult, Instance: child, Step: "one", Attempt: 1, Token: "00000000.AAAAAAAAAAAAAAAAAAAAAA"}, "forged"))
	var dls []jetstream.DeadLetter
	jftest.Eventually(t, 30*time.Second, func() bool {
		dls, err = oc.DeadLetters(ctx, 10)
		return err == nil && len(dls) == 3
	}, "want the bad trigger, the bad task and the forged result dead-lettered, got %v (%v)", dls, err)
	require.ElementsMatch(t, []string{"dispatcher", "worker", "dispatcher"}, []string{dls[0].Component, dls[1].Component, dls[2].Component})
	forged := slices.IndexFunc(dls, func(dl jetstream.DeadLetter) bool { return strings.HasPrefix(dl.Reason, "forged result") })
	require.GreaterOrEqual(t, forged, 0, "%v", dls)
	// Operators replay and remove dead letters (jetflow dlq replay,
	// purge): the bad trigger goes back on orders.created (and is
	// rejected again), once.
	trigIdx := slices.IndexFunc(dls, func(dl jetstream.DeadLetter) bool {
		return dl.Component == "dispatcher" && !strings.HasPrefix(dl.Reason, "forged result")
	})
	require.GreaterOrEqual(t, trigIdx, 0, "%v", dls)
	trig := dls[trigIdx]
	require.NoError(t, oc.ReplayDeadLetter(ctx, trig))
	require.ErrorIs(t, oc.ReplayDeadLetter(ctx, trig), jetstream.ErrAlreadyReplayed)
	require.NoError(t, oc.PurgeDeadLetter(ctx, trig.Seq))
	// Operators pause and resume workflows (jetflow pause), list the
	// pause records (jetflow definitions), and see the dispatcher apply
	// them.
	st, changed, err := oc.SetPaused(ctx, "secure-order", true, time.Now())
	require.NoError(t, err)
	require.True(t, changed)
	jftest.Eventually(t, 30*time.Second, func() bool {
		c, err := oc.AwaitPause(ctx, st.Revision, time.Second)
		return err == nil && len(c.Confirmed) == 1 && len(c.Unconfirmed) == 0
	}, "the dispatcher did not confirm the pause")
	pauses, err := oc.Pauses(ctx)
	require.NoError(t, err)
	require.True(t, pauses["secure-order"].Paused)
	_, changed, err = oc.SetPaused(ctx, "secure-order", false, time.Now())
	require.NoError(t, err)
	require.True(t, changed)

	for _, l := range []*roleLog{adminLog, dispatcherLog, producerLog, operatorLog} {
		require.Empty(t, l.violations(), "%s was denied something it needs:\n%s", l.role, l)
	}
	// No seed in any log or in the stats.
	for _, r := range security.Roles() {
		seed, err := os.ReadFile(filepath.Join(s.res.Dir, security.SeedFile(r)))
		require.NoError(t, err)
		secret := strings.TrimSpace(string(seed))
		for _, l := range []*roleLog{adminLog, dispatcherLog, workerLog, producerLog, operatorLog} {
			require.NotContains(t, l.String(), secret)
		}
		for _, st := range stats {
			require.NotContains(t, string(st), secret)
		}
	}
	require.Equal(t, []string{"$JS.API.CONSUMER.CREATE.JETFLOW_TASKS.worker_echo.jetflow.task.echo"}, workerLog.violations(),
		"the worker tries to create its consumer once, is denied, and binds the provisioned one:\n%s", workerLog)

	// The dispatcher answers stats requests only on operators' inboxes:
	// an operator who names a stream deletion as the reply subject gets
	// the dispatcher denied, not the stream deleted.
	nc, _ := s.raw(security.Operator)
	deleteTasks := "$JS.API.STREAM.DELETE." + jetstream.StreamTasks
	require.NoError(t, nc.PublishRequest(jetstream.StatsSubject, deleteTasks, nil))
	jftest.Eventually(t, 30*time.Second, func() bool {
		return slices.Contains(dispatcherLog.violations(), deleteTasks)
	}, "the dispatcher's answer to %s was not denied:\n%s", deleteTasks, dispatcherLog)
	_, err = admin.StreamCounts(ctx)
	require.NoError(t, err, "the task stream still exists")
}

func parseDefs(t *testing.T, srcs ...string) []*workflow.Definition {
	t.Helper()
	var out []*workflow.Definition
	for _, src := range srcs {
		d, err := workflow.Parse("test.yaml", []byte(src))
		require.NoError(t, err)
		out = append(out, d)
	}
	return out
}

func runInBackground(t *testing.T, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !strings.Contains(err.Error(), "context canceled") {
			t.Errorf("component stopped with %v", err)
		}
	})
}
