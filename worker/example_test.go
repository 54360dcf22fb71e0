package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/jetflowtest"
	"github.com/jetflow/jetflow/worker"
)

// The README's "Writing a worker" is the code between the README markers,
// word for word (TestReadmeShowsTheWorkerExample).

// README begin
func runWorker(ctx context.Context, nc *nats.Conn) error {
	client, err := jetflow.New(nc) // or jetflow.Connect(ctx, url)
	if err != nil {
		return err
	}
	w, err := worker.New(client, worker.Config{Concurrency: 16})
	if err != nil {
		return err
	}
	if err := w.Handle("charge-card", chargeCard); err != nil {
		return err
	}
	return w.Run(ctx) // graceful drain when ctx ends
}

func chargeCard(ctx context.Context, t *worker.Task) (any, error) {
	var in struct {
		Amount  int64  // {"amount":1250}: untagged fields match in any case
		OrderID string `json:"orderId"`
	}
	if err := t.Bind(&in); err != nil {
		return nil, worker.Permanent(err) // do not retry
	}
	id, err := payments.Charge(ctx, in.OrderID, in.Amount, t.EffectKey) // same key on every attempt
	if errors.Is(err, payments.ErrRateLimited) {
		return nil, worker.RetryAfter(10*time.Second, err)
	}
	if err != nil {
		return nil, err // retried under the step's retry policy
	}
	return struct {
		Charged int64  `json:"charged"` // a later step reads steps.<step>.output.charged
		Payment string `json:"paymentId"`
	}{in.Amount, id}, nil
}

// README end

// paymentService stands for the system a handler calls.
type paymentService struct{ ErrRateLimited error }

// Charge returns a payment id made of the order and the amount.
func (paymentService) Charge(_ context.Context, order string, amount int64, idempotencyKey string) (string, error) {
	return fmt.Sprintf("pay-%s-%d", order, amount), nil
}

var payments = paymentService{ErrRateLimited: errors.New("rate limited")}

// orderWorkflow charges the card and makes the instance output from the
// charge step's output fields, by their JSON names.
const orderWorkflow = `
name: order
version: 1
trigger: {subject: orders.created, key: orderId}
steps:
  - {name: charge, kind: task, task: charge-card}
output: '{"charged": steps.charge.output.charged, "payment": steps.charge.output.paymentId}'
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
	stopped := make(chan error, 1)
	go func() { stopped <- runWorker(wctx, nc) }()

	id, err := engine.Client.Start(ctx, "order", "o-1", json.RawMessage(`{"amount":1250,"orderId":"o-1"}`))
	if err != nil {
		panic(err)
	}
	var out struct {
		Charged int64
		Payment string
	}
	if _, err := engine.Client.Wait(ctx, id, &out); err != nil {
		panic(err)
	}
	fmt.Println(out.Charged, out.Payment)
	stop()
	fmt.Println("worker stopped:", <-stopped)
	// Output:
	// 1250 pay-o-1-1250
	// worker stopped: <nil>
}
