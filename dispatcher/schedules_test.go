package dispatcher_test

import (
	"context"
	"slices"
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

// scheduled lists the instances a schedule started, by fire time, and
// checks each id is the one derived from (workflow, schedule, fire time).
func scheduled(t *testing.T, c *jetstream.Client, wf, schedule string) ([]time.Time, map[time.Time]*workflow.Instance) {
	t.Helper()
	ctx := context.Background()
	ids, err := c.ListInstanceIDs(ctx)
	require.NoError(t, err)
	byFire := map[time.Time]*workflow.Instance{}
	var fires []time.Time
	prefix := "schedule:" + schedule + "@"
	for _, id := range ids {
		inst, _, err := c.GetInstance(ctx, id)
		if err != nil || inst.Workflow != wf || !strings.HasPrefix(inst.EventKey, prefix) || strings.Contains(inst.EventKey, "@manual:") {
			continue
		}
		stamp := strings.TrimPrefix(inst.EventKey, prefix)
		at, err := time.Parse(time.RFC3339, stamp[:min(len(stamp), len(time.RFC3339)-5)])
		require.NoError(t, err, "event key %q", inst.EventKey)
		if other, dup := byFire[at]; dup {
			t.Fatalf("fire time %s started twice: %s and %s", at, other.ID, inst.ID)
		}
		require.Equal(t, workflow.InstanceID(wf, workflow.ScheduleEventKey(schedule, at)), inst.ID, "instance id not derived from (workflow, schedule, fire time)")
		byFire[at] = inst
		fires = append(fires, at)
	}
	slices.SortFunc(fires, func(a, b time.Time) int { return a.Compare(b) })
	return fires, byFire
}

const tickDef = `
name: ticker
version: 1
schedules:
  - {name: tick, cron: "@every 1s", overlap: allow, input: '{"n": 1}'}
steps:
  - {name: a, kind: task, task: noop}
`

// TestScheduleEverySecondOncePerFireTime: an @every 1s schedule with two
// dispatchers yields one instance per fire time, each with the id derived
// from the fire time, with every fire handed back once after its start
// (so a second dispatcher starts it again); and the fires go on after a
// dispatcher restart, after every dispatcher was down (the fires waited
// in the stream: no gap) and after a server restart. Fires missed while
// the server is down are not caught up: the server fires once when it
// comes back (docs/schedules.md).
func TestScheduleEverySecondOncePerFireTime(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(tickDef)
	noop := map[string]worker.Handler{"noop": func(context.Context, *worker.Task) (any, error) { return nil, nil }}
	// Every fire's first delivery is handed back after its start.
	var handedBack atomic.Int64
	redelivering := func() dispatcher.Backend {
		return &faulty{Backend: e.NewClient(), redeliverFire: func(jetstream.Delivery) bool {
			handedBack.Add(1)
			return true
		}}
	}
	cfg := dispatcher.Config{}
	_, w := e.Worker(nil, worker.Config{}, noop)
	_, d1 := e.Dispatcher(redelivering(), cfg)
	_, d2 := e.Dispatcher(redelivering(), cfg)

	waitFires := func(n int, what string) []time.Time {
		var fires []time.Time
		jftest.Eventually(t, 30*time.Second, func() bool {
			fires, _ = scheduled(t, e.Client, "ticker", "tick")
			return len(fires) >= n
		}, "%s: fewer than %d fires", what, n)
		return fires
	}
	fires := waitFires(5, "two dispatchers")
	require.Positive(t, handedBack.Load(), "no fire was handed back after its start")
	// One dispatcher restarts; the other goes on.
	require.NoError(t, d1.Stop())
	waitFires(len(fires)+2, "one dispatcher")
	_, d1 = e.Dispatcher(redelivering(), cfg)
	fires = waitFires(10, "dispatcher restarted")

	// Every dispatcher down for 2s, the server up: the fires wait in the
	// stream and are started when the dispatchers are back (no gap).
	require.NoError(t, d1.Stop())
	require.NoError(t, d2.Stop())
	time.Sleep(2 * time.Second) // the outage under test
	_, d1 = e.Dispatcher(redelivering(), cfg)
	_, d2 = e.Dispatcher(redelivering(), cfg)
	fires = waitFires(len(fires)+3, "dispatchers back")

	// The server restarts on the same store.
	require.NoError(t, d1.Stop())
	require.NoError(t, d2.Stop())
	require.NoError(t, w.Stop())
	// Down for 3s: fires fall due while nothing runs.
	down := time.Now()
	e.RestartAfter(3 * time.Second)
	up := time.Now()
	_, w = e.Worker(nil, worker.Config{}, noop)
	e.Dispatcher(redelivering(), cfg)
	e.Dispatcher(redelivering(), cfg)
	fires = waitFires(len(fires)+4, "server restarted")
	_ = w

	// Consecutive fires are 1s apart, except one gap over the server's
	// downtime: the missed fire times are not caught up, and the fire
	// after the gap is at (or just after) the restart.
	gaps := 0
	for i := 1; i < len(fires); i++ {
		step := fires[i].Sub(fires[i-1])
		require.Positive(t, step)
		if step == time.Second {
			continue
		}
		gaps++
		require.False(t, fires[i-1].After(down.Add(time.Second)), "gap after %s does not start at the server stop (%s): %v", fires[i-1], down, fires)
		require.False(t, fires[i].Before(up.Add(-time.Second)), "gap ends at %s, before the server came back (%s): %v", fires[i], up, fires)
	}
	require.Equal(t, 1, gaps, "fire times: %v", fires)
	t.Logf("%d fire times, %d gap (server down %s .. %s)", len(fires), gaps, down.Format(time.StampMilli), up.Format(time.StampMilli))
}

// TestScheduleOverlapSkip: with overlap: skip, a run that outlasts the
// interval makes the next fires skip; no two runs of the schedule are
// ever running at once (from the stored instances: each run is created
// after the one before it ended), with two dispatchers.
func TestScheduleOverlapSkip(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: slow
version: 1
schedules:
  - {name: tick, cron: "@every 1s"}
steps:
  - {name: a, kind: task, task: slow}
`)
	var mu sync.Mutex
	running, most := 0, 0
	e.Worker(nil, worker.Config{Concurrency: 4}, map[string]worker.Handler{"slow": func(ctx context.Context, _ *worker.Task) (any, error) {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		select { // the work: longer than two intervals
		case <-time.After(2500 * time.Millisecond):
		case <-ctx.Done():
		}
		return nil, nil
	}})
	e.Dispatcher(e.NewClient(), dispatcher.Config{})
	e.Dispatcher(e.NewClient(), dispatcher.Config{})
	var byFire map[time.Time]*workflow.Instance
	var fires []time.Time
	jftest.Eventually(t, 40*time.Second, func() bool {
		fires, byFire = scheduled(t, e.Client, "slow", "tick")
		done := 0
		for _, in := range byFire {
			if in.Status.Terminal() {
				done++
			}
		}
		return done >= 3
	}, "fewer than 3 runs ended")
	for i := 1; i < len(fires); i++ {
		prev, cur := byFire[fires[i-1]], byFire[fires[i]]
		require.True(t, prev.Status.Terminal(), "run %s (%s) started while %s (%s) was not ended", cur.ID, fires[i], prev.ID, fires[i-1])
		require.False(t, cur.Created.Before(prev.Ended), "run %s created %s, before %s ended %s", cur.ID, cur.Created, prev.ID, prev.Ended)
	}
	st, _, err := e.Client.ScheduleState(context.Background(), "slow", "tick")
	require.NoError(t, err)
	require.Positive(t, st.Skipped, "no fire was skipped: %+v", st)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, most, "two runs' tasks ran at once")
}

// TestSchedulePauseResumeTriggerRemove: a paused schedule skips its fires
// (and a manual trigger still runs); resumed, it fires again; a new
// version without it removes it from the server.
func TestSchedulePauseResumeTriggerRemove(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(strings.Replace(tickDef, "overlap: allow, ", "", 1))
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"noop": func(context.Context, *worker.Task) (any, error) { return nil, nil }})
	e.Dispatcher(nil, dispatcher.Config{})
	ctx := context.Background()
	count := func() int { f, _ := scheduled(t, e.Client, "ticker", "tick"); return len(f) }
	jftest.Eventually(t, 20*time.Second, func() bool { return count() >= 2 }, "schedule did not fire")

	require.NoError(t, e.Client.SetSchedulePaused(ctx, "ticker", "tick", true))
	st, _, err := e.Client.ScheduleState(ctx, "ticker", "tick")
	require.NoError(t, err)
	before, skipped := count(), st.Skipped
	jftest.Eventually(t, 20*time.Second, func() bool {
		st, _, _ = e.Client.ScheduleState(ctx, "ticker", "tick")
		return st.Skipped >= skipped+2
	}, "paused schedule: fires were not seen")
	require.LessOrEqual(t, count(), before+1, "paused schedule started runs (one fire may have been decided before the pause)")

	// A manual trigger runs while paused.
	require.NoError(t, e.Client.TriggerSchedule(ctx, "ticker", "tick", time.Now()))
	jftest.Eventually(t, 20*time.Second, func() bool {
		ids, _ := e.Client.ListInstanceIDs(ctx)
		for _, id := range ids {
			if in := e.Instance(id); in != nil && strings.HasPrefix(in.EventKey, "schedule:tick@manual:") {
				return true
			}
		}
		return false
	}, "manual trigger did not start a run")

	paused := count()
	require.NoError(t, e.Client.SetSchedulePaused(ctx, "ticker", "tick", false))
	jftest.Eventually(t, 20*time.Second, func() bool { return count() >= paused+2 }, "resumed schedule did not fire")

	// Version 2 has no schedule: it is removed from the server.
	e.Register(strings.Replace(strings.Replace(tickDef, "version: 1", "version: 2", 1), "schedules:\n  - {name: tick, cron: \"@every 1s\", overlap: allow, input: '{\"n\": 1}'}\n", "", 1))
	jftest.Eventually(t, 20*time.Second, func() bool {
		have, err := e.Client.InstalledSchedules(ctx, "ticker")
		return err == nil && len(have) == 1 && have[0].Removed
	}, "schedule not removed")
}
