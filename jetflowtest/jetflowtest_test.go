package jetflowtest_test

import (
	"context"
	"encoding/json"
	"math"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/jetflowtest"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

type order struct {
	Amount  int64
	OrderID string `json:"orderId"`
	Big     *big.Int
	At      time.Time `json:"at"`
	Ship    *struct {
		City string `json:"city"`
	} `json:"ship,omitempty"`
}

// seen is what a handler saw of its task.
type seen struct {
	input any
	bound order
	raw   json.RawMessage
	key   string
}

func look(t *worker.Task) (seen, error) {
	var s seen
	var err error
	if s.input, err = t.Input(); err != nil {
		return s, err
	}
	s.key = t.EffectKey
	if err := t.Bind(&s.raw); err != nil {
		return s, err
	}
	return s, t.Bind(&s.bound)
}

// TestNewTaskIsWhatAWorkerGets: a handler sees the same Input() and the
// same Bind result from NewTask as from the task a real worker hands it
// for the same input, JSON text or a Go value.
func TestNewTaskIsWhatAWorkerGets(t *testing.T) {
	t.Parallel()
	engine := jetflowtest.Start(t, `
name: look
version: 1
steps:
  - {name: a, kind: task, task: look}
`)
	var mu sync.Mutex
	got := map[string]seen{}
	w, err := worker.New(engine.Client, worker.Config{})
	require.NoError(t, err)
	require.NoError(t, w.Handle("look", func(_ context.Context, task *worker.Task) (any, error) {
		s, err := look(task)
		mu.Lock()
		got[task.Instance] = s
		mu.Unlock()
		return nil, err
	}))
	engine.Run(w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	inputs := map[string]any{
		"json text": json.RawMessage(`{"AMOUNT": 1250, "orderId": "o-1", "big": 123456789012345678901234567890, "at": "2026-01-02T03:04:05.123Z", "ship": {"city": "Oslo"}}`),
		"go value":  map[string]any{"amount": int64(7), "orderId": "o-2", "big": json.Number("98765432109876543210")},
		"struct":    order{Amount: 3, OrderID: "o-3", At: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
	for name, in := range inputs {
		id, err := engine.Client.Start(ctx, "look", name, in)
		require.NoError(t, err)
		_, err = engine.Client.Wait(ctx, id, nil)
		require.NoError(t, err, name)
		mu.Lock()
		prod := got[id]
		mu.Unlock()
		unit, err := look(jetflowtest.NewTask(in, jetflowtest.WithInstance(id), jetflowtest.WithStep("a")))
		require.NoError(t, err, name)
		require.Equal(t, prod, unit, name)
	}
	require.Equal(t, int64(1250), got[workflow.InstanceID("look", "json text")].bound.Amount)
}

// TestNewTaskRefusesAnInputNoWorkflowCouldPass: NaN cannot be a task's
// input; NewTask says so instead of making a task production never makes.
func TestNewTaskRefusesAnInputNoWorkflowCouldPass(t *testing.T) {
	t.Parallel()
	defer func() {
		require.Contains(t, recover(), "jetflowtest.NewTask: the input cannot be a task's input")
	}()
	jetflowtest.NewTask(map[string]any{"x": math.NaN()})
	t.Fatal("NewTask made a task of NaN")
}

// TestEngineCloseReportsAWorkerThatStopped: a worker run by the engine
// that stops with an error fails the test through Close.
func TestEngineCloseReportsAWorkerThatStopped(t *testing.T) {
	t.Parallel()
	engine, err := jetflowtest.NewEngine(context.Background())
	require.NoError(t, err)
	w, err := worker.New(engine.Client, worker.Config{})
	require.NoError(t, err)
	engine.Run(w) // no handlers: Run fails at once
	err = engine.Close()
	require.ErrorContains(t, err, "worker has no handlers")
	require.Equal(t, err, engine.Close(), "Close twice returns the same")
}
