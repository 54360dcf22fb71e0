package jetflow_test

import (
	"context"
	"encoding/json"
	"math"
	"math/big"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/jetflowtest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

const (
	// echo returns its input as its output.
	echoWorkflow = `
name: echo
version: 1
steps:
  - {name: a, kind: task, task: echo}
output: 'steps.a.output'
`
	// approval waits for a signal and outputs its payload.
	approvalWorkflow = `
name: approval
version: 1
steps:
  - {name: approve, kind: wait, signal: approved, timeout: 1h}
output: 'steps.approve.output'
`
	// triggered starts on orders.created, keyed by the payload's id.
	triggeredWorkflow = `
name: triggered
version: 1
trigger: {subject: orders.created, key: id}
steps:
  - {name: a, kind: task, task: echo}
output: 'steps.a.output'
`
	// failing runs a task that fails for good.
	failingWorkflow = `
name: failing
version: 1
steps:
  - {name: a, kind: task, task: fail}
`
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// setup starts an engine with the test workflows and an echo/fail worker.
func setup(t *testing.T) *jetflowtest.Engine {
	t.Helper()
	e := jetflowtest.Start(t, echoWorkflow, approvalWorkflow, triggeredWorkflow, failingWorkflow)
	w, err := worker.New(e.Client, worker.Config{})
	require.NoError(t, err)
	require.NoError(t, w.Handle("echo", func(_ context.Context, t *worker.Task) (any, error) {
		var v json.RawMessage
		return v, t.Bind(&v)
	}))
	require.NoError(t, w.Handle("fail", func(context.Context, *worker.Task) (any, error) {
		return nil, worker.Permanent(errString("card declined"))
	}))
	e.Run(w)
	return e
}

type errString string

func (e errString) Error() string { return string(e) }

type address struct {
	City string `json:"city"`
	Zip  string `json:"zip,omitempty"`
}

type stamp struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

// value has a field of every kind the JSON semantics must keep: tagged,
// untagged, nested, embedded, pointer, time, big integers, omitempty and
// skipped.
type value struct {
	stamp
	OrderID string `json:"orderId"`
	Amount  int64
	Ship    address     `json:"ship"`
	Bill    *address    `json:"bill"`
	Gift    *string     `json:"gift,omitempty"`
	Big     *big.Int    `json:"big"`
	Exact   json.Number `json:"exact"`
	Max     uint64      `json:"max"`
	Secret  string      `json:"-"`
}

func sample() value {
	b, _ := new(big.Int).SetString("123456789012345678901234567890", 10)
	return value{
		stamp:   stamp{ID: "x", At: time.Date(2026, 1, 2, 3, 4, 5, 123_000_000, time.UTC)},
		OrderID: "o-1", Amount: 1250,
		Ship: address{City: "Oslo", Zip: "0150"}, Bill: &address{City: "Bergen"},
		Big: b, Exact: "12345678901234567891", Max: math.MaxUint64, Secret: "not sent",
	}
}

// TestStartAndWaitHaveJSONSemantics: an instance input is what
// encoding/json.Marshal writes, expressions read it by the JSON names, and
// Wait decodes the output as encoding/json.Unmarshal would, into a typed
// value (exact big integers included).
func TestStartAndWaitHaveJSONSemantics(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxFor(t)
	in := sample()
	id, err := e.Client.Start(ctx, "echo", "k1", in)
	require.NoError(t, err)
	require.Equal(t, workflow.InstanceID("echo", "k1"), id)
	var out value
	inst, err := e.Client.Wait(ctx, id, &out)
	require.NoError(t, err)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	want := in
	want.Secret = ""
	require.Equal(t, want, out)

	var asJSON value // what encoding/json makes of the same value
	b, err := json.Marshal(in)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &asJSON))
	require.Equal(t, asJSON, out)

	var generic map[string]any // field names are the JSON names
	_, err = e.Client.Wait(ctx, id, &generic)
	require.NoError(t, err)
	require.Contains(t, generic, "orderId")
	require.Contains(t, generic, "Amount")
	require.Contains(t, generic, "at")
	require.NotContains(t, generic, "gift")
	require.NotContains(t, generic, "Secret")

	// A traceparent given to Start is the instance's trace.
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tid, err := e.Client.Start(ctx, "echo", "traced", nil, jetflow.WithTraceParent(tp))
	require.NoError(t, err)
	traced, err := e.Client.Wait(ctx, tid, nil)
	require.NoError(t, err)
	require.Equal(t, tp, traced.Trace)
	_, err = e.Client.Start(ctx, "echo", "bad-trace", nil, jetflow.WithTraceParent("nope"))
	require.Error(t, err)

	// Starting the same key again starts nothing and names the same
	// instance.
	again, err := e.Client.Start(ctx, "echo", "k1", map[string]any{"other": true})
	require.NoError(t, err)
	require.Equal(t, id, again)
	_, err = e.Client.Wait(ctx, id, &out)
	require.NoError(t, err)
	require.Equal(t, want, out)
}

// TestSignalPayloadHasJSONSemantics: a signal's payload is encoded as
// encoding/json.Marshal would; the wait step's output is that value.
func TestSignalPayloadHasJSONSemantics(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxFor(t)
	id, err := e.Client.Start(ctx, "approval", "a1", nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		inst, err := e.Client.Get(ctx, id)
		return err == nil && inst.Steps["approve"] != nil
	}, 20*time.Second, 20*time.Millisecond)
	in := sample()
	require.NoError(t, e.Client.Signal(ctx, id, "approved", in, "req-1"))
	var out value
	_, err = e.Client.Wait(ctx, id, &out)
	require.NoError(t, err)
	in.Secret = ""
	require.Equal(t, in, out)
}

// TestPublishTriggersAWorkflow: an event published on a trigger subject
// starts the workflow keyed by the payload field; publishing it again
// starts nothing more.
func TestPublishTriggersAWorkflow(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxFor(t)
	ev := struct {
		ID     string `json:"id"`
		Amount int64  `json:"amount"`
	}{"o-9", 99}
	require.NoError(t, e.Client.Publish(ctx, "orders.created", ev, jetflow.WithMsgID("evt-o-9")))
	require.NoError(t, e.Client.Publish(ctx, "orders.created", ev, jetflow.WithMsgID("evt-o-9")))
	var out struct{ Amount int64 }
	inst, err := e.Client.Wait(ctx, workflow.InstanceID("triggered", "o-9"), &out)
	require.NoError(t, err)
	require.Equal(t, int64(99), out.Amount)
	require.Equal(t, "o-9", inst.EventKey)
	list, err := e.Client.List(ctx, jetflow.ListOptions{Workflow: "triggered"})
	require.NoError(t, err)
	require.Len(t, list, 1)

	err = e.Client.Publish(ctx, "nobody.listens", ev)
	require.ErrorIs(t, err, jetflow.ErrNotStored)
}

// TestBadValuesAreRefusedBeforeSending: a value JSON cannot hold is
// refused with ErrMalformed, one over the payload limit with ErrTooLarge,
// and nothing is started.
func TestBadValuesAreRefusedBeforeSending(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxFor(t)
	_, err := e.Client.Start(ctx, "echo", "nan", map[string]any{"x": math.NaN()})
	require.ErrorIs(t, err, jetflow.ErrMalformed)
	_, err = e.Client.Start(ctx, "echo", "big", make([]byte, 2<<20))
	require.ErrorIs(t, err, jetflow.ErrTooLarge)
	err = e.Client.Publish(ctx, "orders.created", map[string]any{"c": make(chan int)})
	require.ErrorIs(t, err, jetflow.ErrMalformed)
	err = e.Client.Signal(ctx, "approval-x", "approved", math.Inf(1), "s")
	require.ErrorIs(t, err, jetflow.ErrMalformed)
	list, err := e.Client.List(ctx, jetflow.ListOptions{})
	require.NoError(t, err)
	require.Empty(t, list)
}

// TestCancelGetListAndFailures: Cancel ends a waiting instance (Wait
// reports ErrCancelled with the reason), a second Cancel is ErrEnded, an
// unknown one ErrNotFound; a failed instance makes Wait return ErrFailed
// with the step's error; List filters by status.
func TestCancelGetListAndFailures(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxFor(t)
	id, err := e.Client.Start(ctx, "approval", "c1", nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := e.Client.Get(ctx, id)
		return err == nil
	}, 20*time.Second, 20*time.Millisecond)
	require.NoError(t, e.Client.Cancel(ctx, id, "changed my mind"))
	inst, err := e.Client.Wait(ctx, id, nil)
	require.ErrorIs(t, err, jetflow.ErrCancelled)
	require.ErrorContains(t, err, "changed my mind")
	require.Equal(t, workflow.StatusCancelled, inst.Status)
	require.ErrorIs(t, e.Client.Cancel(ctx, id, "again"), jetflow.ErrEnded)
	require.ErrorIs(t, e.Client.Cancel(ctx, "approval-nope", "x"), jetflow.ErrNotFound)
	_, err = e.Client.Get(ctx, "approval-nope")
	require.ErrorIs(t, err, jetflow.ErrNotFound)

	fid, err := e.Client.Start(ctx, "failing", "f1", nil)
	require.NoError(t, err)
	_, err = e.Client.Wait(ctx, fid, nil)
	require.ErrorIs(t, err, jetflow.ErrFailed)
	require.ErrorContains(t, err, "card declined")

	list, err := e.Client.List(ctx, jetflow.ListOptions{Status: workflow.StatusCancelled})
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Equal(t, id, list[0].ID)
	list, err = e.Client.List(ctx, jetflow.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list, 2)
	require.Equal(t, fid, list[0].ID, "most recent first")
}

// TestWaitEndsWithItsContext: Wait for an instance that never comes
// returns the context's error.
func TestWaitEndsWithItsContext(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := e.Client.Wait(ctx, "echo-never", nil)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestNewKeepsTheCallersConnection: a client made by New leaves the
// connection open at Close; one made by Connect closes its own.
func TestNewKeepsTheCallersConnection(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := ctxFor(t)
	nc, err := nats.Connect(e.URL)
	require.NoError(t, err)
	defer nc.Close()
	c, err := jetflow.New(nc)
	require.NoError(t, err)
	id, err := c.Start(ctx, "echo", "mine", "hi")
	require.NoError(t, err)
	var s string
	_, err = c.Wait(ctx, id, &s)
	require.NoError(t, err)
	require.Equal(t, "hi", s)
	c.Close()
	require.True(t, nc.IsConnected(), "Close closed the caller's connection")

	_, err = jetflow.New(nil)
	require.Error(t, err)
	_, err = jetflow.New(nc, jetflow.WithWorkerAckWait(time.Millisecond))
	require.ErrorContains(t, err, "at least 1s")
}

// TestClientBindsOnceProvisioned: a client made before anything is
// provisioned fails with ErrNotProvisioned, and works once a dispatcher
// (here Provision) has made jetflow's streams and buckets, without being
// made again.
func TestClientBindsOnceProvisioned(t *testing.T) {
	t.Parallel()
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), Host: "127.0.0.1", Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	ctx := ctxFor(t)
	c, err := jetflow.Connect(ctx, srv.ClientURL())
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Get(ctx, "x")
	require.ErrorIs(t, err, jetflow.ErrNotProvisioned)
	_, err = c.Start(ctx, "echo", "k", nil)
	require.ErrorIs(t, err, jetflow.ErrNotProvisioned)

	admin, err := jetstream.Connect(ctx, jetstream.Config{Server: srv})
	require.NoError(t, err)
	defer admin.Close()
	require.NoError(t, admin.Provision(ctx))
	_, err = c.Get(ctx, "x")
	require.ErrorIs(t, err, jetflow.ErrNotFound)

	_, err = jetflow.Connect(ctx, "nats://127.0.0.1:1", jetflow.WithConnectTimeout(300*time.Millisecond))
	require.ErrorContains(t, err, "127.0.0.1:1")
}
