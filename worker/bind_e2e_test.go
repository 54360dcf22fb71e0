package worker_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// TestReadmeWorkerBindsAndItsOutputIsReadByName runs the README's worker
// (runWorker in example_test.go, the README's code word for word) on its
// own NATS connection against a real embedded server: a trigger event
// {"amount":1250,"orderId":"o-1"} binds into its input struct (an
// untagged field by its name in any case, a tagged one by its tag), and
// its output fields are steps.charge.output.charged and
// steps.charge.output.orderId in the following steps' expressions.
func TestReadmeWorkerBindsAndItsOutputIsReadByName(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	e.Register(`
name: readme
version: 1
trigger: {subject: orders.created, key: orderId}
steps:
  - {name: charge, kind: task, task: charge-card, next: route}
  - name: route
    kind: switch
    cases:
      - {when: 'steps.charge.output.charged >= 1000', next: receipt}
  - name: receipt
    kind: task
    task: receipt
    input: '{"charged": steps.charge.output.charged, "order": steps.charge.output.orderId}'
`)
	e.Dispatcher(nil, dispatcher.Config{})
	type receipt struct {
		Charged int64  `json:"charged"`
		Order   string `json:"order"`
	}
	var mu sync.Mutex
	var got receipt
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"receipt": func(ctx context.Context, t *worker.Task) (any, error) {
			var in receipt
			if err := t.Bind(&in); err != nil {
				return nil, worker.Permanent(err)
			}
			mu.Lock()
			got = in
			mu.Unlock()
			return in, nil
		},
	})
	nc, err := nats.Connect(e.URL)
	require.NoError(t, err)
	defer nc.Close()
	ctx, stop := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		runWorker(ctx, nc)
		close(stopped)
	}()
	defer func() {
		stop()
		<-stopped
	}()
	_, err = e.Client.Publish(context.Background(), "orders.created", []byte(`{"amount":1250,"orderId":"o-1"}`), nil)
	require.NoError(t, err)

	inst := e.WaitTerminal(workflow.InstanceID("readme", "o-1"), 30*time.Second)
	require.Equal(t, workflow.StatusCompleted, inst.Status, inst.Error)
	raw, err := e.Client.DataRaw(context.Background(), inst.Steps["charge"].OutputRef)
	require.NoError(t, err)
	require.JSONEq(t, `{"charged":1250,"orderId":"o-1"}`, string(raw), "Amount and OrderID were bound; nats kv get shows the output as JSON")
	require.NotNil(t, inst.Steps["receipt"], "the switch on steps.charge.output.charged did not take the case")
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, receipt{Charged: 1250, Order: "o-1"}, got)
}

// TestReadmeShowsTheWorkerExample: the README's "A worker in Go" code is
// the README region of example_test.go, word for word, so the README
// shows code that compiles and runs.
func TestReadmeShowsTheWorkerExample(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("example_test.go")
	require.NoError(t, err)
	_, region, ok := strings.Cut(string(src), "// README begin\n")
	require.True(t, ok)
	region, _, ok = strings.Cut(region, "// README end")
	require.True(t, ok)
	// The region is indented one tab in its function.
	lines := strings.Split(strings.TrimRight(region, "\t\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "\t")
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "## A worker in Go\n\n```go\n")
	require.True(t, ok, "README has no 'A worker in Go' section with Go code")
	code, _, ok := strings.Cut(section, "```")
	require.True(t, ok)
	require.Equal(t, strings.Join(lines, "\n")+"\n", code, "README's worker differs from worker/example_test.go")
}

// TestOutputJSONCannotHoldFailsTheStepAtOnce: a handler output that
// cannot be stored fails its step on the first attempt (the step allows
// three), with the reason, instead of being retried.
func TestOutputJSONCannotHoldFailsTheStepAtOnce(t *testing.T) {
	t.Parallel()
	e := jftest.Start(t, jetstream.Config{})
	e.Register(`
name: nan
version: 1
steps:
  - {name: a, kind: task, task: nan, retry: {max_attempts: 3, initial_interval: 1s}}
`)
	e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{
		"nan": func(context.Context, *worker.Task) (any, error) {
			return map[string]any{"ratio": math.NaN()}, nil
		},
	})
	require.NoError(t, e.Client.PublishStart(context.Background(), jetstream.Start{Workflow: "nan", EventKey: "k"}))
	inst := e.WaitTerminal(workflow.InstanceID("nan", "k"), 30*time.Second)
	require.Equal(t, workflow.StatusFailed, inst.Status)
	require.Equal(t, 1, inst.Steps["a"].Attempt)
	require.Contains(t, inst.Error, "output cannot be stored")
	require.Contains(t, inst.Error, "NaN")
}
