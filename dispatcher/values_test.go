package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// The tests of this file hold the payload door to its promise: a
// payload, whatever it is, either runs — and every step sees it exactly,
// numbers included — or is dead-lettered with its reason on its first
// delivery, leaving no instance and no data behind. Never accepted and
// then undecodable, never retried.

// keep returns its input as it bound it (the JSON bytes), so a test can
// compare what each step saw with what was published.
func keep(_ context.Context, t *worker.Task) (any, error) {
	var in json.RawMessage
	if err := t.Bind(&in); err != nil {
		return nil, worker.Permanent(err)
	}
	return in, nil
}

// nestedPayload is {"id":"<id>","v":[[...[1]...]]} with depth levels of
// nesting in all (the object is the first).
func nestedPayload(id string, depth int) []byte {
	return []byte(fmt.Sprintf(`{"id":%q,"v":%s1%s}`, id, strings.Repeat("[", depth-1), strings.Repeat("]", depth-1)))
}

// deadLetterOf waits for the dead letter of the message published on
// subject whose payload is data.
func deadLetterOf(t *testing.T, e *jftest.Env, subject string, data []byte) jetstream.DeadLetter {
	t.Helper()
	var found *jetstream.DeadLetter
	jftest.Eventually(t, 30*time.Second, func() bool {
		dls, err := e.Client.DeadLetters(context.Background(), 10000)
		if err != nil {
			return false
		}
		for i := range dls {
			if dls[i].SourceSubject == subject && string(dls[i].Data) == string(data) {
				found = &dls[i]
				return true
			}
		}
		return false
	}, "no dead letter for the %d-byte payload on %s", len(data), subject)
	return *found
}

// clip quotes the start of a payload for a failure message.
func clip(b []byte) string {
	if len(b) > 200 {
		return fmt.Sprintf("%q... (%d bytes)", b[:200], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// requireNothingLeft checks that a rejected start left no instance and
// no input behind.
func requireNothingLeft(t *testing.T, e *jftest.Env, id string) {
	t.Helper()
	require.Nil(t, e.Instance(id), "a rejected payload created instance %s", id)
	_, err := e.Client.DataRaw(context.Background(), workflow.InputKey(id))
	require.True(t, errors.Is(err, workflow.ErrNotFound), "a rejected payload left its input %s behind (%v)", workflow.InputKey(id), err)
}

// requireOutput checks that step of a completed instance output exactly
// the JSON want.
func requireOutput(t *testing.T, e *jftest.Env, inst *workflow.Instance, step string, want []byte) {
	t.Helper()
	st := inst.Steps[step]
	require.NotNil(t, st, "step %s did not run", step)
	require.Equal(t, 1, st.Attempt, "step %s needed more than one attempt", step)
	raw, err := e.Client.DataRaw(context.Background(), st.OutputRef)
	require.NoError(t, err)
	require.NoError(t, jftest.SameJSON(want, raw), "step %s saw something else than was published", step)
}

// TestNestedPayloadsRunOrAreDeadLetteredAtOnce: payloads nested 99 and
// 100 levels deep (the limit) run, with and without an input expression
// and through an explicit start; 101, 5,000 and 10,001 levels are
// dead-lettered on their first delivery with the reason, and leave no
// instance and no input behind.
func TestNestedPayloadsRunOrAreDeadLetteredAtOnce(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: deep-plain
version: 1
trigger: {subject: deep.plain, key: id}
steps:
  - {name: a, kind: task, task: keep}
`)
	e.Register(`
name: deep-copy
version: 1
trigger: {subject: deep.copy, key: id}
steps:
  - {name: a, kind: task, task: keep, input: 'input'}
`)
	// Few deliveries: a rejection that is retried shows as retries, and
	// ends in the dead-letter stream after three, not fifty.
	d, _ := e.Dispatcher(nil, dispatcher.Config{MaxDeliveries: 3})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"keep": keep})
	ctx := context.Background()

	type sent struct {
		wf, subject, id string
		depth           int
		data            []byte
	}
	var all []sent
	for _, depth := range []int{99, 100, 101, 5000, 10001} {
		for _, door := range []struct{ wf, subject string }{
			{"deep-plain", "deep.plain"},
			{"deep-copy", "deep.copy"},
			{"deep-plain", jetstream.StartSubject("deep-plain")},
		} {
			id := fmt.Sprintf("%s-%d-%s", door.wf, depth, strings.ReplaceAll(door.subject, ".", "_"))
			s := sent{wf: door.wf, subject: door.subject, id: id, depth: depth, data: nestedPayload(id, depth)}
			headers := map[string]string{}
			if strings.HasPrefix(door.subject, "jetflow.start.") {
				headers[jetstream.HeaderEventKey] = id // an explicit start from any NATS client
			}
			_, err := e.Client.Publish(ctx, s.subject, s.data, headers)
			require.NoError(t, err)
			all = append(all, s)
		}
	}
	rejected := 0
	for _, s := range all {
		id := workflow.InstanceID(s.wf, s.id)
		if s.depth <= workflow.MaxDepth {
			inst := e.WaitTerminal(id, 30*time.Second)
			require.Equal(t, workflow.StatusCompleted, inst.Status, "depth %d on %s: %s", s.depth, s.subject, inst.Error)
			requireOutput(t, e, inst, "a", s.data)
			continue
		}
		rejected++
		dl := deadLetterOf(t, e, s.subject, s.data)
		require.Contains(t, dl.Reason, "nested deeper than 100", "depth %d on %s", s.depth, s.subject)
		requireNothingLeft(t, e, id)
	}
	dls, err := e.Client.DeadLetters(ctx, 1000)
	require.NoError(t, err)
	require.Len(t, dls, rejected, "dead letters: %v", reasons(dls))
	require.Zero(t, d.Stats().Retried, "a payload was retried instead of rejected at once")
}

// TestIntegerEventKeysAreExact: integer keys are their digits at any
// size, so two 20-digit keys that differ in the last digit are two
// instances, and their inputs reach the steps with every digit; 123 and
// "123" are one key; other key values are rejected with the reason.
func TestIntegerEventKeysAreExact(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: keys
version: 1
trigger: {subject: keys.in, key: order.id}
steps:
  - {name: a, kind: task, task: keep, next: b}
  - {name: b, kind: task, task: keep, input: '{"id": input.order.id, "amount": input.amount}'}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{MaxDeliveries: 3})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"keep": keep})
	ctx := context.Background()

	publish := func(body string) {
		t.Helper()
		_, err := e.Client.Publish(ctx, "keys.in", []byte(body), nil)
		require.NoError(t, err)
	}
	runs := []struct{ key, body, copied string }{
		{"12345678901234567890", `{"order":{"id":12345678901234567890},"amount":123456789012345678901234567890}`,
			`{"id":12345678901234567890,"amount":123456789012345678901234567890}`},
		{"12345678901234567891", `{"order":{"id":12345678901234567891},"amount":0.1}`,
			`{"id":12345678901234567891,"amount":0.1}`},
		{"-9223372036854775809", `{"order":{"id":-9223372036854775809},"amount":-1.5e-7}`,
			`{"id":-9223372036854775809,"amount":-1.5e-7}`},
	}
	for _, r := range runs {
		publish(r.body)
	}
	// A msgpack payload: its integer key is the same digits.
	mp, err := msgpack.Marshal(map[string]any{"order": map[string]any{"id": uint64(18446744073709551615)}, "amount": int64(7)})
	require.NoError(t, err)
	_, err = e.Client.Publish(ctx, "keys.in", mp, map[string]string{jetstream.HeaderContentType: "application/msgpack"})
	require.NoError(t, err)
	runs = append(runs, struct{ key, body, copied string }{"18446744073709551615",
		`{"order":{"id":18446744073709551615},"amount":7}`, `{"id":18446744073709551615,"amount":7}`})

	for _, r := range runs {
		id := workflow.InstanceID("keys", r.key)
		inst := e.WaitTerminal(id, 30*time.Second)
		require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
		require.Equal(t, r.key, inst.EventKey)
		in, err := e.Client.DataRaw(ctx, inst.InputRef)
		require.NoError(t, err)
		require.NoError(t, jftest.SameJSON([]byte(r.body), in), "stored input %s", in)
		requireOutput(t, e, inst, "a", []byte(r.body))
		requireOutput(t, e, inst, "b", []byte(r.copied))
		copied, err := e.Client.DataRaw(ctx, inst.Steps["b"].InputRef)
		require.NoError(t, err)
		require.Contains(t, string(copied), r.key, "the copied key lost digits: %s", copied)
	}

	// 123 and "123" are the same key: one instance, the first payload.
	publish(`{"order":{"id":123},"amount":1}`)
	same := e.WaitTerminal(workflow.InstanceID("keys", "123"), 30*time.Second)
	publish(`{"order":{"id":"123"},"amount":2}`)
	jftest.Eventually(t, 30*time.Second, func() bool { return d.Stats().DuplicateTriggers >= 1 }, `"123" did not land on the instance of 123`)
	in, err := e.Client.DataRaw(ctx, same.InputRef)
	require.NoError(t, err)
	require.NoError(t, jftest.SameJSON([]byte(`{"order":{"id":123},"amount":1}`), in))

	for body, reason := range map[string]string{
		`{"order":{"id":1.5}}`:  "has a fraction or an exponent",
		`{"order":{"id":1e3}}`:  "has a fraction or an exponent",
		`{"order":{"id":2.0}}`:  "has a fraction or an exponent",
		`{"order":{"id":true}}`: "is the boolean true",
		`{"order":{"id":null}}`: "is null",
		`{"order":{"id":{}}}`:   "is an object",
		`{"order":{"id":[1]}}`:  "is an array",
		`{"order":{"id":""}}`:   "is an empty string",
		`{"order":7}`:           "missing",
	} {
		publish(body)
		dl := deadLetterOf(t, e, "keys.in", []byte(body))
		require.Contains(t, dl.Reason, reason, body)
		if reason != "missing" && reason != "is an empty string" {
			require.Contains(t, dl.Reason, "a key must be a string or an integer", body)
		}
	}
	require.Zero(t, d.Stats().Retried)
}

// TestRandomPayloadsAtTheDoor is the door's property against a real
// server: random JSON of every depth around the limit, every number form
// and arbitrary Unicode, and the same texts broken, published as
// triggers. Each one either completes — the stored input, what the
// worker bound, and a copy made by an expression all equal what was
// published, numbers exactly — or is dead-lettered with a reason on its
// first delivery with nothing left behind. Which one agrees with an
// oracle that does not use the door's code.
func TestRandomPayloadsAtTheDoor(t *testing.T) {
	t.Parallel()
	const limit = 32 << 10
	e := jftest.Start(t, jetstream.Config{MaxPayload: limit})
	e.Register(`
name: door
version: 1
trigger: {subject: door.in, key: "header:Nats-Msg-Id"}
steps:
  - {name: a, kind: task, task: bound, next: b}
  - {name: b, kind: task, task: keep, input: 'input'}
`)
	d, _ := e.Dispatcher(nil, dispatcher.Config{MaxDeliveries: 3})
	var mu sync.Mutex
	bound := map[string]any{} // instance -> what step a bound into an any
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"keep": keep,
		"bound": func(ctx context.Context, t *worker.Task) (any, error) {
			var v any
			if err := t.Bind(&v); err != nil {
				return nil, worker.Permanent(err)
			}
			mu.Lock()
			bound[t.Instance] = v
			mu.Unlock()
			return keep(ctx, t)
		},
	})
	ctx := context.Background()
	r := rand.New(rand.NewPCG(3, 5))
	n := 120
	if testing.Short() {
		n = 40
	}
	type sent struct {
		key  string
		data []byte
		ok   bool
	}
	var all []sent
	for i := range n {
		b := jftest.RandomJSON(r, r.IntN(workflow.MaxDepth+12))
		if i%4 == 0 {
			b = jftest.Mangle(r, b)
		}
		if len(b) > limit+4096 {
			continue // the stream refuses it before anyone sees it
		}
		s := sent{key: fmt.Sprintf("p-%d", i), data: b, ok: jftest.AcceptablePayload(b, limit, workflow.MaxDepth)}
		_, err := e.Client.Publish(ctx, "door.in", b, map[string]string{jetstream.HeaderMsgID: s.key})
		require.NoError(t, err)
		all = append(all, s)
	}
	// Wait until every payload either ended or was dead-lettered, then
	// look at each.
	jftest.Eventually(t, 60*time.Second, func() bool {
		counts, err := e.Client.StreamCounts(ctx)
		if err != nil {
			return false
		}
		ended := 0
		for _, s := range all {
			if inst := e.Instance(workflow.InstanceID("door", s.key)); inst != nil && inst.Status.Terminal() {
				ended++
			}
		}
		return ended+int(counts[jetstream.StreamDLQ]) >= len(all)
	}, "not every payload ran or was dead-lettered")
	dls, err := e.Client.DeadLetters(ctx, 10000)
	require.NoError(t, err)
	reasonOf := map[string]string{}
	for _, dl := range dls {
		require.Equal(t, "door.in", dl.SourceSubject)
		require.NotEmpty(t, dl.Reason)
		reasonOf[string(dl.Data)] = dl.Reason
	}
	accepted := 0
	for _, s := range all {
		id := workflow.InstanceID("door", s.key)
		reason, rejected := reasonOf[string(s.data)]
		if !s.ok {
			require.True(t, rejected, "%s: %s was not dead-lettered", s.key, clip(s.data))
			requireNothingLeft(t, e, id)
			continue
		}
		require.False(t, rejected, "%s: %s was dead-lettered: %s", s.key, clip(s.data), reason)
		accepted++
		want := s.data
		if strings.Trim(string(want), " \t\r\n") == "" {
			want = []byte("null")
		}
		inst := e.Instance(id)
		require.NotNil(t, inst, "%s: no instance", s.key)
		require.Equal(t, workflow.StatusCompleted, inst.Status, "%s: %s: %s", s.key, clip(s.data), inst.Error)
		stored, err := e.Client.DataRaw(ctx, inst.InputRef)
		require.NoError(t, err)
		require.NoError(t, jftest.SameJSON(want, stored))
		requireOutput(t, e, inst, "a", want)
		requireOutput(t, e, inst, "b", want)
		var direct any
		require.NoError(t, json.Unmarshal(want, &direct))
		mu.Lock()
		require.Equal(t, direct, bound[id], "Bind into an any differs from json.Unmarshal")
		mu.Unlock()
	}
	t.Logf("%d payloads: %d ran, %d dead-lettered", len(all), accepted, len(all)-accepted)
	require.Positive(t, accepted)
	require.Less(t, accepted, len(all))
	require.Len(t, dls, len(all)-accepted)
	require.Zero(t, d.Stats().Retried)
}

// TestSignalPayloadsAreCheckedAndExact: a signal's payload passes the
// same door (refused before anything is stored or sent), and its numbers
// reach the steps that read it exactly.
func TestSignalPayloadsAreCheckedAndExact(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: approve
version: 1
steps:
  - {name: w, kind: wait, signal: approved, next: a}
  - {name: a, kind: task, task: keep, input: '{"by": steps.w.output.by, "ref": steps.w.output.ref}'}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"keep": keep})
	ctx := context.Background()
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "approve", EventKey: "k", Payload: []byte(`{}`)}))
	id := workflow.InstanceID("approve", "k")
	jftest.Eventually(t, 30*time.Second, func() bool {
		inst := e.Instance(id)
		return inst != nil && inst.Steps["w"] != nil
	}, "the wait step did not start")

	for name, payload := range map[string][]byte{
		"too deep":    nestedPayload("x", workflow.MaxDepth+1),
		"not JSON":    []byte(`{"by":`),
		"not UTF-8":   []byte("\"\xff\""),
		"beyond f64":  []byte(`{"ref":1e999}`),
		"bad key num": []byte(`{"ref":NaN}`),
	} {
		err := e.Client.Signal(ctx, id, "approved", payload, "bad-"+strings.ReplaceAll(name, " ", "-"))
		require.Error(t, err, name)
		require.True(t, errors.Is(err, jetstream.ErrMalformed), "%s: %v", name, err)
		_, err = e.Client.DataRaw(ctx, workflow.SignalKey(id, "approved", "bad-"+strings.ReplaceAll(name, " ", "-")))
		require.True(t, errors.Is(err, workflow.ErrNotFound), "%s: a refused signal was stored", name)
	}
	require.NoError(t, e.Client.Signal(ctx, id, "approved", []byte(`{"by":"ann","ref":123456789012345678901234567890}`), "ok"))
	inst := e.WaitTerminal(id, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	requireOutput(t, e, inst, "a", []byte(`{"by":"ann","ref":123456789012345678901234567890}`))
}

// TestValuesOfEarlierVersionsAreRead: a data bucket that holds msgpack
// values written by an earlier version keeps working: an instance whose
// input is such a value runs, its expressions read it, and a handler
// binds it with JSON semantics.
func TestValuesOfEarlierVersionsAreRead(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: upgrade
version: 1
steps:
  - {name: a, kind: task, task: order, next: b}
  - {name: b, kind: task, task: keep, input: '{"doubled": input.amount * 2, "id": input.orderId, "big": input.big}'}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	var mu sync.Mutex
	var bound struct {
		Amount  int64
		OrderID string `json:"orderId"`
	}
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"keep": keep,
		"order": func(_ context.Context, t *worker.Task) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			if err := t.Bind(&bound); err != nil {
				return nil, worker.Permanent(err)
			}
			return nil, nil
		},
	})
	ctx := context.Background()
	id := workflow.InstanceID("upgrade", "k")
	// The input as an earlier version stored it: msgpack.
	old, err := msgpack.Marshal(map[string]any{"amount": int64(1250), "orderId": "o-1", "big": uint64(18446744073709551615)})
	require.NoError(t, err)
	require.NoError(t, e.Client.CreateData(ctx, workflow.InputKey(id), old))
	// The start finds the input there (write-once: the first value stands).
	require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "upgrade", EventKey: "k", Payload: []byte(`{}`)}))

	inst := e.WaitTerminal(id, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	mu.Lock()
	require.Equal(t, int64(1250), bound.Amount)
	require.Equal(t, "o-1", bound.OrderID)
	mu.Unlock()
	requireOutput(t, e, inst, "b", []byte(`{"doubled":2500,"id":"o-1","big":18446744073709551615}`))
}
