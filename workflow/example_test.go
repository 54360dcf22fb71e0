package workflow_test

import (
	"fmt"
	"time"

	"github.com/jetflow/jetflow/workflow"
)

// exampleData is a map-backed workflow.Data.
type exampleData map[string]any

func (d exampleData) Load(key string) (any, error) {
	v, ok := d[key]
	if !ok {
		return nil, fmt.Errorf("%s: %w", key, workflow.ErrNotFound)
	}
	return v, nil
}

// Parse a definition, start an instance for an event and see the first
// task the dispatcher must publish.
func Example() {
	def, err := workflow.Parse("greet.yaml", []byte(`
name: greet
version: 1
trigger:
  subject: users.created
  key: userId
steps:
  - name: welcome
    kind: task
    task: send-email
    input: '{"to": input.email, "template": "welcome"}'
    timeout: 30s
    next: follow-up
  - name: follow-up
    kind: task
    task: send-email
    input: '{"to": input.email, "template": "tips"}'
`))
	if err != nil {
		fmt.Println(err)
		return
	}

	id := workflow.InstanceID(def.Name, "user-42")
	data := exampleData{workflow.InputKey(id): map[string]any{"email": "ada@example.com"}}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	dec, err := workflow.Apply(def, nil, workflow.Event{
		Kind:     workflow.EventStart,
		Instance: id,
		EventKey: "user-42",
		InputRef: workflow.InputKey(id),
	}, now, data)
	if err != nil {
		fmt.Println(err)
		return
	}

	fmt.Println("instance:", dec.Instance.Status)
	for _, w := range dec.Writes {
		fmt.Printf("write %s = %v\n", w.Key, w.Value)
	}
	for _, task := range dec.Tasks {
		fmt.Printf("task: step=%s type=%s attempt=%d/%d timeout=%s\n", task.Step, task.Type, task.Attempt, task.MaxAttempts, task.Timeout)
	}
	for _, timer := range dec.Timers {
		fmt.Printf("timer: %s at %s\n", timer.ID, timer.At.Format(time.TimeOnly))
	}
	// Output:
	// instance: running
	// write greet-sa6qhd7gtc4ieaj74iqjr6edti.welcome.in = map[template:welcome to:ada@example.com]
	// task: step=welcome type=send-email attempt=1/3 timeout=30s
	// timer: timeout.welcome.1 at 12:00:30
}

// Parse reports every problem of a definition, naming the file and step.
func ExampleParse() {
	_, err := workflow.Parse("broken.yaml", []byte(`
name: broken
version: 1
steps:
  - name: first
    kind: task
    task: work
    next: secnd
  - name: second
    kind: tsak
`))
	fmt.Println(err)
	// Output:
	// broken.yaml: step "first": next refers to unknown step "secnd"
	// broken.yaml: step "second": unknown kind "tsak" (one of task, parallel, switch, bulk, sleep, wait, workflow)
}

// The instance id is derived from the workflow and the event key, so a
// trigger published twice lands on the same instance.
func ExampleInstanceID() {
	fmt.Println(workflow.InstanceID("order-processing", "o-1001"))
	fmt.Println(workflow.InstanceID("order-processing", "o-1001") == workflow.InstanceID("order-processing", "o-1001"))
	fmt.Println(workflow.InstanceID("order-processing", "o-1002"))
	// Output:
	// order-processing-qqys6nyyywnl4bhpts62lokozi
	// true
	// order-processing-kt67m4qnkorctq372nb7bjhjba
}
