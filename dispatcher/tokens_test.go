package dispatcher_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasktoken"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

const heldDef = `
name: held
version: 1
steps:
  - {name: a, kind: task, task: hold}
`

// fakeClock is the dispatcher's clock in the token tests.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// holder is a task handler that returns its instance's id once released.
type holder struct {
	mu      sync.Mutex
	release map[string]chan struct{}
	started sync.Map // instance id -> true
}

func (h *holder) gate(id string) chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.release == nil {
		h.release = map[string]chan struct{}{}
	}
	if h.release[id] == nil {
		h.release[id] = make(chan struct{})
	}
	return h.release[id]
}

func (h *holder) handle(ctx context.Context, t *worker.Task) (any, error) {
	h.started.Store(t.Instance, true)
	select {
	case <-h.gate(t.Instance):
		return "ran " + t.Instance, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (h *holder) waitStarted(t *testing.T, id string) {
	t.Helper()
	jftest.Eventually(t, 20*time.Second, func() bool { _, ok := h.started.Load(id); return ok }, "task of %s never reached the worker", id)
}

// deadLettersByReason reads jetflow_dead_letters_total{reason}.
func deadLettersByReason(t *testing.T, d *dispatcher.Dispatcher, reason string) float64 {
	t.Helper()
	return metricValue(t, d, "jetflow_dead_letters_total", map[string]string{"reason": reason})
}

// metricValue reads the counter of a family with the given labels.
func metricValue(t *testing.T, d *dispatcher.Dispatcher, family string, labels map[string]string) float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.Collector())
	fams, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if f.GetName() != family {
			continue
		}
		for _, m := range f.GetMetric() {
			matched := 0
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v == l.GetValue() {
					matched++
				}
			}
			if matched == len(labels) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func forgedDeadLetters(t *testing.T, c *jetstream.Client, want int) []jetstream.DeadLetter {
	t.Helper()
	var forged []jetstream.DeadLetter
	jftest.Eventually(t, 20*time.Second, func() bool {
		dls, err := c.DeadLetters(context.Background(), 100)
		if err != nil {
			return false
		}
		forged = forged[:0]
		for _, dl := range dls {
			if strings.HasPrefix(dl.Reason, "forged result") {
				forged = append(forged, dl)
			}
		}
		return len(forged) >= want
	}, "want %d dead letters with reason 'forged result'", want)
	return forged
}

func keyFile(t *testing.T, s tasktoken.KeySet) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "task-token.keys")
	require.NoError(t, os.WriteFile(path, s.Marshal(), 0o600))
	return path
}

// TestForgedResultsChangeNothing: with task tokens, a result for the
// right instance, step and attempt but without the task's token (none, a
// token of another key, the token of another attempt or instance)
// changes nothing and is dead-lettered as "forged result" and counted;
// the worker's real result, which echoes the token, completes the step.
func TestForgedResultsChangeNothing(t *testing.T) {
	t.Parallel()
	e, keys, d, h := tokenSetup(t)
	ctx := context.Background()

	id := start(t, e.Client, "held", "victim")
	h.waitStarted(t, id)
	other, err := tasktoken.NewKey()
	require.NoError(t, err)
	now := time.Now()
	forgeries := map[string]string{
		"none":          "",
		"garbage":       "not-a-token",
		"other key":     tasktoken.KeySet{Keys: []tasktoken.Key{other}}.Sign(id, "a", 1, now),
		"other attempt": keys.Sign(id, "a", 2, now),
		"other step":    keys.Sign(id, "b", 1, now),
	}
	for name, tok := range forgeries {
		require.NoError(t, e.Client.PublishEvent(ctx, workflow.Event{
			Kind: workflow.EventResult, Instance: id, Step: "a", Attempt: 1, Token: tok,
		}, "forged-"+name), name)
	}
	forged := forgedDeadLetters(t, e.Client, len(forgeries))
	require.Len(t, forged, len(forgeries))
	for _, dl := range forged {
		require.Equal(t, "dispatcher", dl.Component)
	}
	require.Equal(t, float64(len(forgeries)), deadLettersByReason(t, d, "forged_result"))
	inst := e.Instance(id)
	require.Equal(t, workflow.StatusRunning, inst.Status, "a forged result completed the step")
	require.Equal(t, 1, inst.Steps["a"].Attempt)
	require.Zero(t, d.Stats().StaleEvents, "forged results never reach the state machine")

	close(h.gate(id))
	inst = e.WaitTerminal(id, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	out, err := e.Client.LoadData(ctx, inst.OutputRef)
	require.NoError(t, err)
	require.Equal(t, "ran "+id, out)
	require.Equal(t, float64(len(forgeries)), deadLettersByReason(t, d, "forged_result"), "the real result is not dead-lettered")
}

// TestTokenKeyRotation: after the key file is rotated (read again by the
// running dispatcher), a task signed with the previous key is accepted
// during the grace period and refused as forged after it, while new tasks
// are signed with the new key. The dispatcher's clock is injected.
func TestTokenKeyRotation(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(heldDef)
	k1, err := tasktoken.NewKey()
	require.NoError(t, err)
	path := keyFile(t, tasktoken.KeySet{Keys: []tasktoken.Key{k1}})
	ring, err := tasktoken.Load(path)
	require.NoError(t, err)
	clock := newFakeClock()
	d, _ := e.Dispatcher(nil, dispatcher.Config{TaskTokens: ring, RepairInterval: -1, Clock: clock.Now})
	h := &holder{}
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"hold": h.handle})

	inGrace := start(t, e.Client, "held", "in-grace")
	late := start(t, e.Client, "held", "late")
	h.waitStarted(t, inGrace)
	h.waitStarted(t, late) // both tasks signed with k1

	rotated, err := tasktoken.Rotate(ring.Keys(), clock.Now(), time.Minute, time.Hour)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, rotated.Marshal(), 0o600))
	clock.Advance(2 * time.Minute) // past the lead: the new key signs

	close(h.gate(inGrace))
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(inGrace, 20*time.Second).Status, "previous key refused within the grace period")
	require.Len(t, ring.Keys().Keys, 2, "the dispatcher read the rotated file")

	clock.Advance(time.Hour) // past lead + grace: k1 is retired
	close(h.gate(late))
	forged := forgedDeadLetters(t, e.Client, 1)
	require.Contains(t, forged[0].Reason, "retired")
	inst := e.Instance(late)
	require.Equal(t, workflow.StatusRunning, inst.Status, "a result signed with a retired key completed the step")

	// New tasks carry the new key's token: they complete.
	fresh := start(t, e.Client, "held", "fresh")
	h.waitStarted(t, fresh)
	close(h.gate(fresh))
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(fresh, 20*time.Second).Status)
	require.Equal(t, float64(1), deadLettersByReason(t, d, "forged_result"))
}

// TestWithoutTaskTokensAnyResultIsAccepted documents the default: without
// keys, a result with no token completes the step.
func TestWithoutTaskTokensAnyResultIsAccepted(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(heldDef)
	e.Dispatcher(nil, dispatcher.Config{RepairInterval: -1})
	h := &holder{}
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"hold": h.handle})
	id := start(t, e.Client, "held", "open")
	h.waitStarted(t, id)
	require.NoError(t, e.Client.PublishEvent(context.Background(), workflow.Event{
		Kind: workflow.EventResult, Instance: id, Step: "a", Attempt: 1,
	}, "unsigned"))
	require.Equal(t, workflow.StatusCompleted, e.WaitTerminal(id, 20*time.Second).Status)
	close(h.gate(id))
}

// TestOutputsAreBoundToTaskTokens: with task tokens, an output written in
// advance under the attempt's plain output key (anyone allowed to write
// outputs can guess it) is never taken for the attempt's output: the
// worker stores under the token-derived key, and a result, even with a
// valid token, that names another key is dead-lettered as forged.
func TestOutputsAreBoundToTaskTokens(t *testing.T) {
	t.Parallel()
	e, keys, d, h := tokenSetup(t)
	ctx := context.Background()

	id := start(t, e.Client, "held", "output-victim")
	h.waitStarted(t, id)
	plain := workflow.OutputKey(id, "a", 1)
	require.NoError(t, e.Client.PutDataEncoded(ctx, plain, []byte(`"forged"`), nil))
	valid := keys.Sign(id, "a", 1, time.Now())
	require.NoError(t, e.Client.PublishEvent(ctx, workflow.Event{
		Kind: workflow.EventResult, Instance: id, Step: "a", Attempt: 1, Token: valid, OutputRef: plain,
	}, "forged-output"))
	forged := forgedDeadLetters(t, e.Client, 1)
	require.Contains(t, forged[0].Reason, "is not the key of attempt 1")
	require.Equal(t, workflow.StatusRunning, e.Instance(id).Status)

	close(h.gate(id))
	inst := e.WaitTerminal(id, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	require.Equal(t, workflow.TokenOutputKey(id, "a", 1, valid), inst.OutputRef)
	out, err := e.Client.LoadData(ctx, inst.OutputRef)
	require.NoError(t, err)
	require.Equal(t, "ran "+id, out, "the output written in advance was not taken")
	require.Equal(t, float64(1), deadLettersByReason(t, d, "forged_result"))
}

// TestEarlierOutputKey: which output keys have the shape of an earlier
// attempt's (the dispatcher then accepts one only as the step's recorded
// outcome).
func TestEarlierOutputKey(t *testing.T) {
	t.Parallel()
	tok := "k1.abc"
	earlier := workflow.TokenOutputKey("i", "s", 2, "k1.other")
	for _, tc := range []struct {
		name string
		ref  string
		want int
	}{
		{"an earlier attempt's", earlier, 2},
		{"its own", workflow.TokenOutputKey("i", "s", 3, tok), 0},
		{"plain key", workflow.OutputKey("i", "s", 2), 0},
		{"a later attempt's", workflow.TokenOutputKey("i", "s", 4, tok), 0},
		{"another step's", workflow.TokenOutputKey("i", "t", 2, tok), 0},
		{"another instance's", workflow.TokenOutputKey("j", "s", 2, tok), 0},
		{"bad tag", workflow.OutputKey("i", "s", 2) + ".xyz", 0},
		{"not hex", workflow.OutputKey("i", "s", 2) + ".zzzzzzzzzzzzzzzz", 0},
		{"padded attempt", "i.s.01.out.0123456789abcdef", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, ok := workflow.EarlierOutputKey(tc.ref, "i", "s", 3)
			require.Equal(t, tc.want != 0, ok)
			require.Equal(t, tc.want, a)
		})
	}
}

// tokenSetup starts a server with heldDef, a dispatcher signing tasks
// with one key, and a worker whose hold tasks wait for the test.
func tokenSetup(t *testing.T) (*jftest.Env, tasktoken.KeySet, *dispatcher.Dispatcher, *holder) {
	t.Helper()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(heldDef)
	k, err := tasktoken.NewKey()
	require.NoError(t, err)
	keys := tasktoken.KeySet{Keys: []tasktoken.Key{k}}
	ring, err := tasktoken.Load(keyFile(t, keys))
	require.NoError(t, err)
	d, _ := e.Dispatcher(nil, dispatcher.Config{TaskTokens: ring, RepairInterval: -1})
	h := &holder{}
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"hold": h.handle})
	return e, keys, d, h
}

// TestReplayedOutputMustBeTheRecordedOne: a once step's result may name
// an earlier attempt's output (the outcome that attempt recorded), but
// only the output the effect record names. A worker holding attempt 2's
// token that writes a tagged key of attempt 1 itself and reports it is
// dead-lettered as forged, before and after an outcome is recorded; the
// recorded outcome, recorded through the effect service with attempt 1's
// token, is accepted.
func TestReplayedOutputMustBeTheRecordedOne(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: once-replay
version: 1
steps:
  - {name: charge, kind: task, task: charge, once: true, retry: {max_attempts: 3, initial_interval: 100ms}}
`)
	k, err := tasktoken.NewKey()
	require.NoError(t, err)
	keys := tasktoken.KeySet{Keys: []tasktoken.Key{k}}
	ring, err := tasktoken.Static(keys)
	require.NoError(t, err)
	d, _ := e.Dispatcher(nil, dispatcher.Config{TaskTokens: ring, RepairInterval: -1})
	ctx := context.Background()
	id := start(t, e.Client, "once-replay", "r")
	attemptIs := func(n int) {
		jftest.Eventually(t, 20*time.Second, func() bool {
			inst := e.Instance(id)
			return inst != nil && inst.Steps["charge"] != nil && inst.Steps["charge"].Attempt == n && inst.Steps["charge"].Status == workflow.StepRunning
		}, "attempt %d of charge never ran", n)
	}
	attemptIs(1)
	now := time.Now()
	tok1, tok2 := keys.Sign(id, "charge", 1, now), keys.Sign(id, "charge", 2, now)
	// Attempt 1 fails retryably (a worker found the claim without outcome).
	require.NoError(t, e.Client.PublishEvent(ctx, workflow.Event{Kind: workflow.EventResult, Instance: id, Step: "charge", Attempt: 1, Token: tok1, Error: "effect outcome unknown"}, "a1"))
	attemptIs(2)

	forge := func(tag string) {
		forged := workflow.TokenOutputKey(id, "charge", 1, tag)
		require.NoError(t, e.Client.PutDataEncoded(ctx, forged, []byte(`"forged"`), nil))
		require.NoError(t, e.Client.PublishEvent(ctx, workflow.Event{Kind: workflow.EventResult, Instance: id, Step: "charge", Attempt: 2, Token: tok2, OutputRef: forged}, "forged-"+tag))
	}
	forge("before-record")
	dls := forgedDeadLetters(t, e.Client, 1)
	require.Contains(t, dls[0].Reason, "no recorded outcome")
	require.Equal(t, workflow.StatusRunning, e.Instance(id).Status, "a self-written output of an earlier attempt was accepted")

	// Attempt 1's claimer (paused, then awake) records its outcome late.
	claim := &jetstream.EffectRequest{Instance: id, Step: "charge", Attempt: 1, Token: tok1, Nonce: "n1"}
	var reply *jetstream.EffectReply
	jftest.Eventually(t, 20*time.Second, func() bool {
		reply, err = e.Client.RequestEffect(ctx, jetstream.EffectClaim, claim)
		return err == nil
	}, "the effect service never answered: %v", err)
	require.Equal(t, jetstream.EffectClaimed, reply.Status)
	out1 := workflow.TokenOutputKey(id, "charge", 1, tok1)
	require.NoError(t, e.Client.PutDataEncoded(ctx, out1, []byte(`"charged"`), nil))
	record := *claim
	record.Revision, record.OutputRef = reply.Revision, out1
	reply, err = e.Client.RequestEffect(ctx, jetstream.EffectRecord, &record)
	require.NoError(t, err)
	require.Equal(t, jetstream.EffectRecorded, reply.Status)

	forge("after-record")
	dls = forgedDeadLetters(t, e.Client, 2)
	require.Equal(t, workflow.StatusRunning, e.Instance(id).Status, "a self-written output of an earlier attempt was accepted")

	// Attempt 2's worker reports the recorded outcome: accepted.
	require.NoError(t, e.Client.PublishEvent(ctx, workflow.Event{Kind: workflow.EventResult, Instance: id, Step: "charge", Attempt: 2, Token: tok2, OutputRef: out1}, "replay"))
	inst := e.WaitTerminal(id, 20*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status)
	require.Equal(t, out1, inst.OutputRef)
	out, err := e.Client.LoadData(ctx, inst.OutputRef)
	require.NoError(t, err)
	require.Equal(t, "charged", out)
	require.Equal(t, float64(2), deadLettersByReason(t, d, "forged_result"))
}
