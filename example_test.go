package jetflow_test

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/jetflowtest"
	"github.com/jetflow/jetflow/worker"
)

// An application on its own NATS connection starts an instance with an
// explicit event key and waits for its output in a typed value. (The
// engine and the worker stand for the dispatchers and workers of a real
// deployment.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	engine, err := jetflowtest.NewEngine(ctx, `
name: quote
version: 1
steps:
  - {name: price, kind: task, task: price}
output: '{"orderId": input.orderId, "total": steps.price.output.total}'
`)
	if err != nil {
		panic(err)
	}
	defer engine.Close()
	w, _ := worker.New(engine.Client, worker.Config{})
	_ = w.Handle("price", func(_ context.Context, t *worker.Task) (any, error) {
		var in struct{ Items []int64 }
		if err := t.Bind(&in); err != nil {
			return nil, worker.Permanent(err)
		}
		var total int64
		for _, p := range in.Items {
			total += p
		}
		return map[string]int64{"total": total}, nil
	})
	engine.Run(w)

	nc, err := nats.Connect(engine.URL) // your connection
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	client, err := jetflow.New(nc)
	if err != nil {
		panic(err)
	}
	defer client.Close()

	type order struct {
		OrderID string  `json:"orderId"`
		Items   []int64 `json:"items"`
	}
	id, err := client.Start(ctx, "quote", "o-1", order{OrderID: "o-1", Items: []int64{1250, 250}})
	if err != nil {
		panic(err)
	}
	var quote struct {
		OrderID string `json:"orderId"`
		Total   int64  `json:"total"`
	}
	inst, err := client.Wait(ctx, id, &quote)
	if err != nil {
		panic(err)
	}
	fmt.Println(inst.Status, quote.OrderID, quote.Total)
	// Output: completed o-1 1500
}
