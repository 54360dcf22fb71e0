package security_test

import (
	"context"
	"errors"
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

// TestEffectRequestsNeedTheTaskToken: on the generated config, with task
// tokens, a worker claims and records a once step only through a
// dispatcher, which refuses (and writes nothing for) a request without
// the attempt's token, for another instance's step, for a claim that is
// not the requester's, or naming an output that is not the attempt's;
// the worker holding the token claims and records once.
func TestEffectRequestsNeedTheTaskToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	defs := parseDefs(t, parentDef, childDef)
	s := startSecured(t, securedOptions{scope: security.ScopeOf(defs)})
	admin, _ := s.connect(security.Admin, jetstream.Config{})
	require.NoError(t, admin.Provision(ctx))

	dc, dispatcherLog := s.connect(security.Dispatcher, jetstream.Config{})
	require.NoError(t, dc.Provision(ctx))
	key, err := tasktoken.NewKey()
	require.NoError(t, err)
	keys := tasktoken.KeySet{Keys: []tasktoken.Key{key}}
	ring, err := tasktoken.Static(keys)
	require.NoError(t, err)
	d, err := dispatcher.New(dc, dispatcher.Config{StatsInterval: -1, Logger: jftest.Logger(t), TaskTokens: ring})
	require.NoError(t, err)
	runInBackground(t, d.Run)

	wc, workerLog := s.connect(security.Worker, jetstream.Config{})
	require.NoError(t, wc.Bind(ctx))
	id := workflow.InstanceID("secure-order", "victim")
	effect := workflow.EffectKey(id, "charge")
	now := time.Now()
	valid := keys.Sign(id, "charge", 1, now)
	other, err := tasktoken.NewKey()
	require.NoError(t, err)
	request := func(op jetstream.EffectOp, r jetstream.EffectRequest) (*jetstream.EffectReply, error) {
		var reply *jetstream.EffectReply
		var err error
		// The first request may come before the dispatcher serves.
		jftest.Eventually(t, 30*time.Second, func() bool {
			reply, err = wc.RequestEffect(ctx, op, &r)
			return !errorsIsNoDispatcher(err)
		}, "no dispatcher answered")
		return reply, err
	}
	unclaimed := func(t *testing.T) {
		t.Helper()
		_, _, err := admin.GetEffect(ctx, effect)
		require.ErrorIs(t, err, workflow.ErrNotFound, "a refused request wrote the effect record")
	}

	for name, r := range map[string]jetstream.EffectRequest{
		"no token":          {Instance: id, Step: "charge", Attempt: 1, Nonce: "n1"},
		"garbage token":     {Instance: id, Step: "charge", Attempt: 1, Nonce: "n1", Token: "not-a-token"},
		"another key":       {Instance: id, Step: "charge", Attempt: 1, Nonce: "n1", Token: tasktoken.KeySet{Keys: []tasktoken.Key{other}}.Sign(id, "charge", 1, now)},
		"another instance":  {Instance: id, Step: "charge", Attempt: 1, Nonce: "n1", Token: keys.Sign(workflow.InstanceID("secure-order", "mine"), "charge", 1, now)},
		"another attempt":   {Instance: id, Step: "charge", Attempt: 2, Nonce: "n1", Token: valid},
		"no nonce":          {Instance: id, Step: "charge", Attempt: 1, Token: valid},
		"record unclaimed":  {Instance: id, Step: "charge", Attempt: 1, Nonce: "n1", Token: valid, Revision: 1},
		"another step":      {Instance: id, Step: "check", Attempt: 1, Nonce: "n1", Token: valid},
		"malformed attempt": {Instance: id, Step: "charge", Nonce: "n1", Token: valid},
	} {
		t.Run("claim refused: "+name, func(t *testing.T) {
			op := jetstream.EffectClaim
			if name == "record unclaimed" {
				op = jetstream.EffectRecord
			}
			reply, err := request(op, r)
			require.ErrorIs(t, err, jetstream.ErrEffectRefused)
			require.Equal(t, jetstream.EffectRefused, reply.Status)
			unclaimed(t)
		})
	}

	// The worker holding the token claims; nobody else records over its
	// claim, and it records only its attempt's output key.
	claim := jetstream.EffectRequest{Instance: id, Step: "charge", Attempt: 1, Token: valid, Nonce: "mine"}
	reply, err := request(jetstream.EffectClaim, claim)
	require.NoError(t, err)
	require.Equal(t, jetstream.EffectClaimed, reply.Status)
	rev := reply.Revision
	again, err := request(jetstream.EffectClaim, jetstream.EffectRequest{Instance: id, Step: "charge", Attempt: 1, Token: valid, Nonce: "theirs"})
	require.NoError(t, err)
	require.Equal(t, jetstream.EffectExists, again.Status, "a second claim")
	require.Equal(t, "mine", again.Record.Token)

	own := workflow.TokenOutputKey(id, "charge", 1, valid)
	for name, r := range map[string]jetstream.EffectRequest{
		"another nonce":       {Instance: id, Step: "charge", Attempt: 1, Token: valid, Nonce: "theirs", Revision: rev, Error: "declined"},
		"a self-chosen key":   {Instance: id, Step: "charge", Attempt: 1, Token: valid, Nonce: "mine", Revision: rev, OutputRef: workflow.TokenOutputKey(id, "charge", 1, "attacker")},
		"the plain key":       {Instance: id, Step: "charge", Attempt: 1, Token: valid, Nonce: "mine", Revision: rev, OutputRef: workflow.OutputKey(id, "charge", 1)},
		"no token":            {Instance: id, Step: "charge", Attempt: 1, Nonce: "mine", Revision: rev, Error: "declined"},
		"output and an error": {Instance: id, Step: "charge", Attempt: 1, Token: valid, Nonce: "mine", Revision: rev, OutputRef: own, Error: "declined"},
	} {
		t.Run("record refused: "+name, func(t *testing.T) {
			reply, err := request(jetstream.EffectRecord, r)
			require.ErrorIs(t, err, jetstream.ErrEffectRefused)
			require.Equal(t, jetstream.EffectRefused, reply.Status)
			rec, got, err := admin.GetEffect(ctx, effect)
			require.NoError(t, err)
			require.False(t, rec.Done, "a refused request recorded an outcome")
			require.Equal(t, rev, got)
		})
	}
	record := claim
	record.Revision, record.OutputRef = rev, own
	reply, err = request(jetstream.EffectRecord, record)
	require.NoError(t, err)
	require.Equal(t, jetstream.EffectRecorded, reply.Status)
	reply, err = request(jetstream.EffectRecord, record)
	require.NoError(t, err)
	require.Equal(t, jetstream.EffectRecorded, reply.Status, "a repeated try is answered recorded")
	rec, _, err := wc.GetEffect(ctx, effect)
	require.NoError(t, err, "the worker reads the effect records")
	require.True(t, rec.Done)
	require.Equal(t, own, rec.OutputRef)
	hist, err := admin.EffectHistory(ctx, effect)
	require.NoError(t, err)
	require.Len(t, hist, 2, "one claim, one outcome")

	// A request whose reply subject is another role's inbox (which NATS
	// does not check on a publish) is dropped, not answered there.
	op, _ := s.raw(security.Operator)
	stolen, err := op.SubscribeSync(security.Operator.InboxPrefix() + ".stolen")
	require.NoError(t, err)
	require.NoError(t, op.Flush())
	nc, _ := s.raw(security.Worker)
	b, err := jetstream.EncodeMessage(jetstream.EffectRequest{Instance: id, Step: "other", Attempt: 1, Token: keys.Sign(id, "other", 1, now), Nonce: "n"})
	require.NoError(t, err)
	before := refusedClaims(t, d)
	require.NoError(t, nc.PublishRequest(jetstream.EffectClaimSubject, security.Operator.InboxPrefix()+".stolen", b))
	jftest.Eventually(t, 30*time.Second, func() bool { return refusedClaims(t, d) > before }, "the request was not refused")
	n, _, err := stolen.Pending()
	require.NoError(t, err)
	require.Zero(t, n, "the dispatcher answered in the operator's inbox")
	_, _, err = admin.GetEffect(ctx, workflow.EffectKey(id, "other"))
	require.ErrorIs(t, err, workflow.ErrNotFound)

	require.Empty(t, dispatcherLog.violations(), "the dispatcher was denied something it needs:\n%s", dispatcherLog)
	require.Empty(t, workerLog.violations(), "the worker was denied something it needs:\n%s", workerLog)
}

func errorsIsNoDispatcher(err error) bool {
	return errors.Is(err, jetstream.ErrNoDispatcher)
}

// refusedClaims reads jetflow_effect_requests_total{op="claim",outcome="refused"}.
func refusedClaims(t *testing.T, d *dispatcher.Dispatcher) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.Collector())
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != "jetflow_effect_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["op"] == "claim" && labels["outcome"] == "refused" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestOnceStepWithoutTaskTokens: on the generated config but without
// task tokens, a worker denied writes to jetflow_effects claims and
// records its once steps through the dispatchers, and the step runs.
func TestOnceStepWithoutTaskTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const def = `
name: once-open
version: 1
steps:
  - {name: charge, kind: task, task: echo, once: true}
`
	defs := parseDefs(t, def)
	s := startSecured(t, securedOptions{scope: security.ScopeOf(defs)})
	admin, _ := s.connect(security.Admin, jetstream.Config{})
	require.NoError(t, admin.Provision(ctx))
	require.NoError(t, admin.PutDefinition(ctx, defs[0], []byte(def)))
	_, err := admin.EnsureTaskConsumer(ctx, "echo")
	require.NoError(t, err)

	dc, _ := s.connect(security.Dispatcher, jetstream.Config{})
	require.NoError(t, dc.Provision(ctx))
	d, err := dispatcher.New(dc, dispatcher.Config{StatsInterval: -1, Logger: jftest.Logger(t)})
	require.NoError(t, err)
	runInBackground(t, d.Run)
	wc, workerLog := s.connect(security.Worker, jetstream.Config{})
	require.NoError(t, wc.Bind(ctx))
	w, err := worker.New(jftest.App(wc), worker.Config{Logger: jftest.Logger(t)})
	require.NoError(t, err)
	require.NoError(t, w.Handle("echo", echo))
	runInBackground(t, w.Run)

	for _, key := range []string{"a", "b"} {
		require.NoError(t, admin.PublishStart(ctx, jetstream.Start{Workflow: "once-open", EventKey: key, Payload: []byte(`{"n":1}`)}))
		id := workflow.InstanceID("once-open", key)
		var inst *workflow.Instance
		jftest.Eventually(t, 30*time.Second, func() bool {
			inst, _, err = admin.GetInstance(ctx, id)
			return err == nil && inst.Status.Terminal()
		}, "instance %s did not finish", id)
		require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
		rec, _, err := admin.GetEffect(ctx, workflow.EffectKey(id, "charge"))
		require.NoError(t, err)
		require.True(t, rec.Done)
	}
	for _, v := range workerLog.violations() {
		require.Contains(t, []string{"$KV.jetflow_effects." + workflow.EffectKey(workflow.InstanceID("once-open", "a"), "charge"),
			"$JS.API.CONSUMER.CREATE.JETFLOW_TASKS.worker_echo.jetflow.task.echo"}, v,
			"the worker tries to write the bucket once, is denied, and asks the dispatchers from then on")
	}
}
