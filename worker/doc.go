// Package worker is the jetflow worker SDK: register a handler per task
// type, run, and the worker pulls tasks, runs handlers and reports results.
// It runs on a jetflow.Client (package jetflow), made on your own NATS
// connection; it does not link nats-server.
//
//	client, _ := jetflow.New(nc)
//	w, _ := worker.New(client, worker.Config{Concurrency: 16})
//	w.Handle("charge-card", func(ctx context.Context, t *worker.Task) (any, error) {
//		var order Order
//		if err := t.Bind(&order); err != nil {
//			return nil, worker.Permanent(err)
//		}
//		return charge(ctx, order, t.EffectKey) // same key on every attempt
//	})
//	err := w.Run(ctx) // returns after a graceful drain when ctx ends
//
// Run first waits for jetflow to be provisioned (a dispatcher, or `jetflow
// provision`, creates its streams and buckets), logging while it waits.
// Unit-test a handler with jetflowtest.NewTask, without NATS.
//
// Inputs and outputs have JSON semantics: Task.Bind decodes the input as
// encoding/json.Unmarshal would (json tags, case-insensitive names,
// Unmarshaler, json.Number), and the output is stored as
// encoding/json.Marshal writes it, so a field tagged `json:"charged"` is
// steps.<step>.output.charged in a following step's expressions.
//
// Handler outcomes, mapped to the result in one place ([Worker.execute]):
//   - a value and nil: success; the value is the step output;
//   - a plain error: the attempt failed; the workflow's retry policy decides;
//   - Permanent(err): the step fails without further attempts;
//   - RetryAfter(d, err): the next attempt starts after d;
//   - a panic: a failed attempt with the panic message.
//
// Delivery is at least once: a worker that dies mid-task has the task
// redelivered to another worker one ack wait (jetflow.WithWorkerAckWait,
// 10s by default) after its last heartbeat. A live worker
// heartbeats every task it holds, running or waiting for a slot, so its
// tasks are not redelivered however long its handlers run. The dispatcher records one result per
// attempt and ignores results of older attempts, so a step's result is
// recorded once; side effects outside jetflow should use Task.EffectKey to
// be idempotent. A step marked `once: true` in its definition is run at
// most once per step: the worker claims Task.EffectKey in the
// jetflow_effects bucket before calling the handler and records the
// outcome after (with task tokens, a dispatcher writes both on its
// request: docs/nats-layout.md, the effect service); a redelivery returns the recorded outcome, and a claim
// without an outcome (a worker died mid-handler) fails the attempt with
// ErrEffectUnknown instead of running the handler again.
package worker
