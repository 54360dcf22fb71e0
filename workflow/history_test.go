package workflow_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// TestAttemptHistory: every attempt of a task step that ends is recorded
// once, with when it started and ended, the worker that reported it and
// why it failed: a result, a timeout and a presumed loss; a stale result
// adds nothing; errors are cut to MaxHistoryError.
func TestAttemptHistory(t *testing.T) {
	t.Parallel()
	h := setup(t, retryDef, nil)
	h.start()

	// Attempt 1 fails on worker w1.
	h.now = t0.Add(time.Second)
	long := strings.Repeat("é", workflow.MaxHistoryError) // 2 bytes each
	h.apply(workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: long, Worker: "w1"})
	require.Equal(t, long, h.step("a").Error, "the step's error itself is not cut")
	// A duplicate of it is stale: no second record.
	h.apply(workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 1, Error: "again", Worker: "w1"})

	// Attempt 2 times out.
	h.now = t0.Add(3 * time.Second)
	h.fire("retry.a.2")
	h.now = h.now.Add(10 * time.Second)
	h.fire("timeout.a.2")

	// Attempt 3 succeeds on worker w2.
	h.now = h.now.Add(5 * time.Second)
	h.fire("retry.a.3")
	started3 := h.now
	h.now = h.now.Add(time.Second)
	h.apply(workflow.Event{Kind: workflow.EventResult, Step: "a", Attempt: 3, Worker: "w2"})

	a := h.step("a")
	require.Equal(t, workflow.StepCompleted, a.Status)
	require.Len(t, a.History, 3)
	require.Equal(t, workflow.AttemptRecord{Attempt: 1, Started: t0, Ended: t0.Add(time.Second), Worker: "w1",
		Error: strings.Repeat("é", workflow.MaxHistoryError/2)}, a.History[0])
	require.Equal(t, workflow.AttemptRecord{Attempt: 2, Started: t0.Add(3 * time.Second), Ended: t0.Add(13 * time.Second),
		Error: "attempt 2 timed out after 10s"}, a.History[1])
	require.Equal(t, workflow.AttemptRecord{Attempt: 3, Started: started3, Ended: h.now, Worker: "w2"}, a.History[2])
}

// TestAttemptHistoryPresumedLost: a repair that fails the running attempt
// records it without a worker.
func TestAttemptHistoryPresumedLost(t *testing.T) {
	t.Parallel()
	h := setup(t, retryDef, nil)
	h.start()
	h.now = t0.Add(time.Minute)
	h.apply(workflow.Event{Kind: workflow.EventRepair, Step: "a", Attempt: 1, Reason: "no result"})
	a := h.step("a")
	require.Equal(t, []workflow.AttemptRecord{{Attempt: 1, Started: t0, Ended: h.now, Error: "attempt 1 presumed lost: no result"}}, a.History)
}

// TestAttemptHistoryOutlivesAnOperatorRetry: a step an operator's retry
// activates again keeps the attempts it had, and adds the new ones.
func TestAttemptHistoryOutlivesAnOperatorRetry(t *testing.T) {
	t.Parallel()
	h := setup(t, operatorRetryDef, map[string]any{})
	h.start()
	h.ok("a", 1, "A")
	h.fail("b", 1, "boom")
	h.fire("retry.b.2")
	h.fail("b", 2, "boom again")
	require.Equal(t, workflow.StatusFailed, h.inst.Status)
	h.retry("", 0)
	h.ok("b", 3, "B")
	var got []string
	for _, a := range h.step("b").History {
		got = append(got, fmt.Sprintf("%d:%s", a.Attempt, a.Error))
	}
	require.Equal(t, []string{"1:boom", "2:boom again", "3:"}, got)
}
