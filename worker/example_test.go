package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/jetflowtest"
	"github.com/jetflow/jetflow/worker"
)

// The README's "A worker in Go" is the code between the README markers,
// word for word (TestReadmeShowsTheWorkerExample); docs/go-sdk.md has
// more.

// runWorker runs the README's worker on nc until ctx ends.
func runWorker(ctx context.Context, nc *nats.Conn) {
	// README begin
	client, _ := jetflow.New(nc) // your *nats.Conn
	w, _ := worker.New(client, worker.Config{Concurrency: 16})
	w.Handle("charge-card", func(ctx context.Context, t *worker.Task) (any, error) {
		var in struct {
			Amount  int64
			OrderID string `json:"orderId"`
		}
		if err := t.Bind(&in); err != nil { // encoding/json semantics
			return nil, worker.Permanent(err) // do not retry
		}
		return map[string]any{"charged": in.Amount, "orderId": in.OrderID}, nil // steps.<step>.output.charged
	})
	_ = w.Run(ctx) // drains on ctx end
	// README end
}

// orderWorkflow charges the card and makes the instance output from the
// charge step's output fields, by their JSON names.
const orderWorkflow = `
name: order
version: 1
trigger: {subject: orders.created, key: orderId}
steps:
  - {name: charge, kind: task, task: charge-card}
output: '{"charged": steps.charge.output.charged, "order": steps.charge.output.orderId}'
`

// A worker on your own NATS connection, against a real engine started by
// jetflowtest: the application starts an order and waits for its output.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	engine, err := jetflowtest.NewEngine(ctx, orderWorkflow)
	if err != nil {
		panic(err)
	}
	defer engine.Close()
	nc, err := nats.Connect(engine.URL)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	wctx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() {
		runWorker(wctx, nc)
		close(stopped)
	}()

	id, err := engine.Client.Start(ctx, "order", "o-1", json.RawMessage(`{"amount":1250,"orderId":"o-1"}`))
	if err != nil {
		panic(err)
	}
	var out struct {
		Charged int64
		Order   string
	}
	if _, err := engine.Client.Wait(ctx, id, &out); err != nil {
		panic(err)
	}
	fmt.Println(out.Charged, out.Order)
	stop()
	<-stopped
	// Output: 1250 o-1
}
