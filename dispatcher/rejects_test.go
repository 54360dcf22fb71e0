package dispatcher_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
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

// TestRejectedTriggersAreKeptOnceAndBounded: a rejected trigger is kept
// once, in the dead-letter stream, and only up to DLQMaxPayload of it
// (with the whole payload's size and SHA-256); the trigger stream drops
// it as soon as it is dead-lettered; and the dead-letter stream stays
// under its byte limit however many are rejected.
func TestRejectedTriggersAreKeptOnceAndBounded(t *testing.T) {
	t.Parallel()
	const dlqMax = 1 << 20
	e := jftest.Start(t, jetstream.Config{MaxPayload: 4096, DLQMaxBytes: dlqMax})
	e.Register("name: strict\nversion: 1\ntrigger: {subject: strict.in, key: id}\nsteps:\n  - {name: a, kind: task, task: echo}\n")
	d, _ := e.Dispatcher(nil, dispatcher.Config{})
	ctx := context.Background()
	prefix := jetstream.Config{}.WithDefaults().DLQMaxPayload

	oversize := []byte(fmt.Sprintf(`{"id":"big","pad":"%s"}`, bytes.Repeat([]byte("x"), 2*prefix)))
	require.NoError(t, e.Client.PublishRaw(ctx, "strict.in", oversize))
	notJSON := []byte(`{"id":`)
	require.NoError(t, e.Client.PublishRaw(ctx, "strict.in", notJSON))
	var dls []jetstream.DeadLetter
	jftest.Eventually(t, 20*time.Second, func() bool {
		var err error
		dls, err = e.Client.DeadLetters(ctx, 10)
		return err == nil && len(dls) == 2
	}, "two dead letters expected")
	for _, c := range []struct {
		payload   []byte
		truncated bool
	}{{oversize, true}, {notJSON, false}} {
		var dl *jetstream.DeadLetter
		sum := sha256.Sum256(c.payload)
		for i := range dls {
			if dls[i].SHA256 == hex.EncodeToString(sum[:]) {
				dl = &dls[i]
			}
		}
		require.NotNil(t, dl, "no dead letter with the payload's digest")
		require.Equal(t, len(c.payload), dl.Size)
		require.Equal(t, c.truncated, dl.Truncated)
		require.Equal(t, c.payload[:min(len(c.payload), prefix)], dl.Data, "the dead letter keeps a prefix of at most %d bytes", prefix)
	}
	jftest.Eventually(t, 20*time.Second, func() bool {
		counts, err := e.Client.StreamCounts(ctx)
		return err == nil && counts[jetstream.StreamTriggers] == 0
	}, "rejected triggers are still in %s", jetstream.StreamTriggers)

	// A flood of rejects: each dead letter holds a 64 KiB prefix, so a few
	// dozen fill the 1 MiB stream; the oldest go.
	const flood = 40
	for i := 0; i < flood; i++ {
		require.NoError(t, e.Client.PublishRaw(ctx, "strict.in", []byte(fmt.Sprintf(`{"id":"%d","pad":"%s"}`, i, bytes.Repeat([]byte("y"), prefix)))))
	}
	jftest.Eventually(t, 60*time.Second, func() bool { return d.Stats().DeadLettered >= flood+2 }, "the flood was not dead-lettered")
	bytesHeld, msgs, last := dlqUsage(t, e)
	require.LessOrEqual(t, bytesHeld, uint64(dlqMax))
	require.Less(t, msgs, uint64(flood), "the oldest dead letters were dropped")
	require.Contains(t, string(last.Data), `"id":"39"`, "the newest dead letter is kept")
	counts, err := e.Client.StreamCounts(ctx)
	require.NoError(t, err)
	require.Zero(t, counts[jetstream.StreamTriggers])
	t.Logf("%d dead letters of %d+ bytes each: the DLQ holds %d of them in %d bytes (limit %d)", flood+2, prefix, msgs, bytesHeld, dlqMax)
}

// dlqUsage reads the dead-letter stream's size and its newest record.
func dlqUsage(t *testing.T, e *jftest.Env) (bytesHeld, msgs uint64, last jetstream.DeadLetter) {
	t.Helper()
	st, err := e.Client.StreamState(context.Background(), jetstream.StreamDLQ)
	require.NoError(t, err)
	dls, err := e.Client.DeadLetters(context.Background(), 1000)
	require.NoError(t, err)
	require.NotEmpty(t, dls)
	return st.Bytes, st.Msgs, dls[len(dls)-1]
}

// TestTimerSubjectsHoldOnlyTimerSchedules: the timer subjects are
// captured by the event stream, which nothing but the dispatcher's timer
// guard reads there. A plain message, or a schedule jetflow did not make,
// published on a timer subject is dead-lettered and removed, while
// jetflow's own timers — one due soon, one due in an hour — stay and
// fire.
func TestTimerSubjectsHoldOnlyTimerSchedules(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register("name: nap\nversion: 1\nsteps:\n  - {name: z, kind: sleep, duration: 1s, next: a}\n  - {name: a, kind: task, task: echo}\n")
	e.Register("name: long-nap\nversion: 1\nsteps:\n  - {name: z, kind: sleep, duration: 1h}\n")
	e.Dispatcher(nil, dispatcher.Config{RepairInterval: -1})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	ctx := context.Background()
	long := start(t, e.Client, "long-nap", "l")
	jftest.Eventually(t, 20*time.Second, func() bool {
		in := e.Instance(long)
		return in != nil && len(in.Timers) == 1
	}, "the hour-long timer was not set")

	require.NoError(t, e.Client.PublishRaw(ctx, "jetflow.timer.x.y", []byte("plain")))
	require.NoError(t, e.Client.PublishRaw(ctx, "jetflow.timer.garbage", bytes.Repeat([]byte("z"), 1000)))
	require.NoError(t, e.Client.PublishSchedule(ctx, "jetflow.timer.x.every", "@every 1s", jetstream.EventSubject("x"), []byte("again and again")))
	short := start(t, e.Client, "nap", "n")

	var dls []jetstream.DeadLetter
	jftest.Eventually(t, 20*time.Second, func() bool {
		var err error
		dls, err = e.Client.DeadLettersSince(ctx, "timer", time.Time{}, 10)
		return err == nil && len(dls) == 3
	}, "three dead letters from timer subjects expected")
	subjects := map[string]string{}
	for _, dl := range dls {
		subjects[dl.SourceSubject] = dl.Reason
	}
	require.Contains(t, subjects, "jetflow.timer.x.y")
	require.Contains(t, subjects, "jetflow.timer.garbage")
	require.Contains(t, subjects["jetflow.timer.x.every"], `schedule "@every 1s"`)

	inst := e.WaitTerminal(short, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	// The hour-long timer is still stored, and the guard has looked at it
	// (it holds it, to look again after it is due).
	jftest.Eventually(t, 20*time.Second, func() bool {
		n, err := e.Client.AckPending(ctx, jetstream.StreamEvents, jetstream.ConsumerTimerGuard)
		return err == nil && n == 1
	}, "the guard does not hold exactly the hour-long timer")
	st, err := e.Client.StreamState(ctx, jetstream.StreamEvents)
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Msgs, "only the hour-long timer is left in %s", jetstream.StreamEvents)
	require.Equal(t, workflow.StatusRunning, e.Instance(long).Status)
}

// TestPartlyRejectedTriggerIsNotLost: a trigger bound to two workflows
// starts the one whose key it has and dead-letters the other; when that
// dead letter cannot be written, the trigger is not acked but redelivered
// until it is, and the start it made stays one instance.
func TestPartlyRejectedTriggerIsNotLost(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register("name: has-key\nversion: 1\ntrigger: {subject: both.in, key: id}\nsteps:\n  - {name: a, kind: sleep, duration: 1h}\n")
	e.Register("name: no-key\nversion: 1\ntrigger: {subject: both.in, key: missing}\nsteps:\n  - {name: a, kind: sleep, duration: 1h}\n")
	var failed atomic.Int32
	backend := &faulty{Backend: e.Client, failDeadLetter: func(m jetstream.Delivery) bool {
		return m.Deliveries() == 1 && failed.Add(1) == 1
	}}
	e.Dispatcher(backend, dispatcher.Config{RetryDelay: 10 * time.Millisecond})
	ctx := context.Background()
	require.NoError(t, e.Client.PublishRaw(ctx, "both.in", []byte(`{"id":"k1"}`)))

	var dls []jetstream.DeadLetter
	jftest.Eventually(t, 20*time.Second, func() bool {
		var err error
		dls, err = e.Client.DeadLetters(ctx, 10)
		return err == nil && len(dls) > 0
	}, "the binding without a key was never dead-lettered")
	require.Len(t, dls, 1)
	require.Equal(t, "both.in", dls[0].SourceSubject)
	require.Contains(t, dls[0].Reason, "workflow no-key")
	require.EqualValues(t, 1, failed.Load(), "the first dead letter failed")
	ids, err := e.Client.ListInstanceIDs(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{workflow.InstanceID("has-key", "k1")}, ids)
}
