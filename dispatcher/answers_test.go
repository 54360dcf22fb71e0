package dispatcher_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// TestLostAnswersNeitherStallNorRepeatSteps: the server stored a pass's
// CAS, or the tasks it then published, but the answer never reached the
// dispatcher ("executed, then timed out": a request to a stream leader
// that died, now given up after jetstream.Config.RequestTimeout). The pass
// fails and its events are retried; the retry finds the write in the
// store and publishes what the lost pass had decided (again, for a lost
// publish: the task's message id makes the copy a no-op). Each instance
// loses the answers of its first and third commit (the Create, and the
// commit of step b's result, so neither task a nor task c was published
// by the pass that decided it) and of its first published decision (task
// b, stored). Every instance completes, each step has one accepted
// result, and each step's handler ran exactly once.
func TestLostAnswersNeitherStallNorRepeatSteps(t *testing.T) {
	t.Parallel()
	n := 100
	if testing.Short() || raceDetector {
		n = 40
	}
	e := jftest.Start(t, jetstream.Config{})
	e.Register(fmt.Sprintf(chainDef, "lchain", "lstep"))
	var mu sync.Mutex
	seen := map[string]int{}
	lose := func(id, what string) bool {
		mu.Lock()
		defer mu.Unlock()
		seen[id+" "+what]++
		k := seen[id+" "+what]
		return (what == "commit" && (k == 1 || k == 3)) || (what == "publish" && k == 1)
	}
	backend := &faulty{
		Backend:     e.Client,
		loseCommit:  func(in *workflow.Instance) bool { return lose(in.ID, "commit") },
		losePublish: func(dec workflow.Decision) bool { return lose(decisionInstance(dec), "publish") },
	}
	d, _ := e.Dispatcher(backend, dispatcher.Config{RetryDelay: 100 * time.Millisecond})
	l := newEffectLedger()
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"lstep": l.handler("w")})

	ids := make([]string, n)
	for i := range ids {
		key := fmt.Sprintf("l-%d", i)
		ids[i] = workflow.InstanceID("lchain", key)
		require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "lchain", EventKey: key, Payload: []byte(`{}`)}))
	}
	for _, id := range ids {
		inst := e.WaitTerminal(id, 60*time.Second)
		require.Equal(t, workflow.StatusCompleted, inst.Status, "%s: %s", id, inst.Error)
	}
	checkAcceptedOnce(t, e, l, ids)
	for _, id := range ids {
		for _, step := range []string{"a", "b", "c"} {
			key := workflow.EffectKey(id, step)
			require.Equal(t, 1, l.callsOf(key), "%s: handler calls", key)
		}
	}
	mu.Lock()
	for _, id := range ids {
		require.GreaterOrEqual(t, seen[id+" commit"], 3, "%s: the third commit's answer was never lost", id)
		require.GreaterOrEqual(t, seen[id+" publish"], 1, "%s: no publish answer was lost", id)
	}
	mu.Unlock()
	require.GreaterOrEqual(t, d.Stats().Retried, uint64(3*n), "every lost answer fails its pass and retries its events")
}
