package main

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// waitDeadLetters polls until JETFLOW_DLQ holds n dead letters.
func waitDeadLetters(t *testing.T, e *jftest.Env, n int) []jetstream.DeadLetter {
	t.Helper()
	var dls []jetstream.DeadLetter
	require.Eventually(t, func() bool {
		var err error
		dls, err = e.Client.DeadLetters(context.Background(), 1000)
		return err == nil && len(dls) >= n
	}, 30*time.Second, 20*time.Millisecond)
	require.Len(t, dls, n)
	return dls
}

// TestDLQReplayAfterRegisteringStartsOneInstance: starts of a workflow
// nobody registered are dead-lettered; once the definition is registered,
// `jetflow dlq replay` starts each exactly once, also when it runs twice
// and from two operators at once, and the dead letters are marked.
func TestDLQReplayAfterRegisteringStartsOneInstance(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	_, _ = e.Dispatcher(e.NewClient(), dispatcher.Config{})
	_, _ = e.Worker(e.NewClient(), worker.Config{}, map[string]worker.Handler{"echo": echo})
	ctx := context.Background()
	keys := []string{"k1", "k2", "k3"}
	for _, k := range keys {
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "late", EventKey: k, Payload: []byte(`{"key":"` + k + `"}`)}))
	}
	dls := waitDeadLetters(t, e, len(keys))
	for _, d := range dls {
		require.Contains(t, d.Reason, "late")
		require.False(t, d.Replayed)
	}

	// Nothing to do without a filter; --dry-run changes nothing.
	_, _, err := jetflow(t, "--nats-url", e.URL, "dlq", "replay")
	require.ErrorContains(t, err, "--all")
	out, _, err := jetflow(t, "--nats-url", e.URL, "--json", "dlq", "replay", "--all", "--dry-run")
	require.NoError(t, err)
	var sum dlqSummary
	require.NoError(t, json.Unmarshal([]byte(out), &sum))
	require.Equal(t, map[string]int{"would_replay": 3}, sum.Counts)

	e.Register("name: late\nversion: 1\nsteps:\n  - {name: a, kind: task, task: echo}\n")
	// Racing replays of one dead letter: one publishes, the others find
	// it marked.
	require.Equal(t, map[string]int{"replayed": 1, "already": 7}, raceReplays(t, e, dls[0], 8))
	outs := replayTwice(t, e, "--reason", "late")
	require.Equal(t, 2, outs[0].Counts["replayed"]+outs[1].Counts["replayed"], "each dead letter replayed once: %+v", outs)
	require.Equal(t, 4, outs[0].Counts["already_replayed"]+outs[1].Counts["already_replayed"])

	for _, k := range keys {
		in := e.WaitTerminal(workflow.InstanceID("late", k), 30*time.Second)
		require.Equal(t, workflow.StatusCompleted, in.Status)
		require.Equal(t, 1, in.Steps["a"].Attempt)
	}
	// A third run replays nothing; the listing says they were replayed.
	out, _, err = jetflow(t, "--nats-url", e.URL, "--json", "dlq", "replay", "--all")
	require.NoError(t, err)
	sum = dlqSummary{}
	require.NoError(t, json.Unmarshal([]byte(out), &sum))
	require.Equal(t, map[string]int{"already_replayed": 3}, sum.Counts)
	dls = waitDeadLetters(t, e, 3)
	for _, d := range dls {
		require.True(t, d.Replayed, "dead letter %d", d.Seq)
	}
	// Every instance ran once: one per key, no second start.
	ids, err := e.Client.ListInstanceIDs(ctx)
	require.NoError(t, err)
	n := 0
	for _, id := range ids {
		if strings.HasPrefix(id, "late-") {
			n++
		}
	}
	require.Equal(t, 3, n)

	// --force replays again; the instances exist, so nothing starts twice.
	out, _, err = jetflow(t, "--nats-url", e.URL, "--json", "dlq", "replay", "--seq", strconv.FormatUint(dls[0].Seq, 10), "--force")
	require.NoError(t, err)
	sum = dlqSummary{}
	require.NoError(t, json.Unmarshal([]byte(out), &sum))
	require.Equal(t, map[string]int{"replayed": 1}, sum.Counts)

	// Purge removes the selected dead letters and only those.
	out, _, err = jetflow(t, "--nats-url", e.URL, "dlq", "purge", "--seq", strconv.FormatUint(dls[1].Seq, 10))
	require.NoError(t, err)
	require.Contains(t, out, "purged 1")
	left := waitDeadLetters(t, e, 2)
	require.NotContains(t, []uint64{left[0].Seq, left[1].Seq}, dls[1].Seq)
	_, _, err = jetflow(t, "--nats-url", e.URL, "dlq", "purge", "--all")
	require.NoError(t, err)
	waitDeadLetters(t, e, 0)
}

// TestDLQReplayKeepsHeadersAndRefusesTruncated: a replay publishes the
// rejected message's own headers (a trigger keyed by a header starts its
// instance under that key); a payload the stream kept only in part is not
// replayed.
func TestDLQReplayKeepsHeadersAndRefusesTruncated(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{DLQMaxPayload: 1024})
	e.Register("name: hdr\nversion: 1\ntrigger: {subject: hdr.in, key: 'header:Order-Id'}\nsteps:\n  - {name: a, kind: task, task: echo}\n")
	_, _ = e.Dispatcher(e.NewClient(), dispatcher.Config{})
	ctx := context.Background()
	// Rejected: not JSON (the reason names it). Then one too large to keep whole.
	_, err := e.Client.Publish(ctx, "hdr.in", []byte("{not json"), map[string]string{"Order-Id": "o-7"})
	require.NoError(t, err)
	big := `{"pad":"` + strings.Repeat("x", 4096) + `"`
	_, err = e.Client.Publish(ctx, "hdr.in", []byte(big), map[string]string{"Order-Id": "o-8"})
	require.NoError(t, err)
	dls := waitDeadLetters(t, e, 2)
	require.Equal(t, "o-7", dls[0].Header.Get("Order-Id"), "the dead letter keeps the message's headers")
	require.True(t, dls[1].Truncated)

	out, _, err := jetflow(t, "--nats-url", e.URL, "--json", "dlq", "replay", "--subject", "hdr.*")
	require.NoError(t, err)
	var sum dlqSummary
	require.NoError(t, json.Unmarshal([]byte(out), &sum))
	require.Equal(t, map[string]int{"replayed": 1, "not_replayable": 1}, sum.Counts)
	// The replayed one is rejected again, with its header: a new dead
	// letter that still carries Order-Id.
	dls = waitDeadLetters(t, e, 3)
	require.Equal(t, "o-7", dls[2].Header.Get("Order-Id"))
	require.Equal(t, "hdr.in", dls[2].SourceSubject)
}

// TestDLQFilter: a filter with no field selects nothing; the subject
// filter is NATS subject matching.
func TestDLQFilter(t *testing.T) {
	t.Parallel()
	d := jetstream.DeadLetter{Seq: 7, Reason: "unknown workflow late version 1", SourceSubject: "orders.eu.created"}
	for _, tc := range []struct {
		name string
		f    jetstream.DLQFilter
		want bool
	}{
		{"empty selects nothing", jetstream.DLQFilter{}, false},
		{"all", jetstream.DLQFilter{All: true}, true},
		{"seq", jetstream.DLQFilter{Seqs: []uint64{3, 7}}, true},
		{"other seq", jetstream.DLQFilter{Seqs: []uint64{3}}, false},
		{"reason", jetstream.DLQFilter{Reason: "late"}, true},
		{"other reason", jetstream.DLQFilter{Reason: "early"}, false},
		{"subject *", jetstream.DLQFilter{Subject: "orders.*.created"}, true},
		{"subject >", jetstream.DLQFilter{Subject: "orders.>"}, true},
		{"subject other", jetstream.DLQFilter{Subject: "orders.*"}, false},
		{"and", jetstream.DLQFilter{Reason: "late", Subject: "orders.us.*"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { require.Equal(t, tc.want, tc.f.Match(d)) })
	}
}

// TestDLQReplayOfScheduleFiresStartsTheirInstances: fires of a schedule
// whose workflow nobody registered (the server's fires, and a manual
// one) are dead-lettered; once the workflow is registered, replaying
// them starts, for each fire, the instance that fire named (the id
// derived from the server's fire time, which no client can publish),
// once, however often and however concurrently the replay runs.
func TestDLQReplayOfScheduleFiresStartsTheirInstances(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	ctx := context.Background()
	const steps = "steps:\n  - {name: a, kind: task, task: echo}\n"
	// The server fires the schedule of a workflow no dispatcher knows.
	every, err := workflow.Parse("t.yaml", []byte("name: cronlate\nversion: 1\nschedules:\n  - {name: tick, cron: \"@every 1s\", overlap: allow}\n"+steps))
	require.NoError(t, err)
	require.NoError(t, e.Client.SyncSchedules(ctx, every))
	nc, err := nats.Connect(e.URL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	require.NoError(t, err)
	st, err := js.Stream(ctx, jetstream.StreamSchedules)
	require.NoError(t, err)
	fireSubject := jetstream.FireSubject("cronlate", "tick")
	fires := func() uint64 {
		info, err := st.Info(ctx, natsjs.WithSubjectFilter(fireSubject))
		require.NoError(t, err)
		return info.State.Subjects[fireSubject]
	}
	jftest.Eventually(t, 30*time.Second, func() bool { return fires() > 0 }, "the schedule never fired")
	// Stop it, then read the fires it made: the instances they name.
	none, err := workflow.Parse("t.yaml", []byte("name: cronlate\nversion: 1\n"+steps))
	require.NoError(t, err)
	require.NoError(t, e.Client.SyncSchedules(ctx, none))
	spec, err := workflow.ParseScheduleSpec("@every 1s", "")
	require.NoError(t, err)
	want := map[string]bool{}
	info, err := st.Info(ctx)
	require.NoError(t, err)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil || m.Subject != fireSubject {
			continue
		}
		next, err := time.Parse(time.RFC3339Nano, m.Header.Get("Nats-Schedule-Next"))
		require.NoError(t, err, "a fire of the server carries its next fire time")
		want[workflow.InstanceID("cronlate", workflow.ScheduleEventKey("tick", spec.FireTime(next)))] = true
	}
	require.NotEmpty(t, want)
	// And a manual fire (jetflow schedule trigger).
	manual := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
	require.NoError(t, e.Client.TriggerSchedule(ctx, "cronlate", "tick", manual))
	want[workflow.InstanceID("cronlate", workflow.ScheduleManualKey("tick", manual))] = true

	// A dispatcher dead-letters them all: the workflow is unknown.
	_, _ = e.Dispatcher(e.NewClient(), dispatcher.Config{})
	_, _ = e.Worker(e.NewClient(), worker.Config{}, map[string]worker.Handler{"echo": echo})
	dls := waitDeadLetters(t, e, len(want))
	for _, d := range dls {
		require.Contains(t, d.Reason, "unknown workflow")
		require.Equal(t, fireSubject, d.SourceSubject)
	}
	// Registered again, with the schedule (which will not fire in the test).
	e.Register("name: cronlate\nversion: 1\nschedules:\n  - {name: tick, cron: \"@yearly\", overlap: allow}\n" + steps)

	// Racing replays of one dead letter: one publishes.
	require.Equal(t, map[string]int{"replayed": 1, "already": 7}, raceReplays(t, e, dls[0], 8))
	// Two operators replay them all at once.
	outs := replayTwice(t, e, "--subject", "jetflow.fire.cronlate.>")
	require.Equal(t, len(want)-1, outs[0].Counts["replayed"]+outs[1].Counts["replayed"], "each dead letter replayed once: %+v", outs)

	started := func() map[string]bool {
		ids, err := e.Client.ListInstanceIDs(ctx)
		require.NoError(t, err)
		got := map[string]bool{}
		for _, id := range ids {
			if strings.HasPrefix(id, "cronlate-") {
				got[id] = true
			}
		}
		return got
	}
	jftest.Eventually(t, 30*time.Second, func() bool { return len(started()) >= len(want) }, "not every replayed fire started")
	for id := range want {
		in := e.WaitTerminal(id, 30*time.Second)
		require.Equal(t, workflow.StatusCompleted, in.Status, id)
		require.Equal(t, 1, in.Steps["a"].Attempt, id)
	}
	// --force replays them again: the same instances, nothing twice.
	out, _, err := jetflow(t, "--nats-url", e.URL, "--json", "dlq", "replay", "--subject", "jetflow.fire.cronlate.>", "--force")
	require.NoError(t, err)
	sum := dlqSummary{}
	require.NoError(t, json.Unmarshal([]byte(out), &sum))
	require.Equal(t, map[string]int{"replayed": len(want)}, sum.Counts)
	// Those the stream's duplicate window absorbed (same message id);
	// past the window a replay is a new message: it names the same fire.
	for _, d := range dls {
		h := map[string]string{jetstream.HeaderMsgID: "replay/" + strconv.FormatUint(d.Seq, 10) + "/past-the-window"}
		for k := range d.Header {
			h[k] = d.Header.Get(k)
		}
		_, err := e.Client.Publish(ctx, d.SourceSubject, d.Data, h)
		require.NoError(t, err)
	}
	jftest.Eventually(t, 30*time.Second, func() bool { return fires() == 0 }, "the forced replays were not consumed")
	require.Equal(t, want, started(), "the instances started are exactly those the fires named")
	for id := range want {
		require.Equal(t, 1, e.Instance(id).Steps["a"].Attempt, id)
	}
	require.Len(t, waitDeadLetters(t, e, len(want)), len(want), "a replay was dead-lettered again")
}

// TestDLQReplayOfDebounceTimerStartsItsWindow: the timer of a debounce
// window whose workflow's definition was removed is dead-lettered; once
// the workflow is registered again, replaying it closes the window and
// starts its one instance (named by the window's first event), once,
// however often the replay runs: the window's record, not the message,
// decides.
func TestDLQReplayOfDebounceTimerStartsItsWindow(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	ctx := context.Background()
	const src = "name: debx\nversion: 1\ntrigger: {subject: debx.events, key: k, debounce: 15s}\nsteps:\n  - {name: a, kind: task, task: echo}\n"
	e.Register(src)
	nc, err := nats.Connect(e.URL)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := natsjs.New(nc)
	require.NoError(t, err)
	st, err := js.Stream(ctx, jetstream.StreamSchedules)
	require.NoError(t, err)
	count := func(filter string) uint64 {
		info, err := st.Info(ctx, natsjs.WithSubjectFilter(filter))
		require.NoError(t, err)
		return info.State.Msgs
	}
	// An event opens the window of key "a" and arms its timer; the
	// dispatcher stops, and the definition is removed, before it fires
	// (15 s: room for a loaded machine).
	_, d1 := e.Dispatcher(e.NewClient(), dispatcher.Config{})
	ack, err := js.Publish(ctx, "debx.events", []byte(`{"k": "a", "n": 7}`))
	require.NoError(t, err)
	id := jetstream.DebounceID("a")
	jftest.Eventually(t, 30*time.Second, func() bool { return count("jetflow.schedule.debx.debounce."+id) > 0 }, "the window's timer was not armed")
	require.NoError(t, d1.Stop())
	defs, err := js.KeyValue(ctx, jetstream.BucketDefinitions)
	require.NoError(t, err)
	require.NoError(t, defs.Purge(ctx, jetstream.DefinitionKey("debx", 1)))
	_, _ = e.Dispatcher(e.NewClient(), dispatcher.Config{})
	_, _ = e.Worker(e.NewClient(), worker.Config{}, map[string]worker.Handler{"echo": echo})
	timer := waitDeadLetters(t, e, 1)[0]
	require.Contains(t, timer.Reason, "unknown workflow")
	require.Equal(t, "jetflow.fire.debx.debounce."+id, timer.SourceSubject)

	e.Register(src)
	outs := replayTwice(t, e, "--subject", "jetflow.fire.debx.>")
	require.Equal(t, 1, outs[0].Counts["replayed"]+outs[1].Counts["replayed"], "%+v", outs)
	want := workflow.InstanceID("debx", workflow.DebounceEventKey("a", ack.Sequence))
	in := e.WaitTerminal(want, 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, in.Status)
	// Replayed again past the stream's duplicate window: the window is
	// resolved, nothing starts.
	h := map[string]string{jetstream.HeaderMsgID: "replay/" + strconv.FormatUint(timer.Seq, 10) + "/past-the-window"}
	_, err = e.Client.Publish(ctx, timer.SourceSubject, timer.Data, h)
	require.NoError(t, err)
	jftest.Eventually(t, 30*time.Second, func() bool { return count("jetflow.fire.debx.>") == 0 }, "the second replay was not consumed")
	ids, err := e.Client.ListInstanceIDs(ctx)
	require.NoError(t, err)
	var got []string
	for _, id := range ids {
		if strings.HasPrefix(id, "debx-") {
			got = append(got, id)
		}
	}
	require.Equal(t, []string{want}, got)
	require.Equal(t, 1, e.Instance(want).Steps["a"].Attempt)
}

// raceReplays replays dead letter d from n clients at once and counts
// the outcomes: "replayed", "already" (ErrAlreadyReplayed), or the error.
func raceReplays(t *testing.T, e *jftest.Env, d jetstream.DeadLetter, n int) map[string]int {
	t.Helper()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results = map[string]int{}
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := e.NewClient().ReplayDeadLetter(context.Background(), d)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				results["replayed"]++
			case errors.Is(err, jetstream.ErrAlreadyReplayed):
				results["already"]++
			default:
				results[err.Error()]++
			}
		}()
	}
	wg.Wait()
	return results
}

// replayTwice runs two `jetflow dlq replay <flag> <value>` at once, as two
// operators would, and returns their summaries.
func replayTwice(t *testing.T, e *jftest.Env, flag, value string) []dlqSummary {
	t.Helper()
	var wg sync.WaitGroup
	outs := make([]dlqSummary, 2)
	for i := range outs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, _, err := jetflow(t, "--nats-url", e.URL, "--json", "dlq", "replay", flag, value)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal([]byte(out), &outs[i]))
		}()
	}
	wg.Wait()
	return outs
}
