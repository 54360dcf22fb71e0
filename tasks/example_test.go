package tasks_test

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jetflow/jetflow/jetflowtest"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
)

// Echo returns its input as it came, numbers in their exact form.
func ExampleEcho() {
	out, err := tasks.Echo(context.Background(), jetflowtest.NewTask(json.RawMessage(`{"id": 12345678901234567891, "ratio": 0.10}`)))
	fmt.Printf("%s %v\n", out, err)
	// Output: {"id": 12345678901234567891, "ratio": 0.10} <nil>
}

// Fail fails the first input.times attempts, permanently when asked.
func ExampleFail() {
	ctx := context.Background()
	_, err := tasks.Fail(ctx, jetflowtest.NewTask(map[string]any{"times": 2}, jetflowtest.WithAttempt(1)))
	fmt.Println(err != nil, worker.IsPermanent(err))
	_, err = tasks.Fail(ctx, jetflowtest.NewTask(map[string]any{"times": 2, "permanent": true}, jetflowtest.WithAttempt(1)))
	fmt.Println(err != nil, worker.IsPermanent(err))
	out, err := tasks.Fail(ctx, jetflowtest.NewTask(map[string]any{"times": 2}, jetflowtest.WithAttempt(3)))
	b, _ := json.Marshal(out)
	fmt.Printf("%s %v\n", b, err)
	// Output:
	// true false
	// true true
	// {"times":2} <nil>
}
