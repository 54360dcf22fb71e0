package security_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/security"
	"github.com/jetflow/jetflow/workflow"
)

// requireDenied checks that err is the server's permissions violation
// for a subject starting with subject (not a timeout, not another error).
func requireDenied(t *testing.T, err error, subject string) {
	t.Helper()
	require.Error(t, err)
	var pe *jetstream.PermissionError
	require.True(t, errors.As(err, &pe), "want a permissions violation on %s, got: %v", subject, err)
	require.True(t, errors.Is(err, jetstream.ErrPermissionDenied))
	require.True(t, strings.HasPrefix(pe.Subject, subject), "violation on %s, want %s...", pe.Subject, subject)
}

// requireRawDenied checks that a raw connection's request was refused
// with a permissions violation on subject (reported asynchronously).
func requireRawDenied(t *testing.T, errs <-chan error, subject string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject) {
				return
			}
		case <-timeout:
			t.Fatalf("no permissions violation on %s was reported", subject)
		}
	}
}

// TestForbiddenOperationsAreDenied: each thing a role must not do is
// refused by the server with a permissions violation that the caller
// sees as such at once (RequestTimeout is a minute here: a violation
// seen only as a timeout would fail the test), while what the role needs
// next to it works.
func TestForbiddenOperationsAreDenied(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	defs := parseDefs(t, parentDef, childDef)
	s := startSecured(t, securedOptions{scope: security.ScopeOf(defs)})
	cfg := jetstream.Config{RequestTimeout: time.Minute}

	admin, _ := s.connect(security.Admin, cfg)
	require.NoError(t, admin.Provision(ctx))
	for i, d := range defs {
		require.NoError(t, admin.PutDefinition(ctx, d, []byte([]string{parentDef, childDef}[i])))
		if d.Trigger != nil {
			require.NoError(t, admin.EnsureTriggerSubjects(ctx, d.Trigger.Subject))
		}
	}
	_, err := admin.EnsureTaskConsumer(ctx, "echo")
	require.NoError(t, err)

	dispatcher, _ := s.connect(security.Dispatcher, cfg)
	require.NoError(t, dispatcher.Provision(ctx))
	worker, _ := s.connect(security.Worker, cfg)
	require.NoError(t, worker.Bind(ctx))
	producer, _ := s.connect(security.Producer, cfg)
	operator, _ := s.connect(security.Operator, cfg)
	require.NoError(t, operator.Bind(ctx))

	id := workflow.InstanceID("secure-order", "victim")
	inst := &workflow.Instance{ID: id, Workflow: "secure-order", Version: 1, Status: workflow.StatusRunning}
	task := workflow.Task{Instance: id, Step: "check", Type: "echo", Attempt: 1, InputRef: workflow.InputKey(id)}
	result := workflow.Event{Kind: workflow.EventResult, Instance: id, Step: "check", Attempt: 1}
	cancel := workflow.Event{Kind: workflow.EventCancel, Instance: id, Reason: "forged"}
	signal := workflow.Event{Kind: workflow.EventSignal, Instance: id, Signal: "approved"}
	def := defs[0]
	evil := *def
	evil.Version = 2

	// Worker: no instance state, no data but its outputs, no triggers,
	// tasks, cancels or signals, no definitions, no purge.
	t.Run("worker writes an instance", func(t *testing.T) {
		_, err := worker.PutInstance(ctx, inst, 0, false)
		requireDenied(t, err, "$KV.jetflow_instances."+id)
	})
	t.Run("worker writes an instance input", func(t *testing.T) {
		requireDenied(t, worker.CreateData(ctx, workflow.InputKey(id), []byte{0xc0}), "$KV.jetflow_data."+workflow.InputKey(id))
	})
	t.Run("worker writes a barrier", func(t *testing.T) {
		key := workflow.ChildBarrierKey(id, "notify", 0, true)
		requireDenied(t, worker.CreateData(ctx, key, nil), "$KV.jetflow_data."+key)
	})
	t.Run("worker writes an effect record", func(t *testing.T) {
		// Claims and outcomes of once steps are the dispatchers' to write
		// (NATS cannot tell a create from a put, a delete or a purge).
		key := workflow.EffectKey(id, "charge")
		claim := &jetstream.Effect{Instance: id, Step: "charge", Attempt: 1, Token: "n"}
		_, err := worker.ClaimEffect(ctx, key, claim)
		requireDenied(t, err, "$KV.jetflow_effects."+key)
		_, err = worker.RecordEffect(ctx, key, claim, 1)
		requireDenied(t, err, "$KV.jetflow_effects."+key)
		nc, errs := s.raw(security.Worker)
		for _, op := range []string{"DEL", "PURGE"} {
			m := nats.NewMsg("$KV.jetflow_effects." + key)
			m.Header.Set("KV-Operation", op)
			if op == "PURGE" {
				m.Header.Set("Nats-Rollup", "sub")
			}
			require.NoError(t, nc.PublishMsg(m))
			requireRawDenied(t, errs, "$KV.jetflow_effects."+key)
		}
	})
	t.Run("worker publishes a trigger", func(t *testing.T) {
		_, err := worker.Publish(ctx, "orders.created", []byte(`{"id":"x"}`), nil)
		requireDenied(t, err, "orders.created")
	})
	t.Run("worker starts a workflow", func(t *testing.T) {
		requireDenied(t, worker.PublishStart(ctx, jetstream.Start{Workflow: "secure-order", EventKey: "x", Payload: []byte(`{}`)}), "jetflow.start.secure-order")
	})
	t.Run("worker publishes a task", func(t *testing.T) {
		requireDenied(t, worker.PublishTasks(ctx, []workflow.Task{task}), "jetflow.task.echo")
	})
	t.Run("worker cancels an instance", func(t *testing.T) {
		requireDenied(t, worker.PublishEvent(ctx, cancel, "c1"), "jetflow.event."+id+".cancel")
	})
	t.Run("worker signals an instance", func(t *testing.T) {
		requireDenied(t, worker.PublishEvent(ctx, signal, "s1"), "jetflow.event."+id+".signal")
	})
	t.Run("worker reads an instance", func(t *testing.T) {
		_, _, err := worker.GetInstance(ctx, id)
		requireDenied(t, err, "$JS.API.STREAM.MSG.GET.KV_jetflow_instances")
	})
	t.Run("worker binds a task consumer of another type", func(t *testing.T) {
		w2, _ := s.connect(security.Worker, jetstream.Config{RequestTimeout: time.Minute, NoProvision: true})
		_, err := w2.EnsureTaskConsumer(ctx, "http")
		requireDenied(t, err, "$JS.API.CONSUMER.INFO.JETFLOW_TASKS.worker_http")
	})
	t.Run("worker may do its own job", func(t *testing.T) {
		require.NoError(t, worker.CreateData(ctx, workflow.OutputKey(id, "check", 1), []byte{0xc0}))
		require.NoError(t, worker.PublishEvent(ctx, result, "r1"))
	})

	// Producer: triggers only.
	t.Run("producer publishes a result", func(t *testing.T) {
		requireDenied(t, producer.PublishEvent(ctx, result, "r2"), "jetflow.event."+id+".result")
	})
	t.Run("producer publishes a task", func(t *testing.T) {
		requireDenied(t, producer.PublishTasks(ctx, []workflow.Task{task}), "jetflow.task.echo")
	})
	t.Run("producer starts a workflow", func(t *testing.T) {
		requireDenied(t, producer.PublishStart(ctx, jetstream.Start{Workflow: "secure-order", EventKey: "x", Payload: []byte(`{}`)}), "jetflow.start.secure-order")
	})
	t.Run("producer reads KV", func(t *testing.T) {
		requireDenied(t, producer.Bind(ctx), "$JS.API.STREAM.INFO.KV_jetflow_")
		nc, errs := s.raw(security.Producer)
		_, _ = nc.Request("$JS.API.STREAM.MSG.GET.KV_jetflow_data", []byte(`{"last_by_subj":"$KV.jetflow_data.`+workflow.InputKey(id)+`"}`), 2*time.Second)
		requireRawDenied(t, errs, "$JS.API.STREAM.MSG.GET.KV_jetflow_data")
	})
	t.Run("producer may publish a trigger", func(t *testing.T) {
		_, err := producer.Publish(ctx, "orders.created", []byte(`{"id":"p1","items":[]}`), nil)
		require.NoError(t, err)
	})

	// Operator: reads, start, cancel, signal; nothing else.
	t.Run("operator publishes a result", func(t *testing.T) {
		requireDenied(t, operator.PublishEvent(ctx, result, "r3"), "jetflow.event."+id+".result")
	})
	t.Run("operator writes an instance", func(t *testing.T) {
		_, err := operator.PutInstance(ctx, inst, 0, false)
		requireDenied(t, err, "$KV.jetflow_instances."+id)
	})
	t.Run("operator publishes a task", func(t *testing.T) {
		requireDenied(t, operator.PublishTasks(ctx, []workflow.Task{task}), "jetflow.task.echo")
	})
	t.Run("operator writes a slot record", func(t *testing.T) {
		_, err := operator.UpdateSlot(ctx, "slot.secure-order.=.x", func(r workflow.SlotRecord) (workflow.SlotRecord, bool) {
			r.Holders = append(r.Holders, workflow.Holder{Instance: "evil"})
			return r, true
		})
		requireDenied(t, err, "$KV.jetflow_flow.slot.secure-order.=.x")
	})
	t.Run("operator may cancel, signal and start", func(t *testing.T) {
		require.NoError(t, operator.PublishEvent(ctx, cancel, "c2"))
		require.NoError(t, operator.Signal(ctx, id, "approved", []byte(`{}`), "s2"))
		require.NoError(t, operator.PublishStart(ctx, jetstream.Start{Workflow: "secure-child", EventKey: "op", Payload: []byte(`{}`)}))
	})

	// Only the admin changes definitions, streams and the DLQ.
	for _, c := range []struct {
		role   security.Role
		client *jetstream.Client
	}{{security.Dispatcher, dispatcher}, {security.Worker, worker}, {security.Operator, operator}} {
		t.Run(string(c.role)+" registers a definition", func(t *testing.T) {
			requireDenied(t, c.client.PutDefinition(ctx, &evil, []byte(parentDef)), "$KV.jetflow_definitions.secure-order.2")
		})
		t.Run(string(c.role)+" purges the DLQ", func(t *testing.T) {
			requireDenied(t, c.client.PurgeSubject(ctx, jetstream.StreamDLQ, jetstream.DLQSubjects), "$JS.API.STREAM.")
		})
		t.Run(string(c.role)+" adds a trigger subject", func(t *testing.T) {
			requireDenied(t, c.client.EnsureTriggerSubjects(ctx, "evil.>"), "$JS.API.STREAM.")
		})
	}
	t.Run("producer registers a definition", func(t *testing.T) {
		nc, errs := s.raw(security.Producer)
		require.NoError(t, nc.Publish("$KV.jetflow_definitions.secure-order.2", []byte(parentDef)))
		requireRawDenied(t, errs, "$KV.jetflow_definitions.secure-order.2")
	})
	// Raw JetStream API requests (no jetflow client makes them): the
	// request is published and the violation reported; no answer comes.
	for _, r := range []security.Role{security.Dispatcher, security.Worker, security.Producer, security.Operator} {
		t.Run(string(r)+" creates and deletes streams", func(t *testing.T) {
			nc, errs := s.raw(r)
			for _, req := range []struct{ subject, body string }{
				{"$JS.API.STREAM.CREATE.EVIL", `{"name":"EVIL","subjects":["evil.>"]}`},
				{"$JS.API.STREAM.DELETE." + jetstream.StreamTasks, ""},
				{"$JS.API.STREAM.DELETE." + jetstream.StreamDLQ, ""},
				{"$JS.API.STREAM.PURGE." + jetstream.StreamDLQ, ""},
			} {
				require.NoError(t, nc.PublishRequest(req.subject, nc.NewRespInbox(), []byte(req.body)))
				requireRawDenied(t, errs, req.subject)
			}
		})
		t.Run(string(r)+" sniffs jetflow traffic", func(t *testing.T) {
			for _, subject := range []string{"jetflow.>", "$KV.jetflow_data.>", ">"} {
				nc, errs := s.raw(r)
				_, err := nc.SubscribeSync(subject)
				require.NoError(t, err)
				requireRawDenied(t, errs, subject)
			}
		})
		t.Run(string(r)+" creates a consumer on the task stream", func(t *testing.T) {
			nc, errs := s.raw(r)
			subject := "$JS.API.CONSUMER.CREATE." + jetstream.StreamTasks + ".thief." + jetstream.TaskSubjects
			body := `{"stream_name":"JETFLOW_TASKS","config":{"durable_name":"thief","filter_subject":"jetflow.task.>","ack_policy":"explicit"}}`
			require.NoError(t, nc.PublishRequest(subject, nc.NewRespInbox(), []byte(body)))
			requireRawDenied(t, errs, subject)
		})
	}
	_, err = admin.StreamCounts(ctx)
	require.NoError(t, err, "every stream is still there")
	n, err := admin.PullsWaiting(ctx, jetstream.StreamTasks, "thief")
	require.NoError(t, err)
	require.Zero(t, n)
	t.Run("admin may do all of it", func(t *testing.T) {
		require.NoError(t, admin.PutDefinition(ctx, &evil, []byte(strings.Replace(parentDef, "version: 1", "version: 2", 1))))
		require.NoError(t, admin.PurgeSubject(ctx, jetstream.StreamDLQ, jetstream.DLQSubjects))
	})
}
