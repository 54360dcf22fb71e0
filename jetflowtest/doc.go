// Package jetflowtest helps test code that uses jetflow, as rivertest
// does for River.
//
// Unit-test a handler without NATS: NewTask makes the *worker.Task a
// worker would pass it, so Task.Bind and Task.Input behave exactly as in
// production (JSON semantics), and the handler is called directly:
//
//	out, err := chargeCard(ctx, jetflowtest.NewTask(map[string]any{"amount": 1250, "orderId": "o-1"}))
//
// Integration-test against a real engine: Start starts an embedded NATS
// server with JetStream (in a temporary directory, on a free loopback
// port) and a dispatcher with your workflow definitions, and stops it all
// when the test ends. Run your worker on Engine.Client (or on your own
// connection to Engine.URL) and drive it as an application would:
//
//	func TestOrder(t *testing.T) {
//		engine := jetflowtest.Start(t, orderWorkflowYAML)
//		w, _ := worker.New(engine.Client, worker.Config{})
//		_ = w.Handle("charge-card", chargeCard)
//		engine.Run(w)
//		id, _ := engine.Client.Start(ctx, "order", "o-1", Order{Amount: 1250, ID: "o-1"})
//		var out Receipt
//		_, err := engine.Client.Wait(ctx, id, &out)
//		...
//	}
//
// The engine's ack waits are short (a task held by a stopped worker is
// redelivered after 2s, an event held by a stopped dispatcher after 5s),
// so tests of failures do not wait long. Nothing in it is a mock: what
// passes here runs the same code as production.
package jetflowtest
