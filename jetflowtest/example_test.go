package jetflowtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jetflow/jetflow/jetflowtest"
	"github.com/jetflow/jetflow/worker"
)

// greet is the handler under test.
func greet(_ context.Context, t *worker.Task) (any, error) {
	var in struct {
		Name  string `json:"name"`
		Times int
	}
	if err := t.Bind(&in); err != nil {
		return nil, worker.Permanent(err)
	}
	if in.Name == "" {
		return nil, worker.Permanent(fmt.Errorf("no name"))
	}
	return struct {
		Greeting string `json:"greeting"`
		Attempt  int    `json:"attempt"`
	}{fmt.Sprintf("hello %s x%d", in.Name, in.Times), t.Attempt}, nil
}

// Unit-test a handler without NATS: the task's input binds as it would
// in production, from any value or from JSON text.
func ExampleNewTask() {
	ctx := context.Background()
	out, err := greet(ctx, jetflowtest.NewTask(map[string]any{"name": "Ada", "times": 2}, jetflowtest.WithAttempt(2)))
	fmt.Println(out, err)
	_, err = greet(ctx, jetflowtest.NewTask(json.RawMessage(`{"name": ""}`)))
	fmt.Println(err, worker.IsPermanent(err))
	// Output:
	// {hello Ada x2 2} <nil>
	// no name true
}

// An integration test against a real engine (Start does the same with a
// *testing.T and closes the engine when the test ends).
func ExampleNewEngine() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	engine, err := jetflowtest.NewEngine(ctx, `
name: greet
version: 1
steps:
  - {name: hello, kind: task, task: greet}
output: 'steps.hello.output.greeting'
`)
	if err != nil {
		panic(err)
	}
	defer engine.Close()
	w, err := worker.New(engine.Client, worker.Config{})
	if err != nil {
		panic(err)
	}
	if err := w.Handle("greet", greet); err != nil {
		panic(err)
	}
	engine.Run(w)

	id, err := engine.Client.Start(ctx, "greet", "ada", map[string]any{"name": "Ada", "times": 3})
	if err != nil {
		panic(err)
	}
	var greeting string
	if _, err := engine.Client.Wait(ctx, id, &greeting); err != nil {
		panic(err)
	}
	fmt.Println(greeting)
	// Output: hello Ada x3
}
