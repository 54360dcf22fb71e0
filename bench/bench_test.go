package bench_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/bench"
	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
)

// Smoke runs of every workload: correctness counts only, never timings.
func TestWorkloadsSmoke(t *testing.T) {
	t.Parallel()
	for _, o := range []bench.Options{
		{Workload: "throughput", N: 200, Concurrency: 50},
		{Workload: "latency", N: 20, Rate: 100},
		{Workload: "fanout", N: 300},
	} {
		t.Run(o.Workload, func(t *testing.T) {
			t.Parallel()
			e := jftest.Start(t, jetstream.Config{})
			e.Dispatcher(nil, dispatcher.Config{})
			e.Worker(nil, worker.Config{}, map[string]worker.Handler{"noop": func(context.Context, *worker.Task) (any, error) { return nil, nil }})
			o.Client = e.NewClient()
			o.Timeout = 2 * time.Minute
			res, err := bench.Run(context.Background(), o)
			require.NoError(t, err)
			require.Equal(t, o.N, res.Started)
			require.Equal(t, o.N, res.Completed)
			require.Zero(t, res.Failed)
			require.Zero(t, res.Lost)
			require.Zero(t, res.Duplicates)
			// The run's JSON carries the dispatcher's counters.
			require.Len(t, res.Dispatchers, 1)
			var answer struct {
				Stats dispatcher.Stats `json:"stats"`
			}
			require.NoError(t, json.Unmarshal(res.Dispatchers[0], &answer))
			require.GreaterOrEqual(t, answer.Stats.Started, uint64(o.N))
		})
	}
}

// A workflow that does not finish within the run's timeout makes the run
// fail with ErrIncorrect and counts as lost (throughput: started and never
// announced or stored as ended; fanout: missing from the parent's counts).
func TestUnfinishedWorkIsReportedLost(t *testing.T) {
	t.Parallel()
	for _, o := range []bench.Options{
		{Workload: "throughput", N: 40, Concurrency: 40},
		{Workload: "fanout", N: 40},
	} {
		t.Run(o.Workload, func(t *testing.T) {
			t.Parallel()
			e := jftest.Start(t, jetstream.Config{})
			e.Dispatcher(nil, dispatcher.Config{})
			var calls atomic.Int32
			release := make(chan struct{})
			e.Worker(nil, worker.Config{}, map[string]worker.Handler{"noop": func(ctx context.Context, _ *worker.Task) (any, error) {
				if calls.Add(1) == 5 {
					select { // this task does not end while the run lasts
					case <-release:
					case <-ctx.Done():
					}
				}
				return nil, nil
			}})
			t.Cleanup(func() { close(release) }) // runs before the worker stops
			o.Client = e.NewClient()
			o.Timeout = 5 * time.Second
			res, err := bench.Run(context.Background(), o)
			require.ErrorIs(t, err, bench.ErrIncorrect)
			require.Equal(t, 1, res.Lost, "%+v", res)
		})
	}
}

func TestUnknownWorkloadIsAnError(t *testing.T) {
	t.Parallel()
	_, err := bench.Run(context.Background(), bench.Options{Workload: "nope"})
	require.ErrorContains(t, err, `unknown workload "nope"`)
}
