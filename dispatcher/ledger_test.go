package dispatcher_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
)

// effectLedger is the test's own record of every handler invocation, kept
// in memory and outside NATS: the raw count that no engine bug can hide.
// Keys are effect keys (instance/step).
type effectLedger struct {
	mu       sync.Mutex
	calls    map[string]int      // invocations that started
	returned map[string]int      // invocations that returned
	outputs  map[string][]string // outputs returned, in order
	total    int
}

func newEffectLedger() *effectLedger {
	return &effectLedger{calls: map[string]int{}, returned: map[string]int{}, outputs: map[string][]string{}}
}

// begin records that an invocation started and returns its number for
// the key, from 1.
func (l *effectLedger) begin(key string) int {
	n, _ := l.beginCount(key)
	return n
}

// beginCount is begin that also returns the invocation's number among all
// invocations, from 1.
func (l *effectLedger) beginCount(key string) (n, total int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls[key]++
	l.total++
	return l.calls[key], l.total
}

// end records that an invocation returned output.
func (l *effectLedger) end(key, output string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.returned[key]++
	l.outputs[key] = append(l.outputs[key], output)
}

// handler records the invocation and returns "<effect key>#<n>@<who>".
func (l *effectLedger) handler(who string) worker.Handler {
	return func(_ context.Context, t *worker.Task) (any, error) {
		n := l.begin(t.EffectKey)
		out := fmt.Sprintf("%s#%d@%s", t.EffectKey, n, who)
		l.end(t.EffectKey, out)
		return out, nil
	}
}

func (l *effectLedger) callsOf(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls[key]
}

func (l *effectLedger) returnedOf(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.returned[key]
}

func (l *effectLedger) outputsOf(key string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.outputs[key]...)
}

func (l *effectLedger) keys() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.calls))
	for k := range l.calls {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// summary is the raw count for the log: invocations, distinct effect
// keys, keys invoked more than once, and the most invocations of one key.
func (l *effectLedger) summary() (total, keys, repeated, most int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, n := range l.calls {
		if n > 1 {
			repeated++
		}
		most = max(most, n)
	}
	return l.total, len(l.calls), repeated, most
}

func (l *effectLedger) totalCalls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// sumStats adds up the counters of several dispatchers.
func sumStats(ds ...*dispatcher.Dispatcher) dispatcher.Stats {
	var s dispatcher.Stats
	for _, d := range ds {
		x := d.Stats()
		s.Triggers += x.Triggers
		s.Events += x.Events
		s.Started += x.Started
		s.Completed += x.Completed
		s.Failed += x.Failed
		s.DuplicateTriggers += x.DuplicateTriggers
		s.DuplicateDiffer += x.DuplicateDiffer
		s.StaleEvents += x.StaleEvents
		s.Conflicts += x.Conflicts
		s.Retried += x.Retried
		s.DeadLettered += x.DeadLettered
	}
	return s
}

// waitQuiet waits until the task and event streams are empty: every task
// published so far was handled and every result applied.
func waitQuiet(t *testing.T, e *jftest.Env, timeout time.Duration) {
	t.Helper()
	jftest.Eventually(t, timeout, func() bool {
		counts, err := e.Client.StreamCounts(context.Background())
		return err == nil && counts[jetstream.StreamTasks] == 0 && counts[jetstream.StreamEvents] == 0
	}, "task and event streams did not drain")
}
