package workflow_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// validYAML uses every kind of step and every optional field.
const validYAML = `
name: order
version: 2
description: a valid definition
trigger:
  subject: orders.*.created
  key: order.id
start: check
output: '{"shipped": steps.ship.output, "amount": input.amount}'
steps:
  - name: check
    kind: task
    task: validate
    input: '{"id": input.order.id}'
    timeout: 30s
    retry:
      max_attempts: 5
      initial_interval: 500ms
      backoff_coefficient: 1.5
      max_interval: 10s
    next: fulfil
    on_failure: reject
  - name: fulfil
    kind: parallel
    branches: [reserve, charge]
    next: route
  - name: reserve
    kind: task
    task: stock
  - name: charge
    kind: task
    task: payment
    retry: {max_attempts: 1}
  - name: route
    kind: switch
    cases:
      - when: steps.charge.output.amount >= 1000
        next: review
      - when: 'steps["check"].status == "completed" && input.express'
        next: ship
    default: ship
  - name: review
    kind: task
    task: manual_review
    next: ship
  - name: ship
    kind: task
    task: ship-it
  - name: reject
    kind: task
    task: notify
`

// validJSON is validYAML written as JSON.
const validJSON = `{
  "name": "order", "version": 2, "description": "a valid definition",
  "trigger": {"subject": "orders.*.created", "key": "order.id"},
  "start": "check",
  "output": "{\"shipped\": steps.ship.output, \"amount\": input.amount}",
  "steps": [
    {"name": "check", "kind": "task", "task": "validate", "input": "{\"id\": input.order.id}",
     "timeout": "30s",
     "retry": {"max_attempts": 5, "initial_interval": "500ms", "backoff_coefficient": 1.5, "max_interval": "10s"},
     "next": "fulfil", "on_failure": "reject"},
    {"name": "fulfil", "kind": "parallel", "branches": ["reserve", "charge"], "next": "route"},
    {"name": "reserve", "kind": "task", "task": "stock"},
    {"name": "charge", "kind": "task", "task": "payment", "retry": {"max_attempts": 1}},
    {"name": "route", "kind": "switch",
     "cases": [
       {"when": "steps.charge.output.amount >= 1000", "next": "review"},
       {"when": "steps[\"check\"].status == \"completed\" && input.express", "next": "ship"}],
     "default": "ship"},
    {"name": "review", "kind": "task", "task": "manual_review", "next": "ship"},
    {"name": "ship", "kind": "task", "task": "ship-it"},
    {"name": "reject", "kind": "task", "task": "notify"}
  ]
}`

func TestParseValid(t *testing.T) {
	t.Parallel()
	def, err := workflow.Parse("order.yaml", []byte(validYAML))
	require.NoError(t, err)

	require.Equal(t, "order.yaml", def.File())
	require.Equal(t, "order", def.Name)
	require.Equal(t, 2, def.Version)
	require.Equal(t, &workflow.Trigger{Subject: "orders.*.created", Key: "order.id"}, def.Trigger)
	require.Equal(t, "check", def.StartStep())
	require.Len(t, def.Steps, 8)

	check, ok := def.Step("check")
	require.True(t, ok)
	require.Equal(t, workflow.KindTask, check.Kind)
	require.Equal(t, 30*time.Second, check.Timeout.D())
	require.Equal(t, &workflow.RetryPolicy{
		MaxAttempts:        5,
		InitialInterval:    workflow.Duration(500 * time.Millisecond),
		BackoffCoefficient: 1.5,
		MaxInterval:        workflow.Duration(10 * time.Second),
	}, check.Retry)
	require.Equal(t, "reject", check.OnFailure)

	fulfil, ok := def.Step("fulfil")
	require.True(t, ok)
	require.Equal(t, []string{"reserve", "charge"}, fulfil.Branches)

	route, ok := def.Step("route")
	require.True(t, ok)
	require.Len(t, route.Cases, 2)
	require.Equal(t, "ship", route.Default)

	_, ok = def.Step("nope")
	require.False(t, ok)
}

func TestParseStartDefaultsToFirstStep(t *testing.T) {
	t.Parallel()
	def := mustParse(t, `
name: w
version: 1
steps:
  - {name: first, kind: task, task: t, next: second}
  - {name: second, kind: task, task: t}
`)
	require.Equal(t, "first", def.StartStep())
	require.Nil(t, def.Trigger)
}

func TestParseJSONLikeYAML(t *testing.T) {
	t.Parallel()
	fromYAML, err := workflow.Parse("order.yaml", []byte(validYAML))
	require.NoError(t, err)
	fromJSON, err := workflow.Parse("order.json", []byte(validJSON))
	require.NoError(t, err)

	require.Equal(t, "order.json", fromJSON.File())
	require.Equal(t, fromYAML.Name, fromJSON.Name)
	require.Equal(t, fromYAML.Version, fromJSON.Version)
	require.Equal(t, fromYAML.Description, fromJSON.Description)
	require.Equal(t, fromYAML.Trigger, fromJSON.Trigger)
	require.Equal(t, fromYAML.StartStep(), fromJSON.StartStep())
	require.Equal(t, fromYAML.Output, fromJSON.Output)
	require.Equal(t, fromYAML.Steps, fromJSON.Steps)

	// And they behave the same.
	data := memData{"i.in": map[string]any{"order": map[string]any{"id": "o-1"}}}
	start := workflow.Event{Kind: workflow.EventStart, Instance: "i", InputRef: "i.in"}
	a, err := workflow.Apply(fromYAML, nil, start, t0, data)
	require.NoError(t, err)
	b, err := workflow.Apply(fromJSON, nil, start, t0, data)
	require.NoError(t, err)
	require.Equal(t, a, b)
}

func TestParseJSONRejectsUnknownField(t *testing.T) {
	t.Parallel()
	_, err := workflow.Parse("w.json", []byte(`{"name": "w", "version": 1, "steps": [{"name": "a", "kind": "task", "task": "t", "nxt": "b"}]}`))
	require.ErrorIs(t, err, workflow.ErrInvalidDefinition)
	require.ErrorContains(t, err, "w.json: cannot parse")
	require.ErrorContains(t, err, "field nxt not found")
}

// def builds a definition whose steps are given as YAML list items.
func def(steps ...string) string {
	return "name: w\nversion: 1\nsteps:\n" + items(steps...)
}

func items(steps ...string) string {
	var b strings.Builder
	for _, s := range steps {
		b.WriteString("  - " + s + "\n")
	}
	return b.String()
}

const okStep = "{name: a, kind: task, task: t}"

func TestParseRejects(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", workflow.MaxNameLen+1)
	manySteps := make([]string, workflow.MaxSteps+1)
	for i := range manySteps {
		manySteps[i] = fmt.Sprintf("{name: s%d, kind: task, task: t}", i)
	}
	tests := []struct {
		name string
		src  string
		want []string // each must appear in the error
		bug  string   // non-empty: known bug, test skipped
	}{
		// Document level.
		{name: "empty", src: "  \n", want: []string{`w.yaml: empty definition`}},
		{name: "not yaml", src: "name: [", want: []string{`w.yaml: cannot parse:`}},
		{name: "not a mapping", src: "- a\n- b\n", want: []string{`w.yaml: cannot parse:`}},
		{name: "missing name", src: "version: 1\nsteps:\n" + items(okStep), want: []string{`w.yaml: invalid name: workflow name is empty`}},
		{name: "workflow name with dot", src: "name: a.b\nversion: 1\nsteps:\n" + items(okStep), want: []string{`w.yaml: invalid name: workflow name "a.b" may contain only letters, digits, '-' and '_'`}},
		{name: "zero version", src: "name: w\nsteps:\n" + items(okStep), want: []string{`w.yaml: version must be a positive integer, got 0`}},
		{name: "negative version", src: "name: w\nversion: -3\nsteps:\n" + items(okStep), want: []string{`got -3`}},
		{name: "no steps", src: "name: w\nversion: 1\nsteps: []\n", want: []string{`w.yaml: no steps`}},
		{name: "too many steps", src: def(manySteps...), want: []string{fmt.Sprintf(`w.yaml: %d steps; at most %d are allowed`, workflow.MaxSteps+1, workflow.MaxSteps)}},

		// Unknown fields and bad values, reported by the decoder with the line.
		{name: "typo nxt", src: def("{name: a, kind: task, task: t, nxt: b}"), want: []string{`w.yaml: cannot parse:`, `line 4: field nxt not found in type workflow.Step`}},
		{name: "unknown top-level field", src: "name: w\nversion: 1\nstep: []\n", want: []string{`line 3: field step not found in type workflow.Definition`}},
		{name: "unknown retry field", src: def("{name: a, kind: task, task: t, retry: {attempts: 3}}"), want: []string{`field attempts not found in type workflow.RetryPolicy`}},
		{name: "unknown trigger field", src: "name: w\nversion: 1\ntrigger: {subject: a.b, key: k, stream: x}\nsteps:\n" + items(okStep), want: []string{`field stream not found in type workflow.Trigger`}},
		{name: "duration without unit", src: def("{name: a, kind: task, task: t, timeout: 30}"), want: []string{`w.yaml: cannot parse: line 4: invalid duration "30": use a number with a unit`}},
		{name: "duration garbage", src: def("{name: a, kind: task, task: t, timeout: soon}"), want: []string{`invalid duration "soon"`}},
		{name: "negative duration", src: def("{name: a, kind: task, task: t, timeout: -5s}"), want: []string{`invalid duration "-5s": must not be negative`}},
		{name: "duration not a string", src: def("{name: a, kind: task, task: t, timeout: [1]}"), want: []string{`line 4: duration must be a string such as 30s`}},
		{name: "bad retry interval", src: def("{name: a, kind: task, task: t, retry: {initial_interval: 1y}}"), want: []string{`invalid duration "1y"`}},
		{name: "bad max interval", src: def("{name: a, kind: task, task: t, retry: {max_interval: -1m}}"), want: []string{`invalid duration "-1m": must not be negative`}},

		// Kinds.
		{name: "unknown kind", src: def("{name: a, kind: taks, task: t}"), want: []string{`w.yaml: step "a": unknown kind "taks" (one of task, parallel, switch, bulk, sleep, wait, workflow)`}},
		{name: "missing kind", src: def("{name: a, task: t}"), want: []string{`w.yaml: step "a": kind is missing (one of task, parallel, switch, bulk, sleep, wait, workflow)`}},
		{name: "task without type", src: def("{name: a, kind: task}"), want: []string{`w.yaml: step "a": invalid name: task type is empty`}},
		{name: "task type with dot", src: def("{name: a, kind: task, task: x.y}"), want: []string{`step "a": invalid name: task type "x.y"`}},
		{name: "task with branches", src: def("{name: a, kind: task, task: t, branches: [b]}", "{name: b, kind: task, task: t}"), want: []string{`step "a": branches is not allowed on a task step`}},
		{name: "task with cases", src: def("{name: a, kind: task, task: t, cases: [{when: 'true', next: b}]}", "{name: b, kind: task, task: t}"), want: []string{`step "a": cases is not allowed on a task step`}},
		{name: "task with default", src: def("{name: a, kind: task, task: t, default: b}", "{name: b, kind: task, task: t}"), want: []string{`step "a": default is not allowed on a task step`}},
		{name: "parallel without branches", src: def("{name: p, kind: parallel}"), want: []string{`step "p": a parallel step needs at least one branch`}},
		{name: "parallel with task fields", src: def("{name: p, kind: parallel, branches: [a], task: t, input: input, timeout: 1s, retry: {max_attempts: 2}, on_failure: a}", okStep), want: []string{
			`step "p": task is not allowed on a parallel step`,
			`step "p": input is not allowed on a parallel step`,
			`step "p": retry is not allowed on a parallel step`,
			`step "p": timeout is not allowed on a parallel step`,
			`step "p": on_failure is not allowed on a parallel step`,
		}},
		{name: "parallel branch listed twice", src: def("{name: p, kind: parallel, branches: [a, a]}", okStep), want: []string{`step "p": branch "a" is listed twice`}},
		{name: "switch without cases", src: def("{name: s, kind: switch, default: a}", okStep), want: []string{`step "s": a switch step needs at least one case`}},
		{name: "switch case without when", src: def("{name: s, kind: switch, cases: [{next: a}]}", okStep), want: []string{`step "s": case 1 has no condition (when)`}},
		{name: "switch case without next", src: def("{name: s, kind: switch, cases: [{when: 'true'}]}", okStep), want: []string{`step "s": case 1 has no next step`}},
		{name: "switch with next", src: def("{name: s, kind: switch, cases: [{when: 'true', next: a}], next: a}", okStep), want: []string{`step "s": next is not allowed on a switch step`}},
		{name: "switch with task fields", src: def("{name: s, kind: switch, cases: [{when: 'true', next: a}], task: t, timeout: 1s}", okStep), want: []string{`step "s": task is not allowed on a switch step`, `step "s": timeout is not allowed on a switch step`}},

		{name: "bulk without workflow and items", src: def("{name: b, kind: bulk}"), want: []string{`step "b": invalid name: child workflow is empty`, `step "b": a bulk step needs items (an expression giving a list)`}},
		{name: "bulk with negative bounds", src: def("{name: b, kind: bulk, workflow: c, items: input.x, max_in_flight: -1, max_items: -1}"), want: []string{`step "b": max_in_flight must not be negative, got -1`, `step "b": max_items must be between 0 (default 100000) and 1000000, got -1`}},
		{name: "bulk on_child_failure unknown", src: def("{name: b, kind: bulk, workflow: c, items: input.x, on_child_failure: stop}"), want: []string{`step "b": on_child_failure must be fail_fast or wait_all, got "stop"`}},
		{name: "bulk with task fields", src: def("{name: b, kind: bulk, workflow: c, items: input.x, task: t, timeout: 1s}"), want: []string{`step "b": task is not allowed on a bulk step`, `step "b": timeout is not allowed on a bulk step`}},
		{name: "sleep without duration", src: def("{name: z, kind: sleep}"), want: []string{`step "z": a sleep step needs a positive duration`}},
		{name: "sleep with on_failure", src: def("{name: z, kind: sleep, duration: 1s, on_failure: a}", okStep), want: []string{`step "z": on_failure is not allowed on a sleep step`}},
		{name: "wait without signal", src: def("{name: w, kind: wait}"), want: []string{`step "w": invalid name: signal is empty`}},
		{name: "wait with input", src: def("{name: w, kind: wait, signal: go, input: input}"), want: []string{`step "w": input is not allowed on a wait step`}},
		{name: "task with wait and sleep fields", src: def("{name: a, kind: task, task: t, signal: go, duration: 1s}"), want: []string{`step "a": duration is not allowed on a task step`, `step "a": signal is not allowed on a task step`}},
		{name: "workflow step without workflow", src: def("{name: c, kind: workflow}"), want: []string{`step "c": invalid name: child workflow is empty`}},
		{name: "workflow step with bulk fields", src: def("{name: c, kind: workflow, workflow: c2, max_in_flight: 2, on_child_failure: fail_fast}"), want: []string{`step "c": max_in_flight is not allowed on a workflow step`, `step "c": on_child_failure is not allowed on a workflow step`}},

		// Names.
		{name: "step name with dot", src: def("{name: a.b, kind: task, task: t}"), want: []string{`w.yaml: step "a.b": invalid name: step name "a.b" may contain only letters, digits, '-' and '_'`}},
		{name: "step name with space", src: def("{name: 'a b', kind: task, task: t}"), want: []string{`w.yaml: step "a b": invalid name: step name "a b" may contain only`}},
		{name: "step name too long", src: def("{name: " + long + ", kind: task, task: t}"), want: []string{fmt.Sprintf(`step %q: invalid name: step name %q is longer than %d characters`, long, long, workflow.MaxNameLen)}},
		{name: "step name empty", src: def("{kind: task, task: t}"), want: []string{`w.yaml: invalid name: step name is empty`}},
		{name: "step name wildcard", src: def("{name: '*', kind: task, task: t}"), want: []string{`step "*": invalid name`}},
		{name: "duplicate step", src: def(okStep, "{name: a, kind: task, task: u}"), want: []string{`w.yaml: step "a": defined twice`}},

		// Dangling references.
		{name: "dangling start", src: "name: w\nversion: 1\nstart: nope\nsteps:\n" + items(okStep), want: []string{`w.yaml: start refers to unknown step "nope"`}},
		{name: "dangling next", src: def("{name: a, kind: task, task: t, next: nope}"), want: []string{`w.yaml: step "a": next refers to unknown step "nope"`}},
		{name: "dangling on_failure", src: def("{name: a, kind: task, task: t, on_failure: nope}"), want: []string{`w.yaml: step "a": on_failure refers to unknown step "nope"`}},
		{name: "dangling branch", src: def("{name: p, kind: parallel, branches: [a, nope]}", okStep), want: []string{`w.yaml: step "p": branch refers to unknown step "nope"`}},
		{name: "dangling case", src: def("{name: s, kind: switch, cases: [{when: 'true', next: a}, {when: 'false', next: nope}]}", okStep), want: []string{`w.yaml: step "s": case 2 next refers to unknown step "nope"`}},
		{name: "dangling default", src: def("{name: s, kind: switch, cases: [{when: 'true', next: a}], default: nope}", okStep), want: []string{`w.yaml: step "s": default refers to unknown step "nope"`}},
		{name: "next to itself", src: def("{name: a, kind: task, task: t, next: a}"), want: []string{`w.yaml: step "a": next refers to the step itself`}},
		{name: "branch to itself", src: def("{name: p, kind: parallel, branches: [p]}"), want: []string{`step "p": branch refers to the step itself`}},

		// Graph.
		{name: "cycle", src: def("{name: a, kind: task, task: t, next: b}", "{name: b, kind: task, task: t, next: c}", "{name: c, kind: task, task: t, next: a}"), want: []string{`w.yaml: step "a": cycle: a -> b -> c -> a`}},
		{name: "cycle through on_failure", src: def("{name: a, kind: task, task: t, next: b}", "{name: b, kind: task, task: t, on_failure: a}"), want: []string{`step "a": cycle: a -> b -> a`}},
		{name: "cycle through switch", src: def("{name: a, kind: task, task: t, next: s}", "{name: s, kind: switch, cases: [{when: 'true', next: b}], default: a}", "{name: b, kind: task, task: t}"), want: []string{`step "a": cycle: a -> s -> a`}},
		{name: "cycle inside a branch", src: def("{name: p, kind: parallel, branches: [a]}", "{name: a, kind: task, task: t, next: b}", "{name: b, kind: task, task: t, next: a}"), want: []string{`step "a": cycle: a -> b -> a`}},
		{name: "branch continues into the main flow", src: def("{name: p, kind: parallel, branches: [a], next: z}", "{name: a, kind: task, task: t, next: z}", "{name: z, kind: task, task: t}"), want: []string{`w.yaml: step "z": reachable from two scopes (`, `branch 1 of p`, `the main flow`, `a step may belong to only one branch`}},
		{name: "branches of two parallels share a step", src: def("{name: p, kind: parallel, branches: [a], next: q}", "{name: q, kind: parallel, branches: [b]}", "{name: a, kind: task, task: t, next: c}", "{name: b, kind: task, task: t, next: c}", "{name: c, kind: task, task: t}"), want: []string{`step "c": reachable from two scopes (branch 1 of p and branch 1 of q)`}},
		{name: "nested parallel branch reaches outer branch", src: def("{name: p, kind: parallel, branches: [q, b]}", "{name: q, kind: parallel, branches: [a]}", "{name: a, kind: task, task: t, next: c}", "{name: b, kind: task, task: t, next: c}", "{name: c, kind: task, task: t}"), want: []string{`step "c": reachable from two scopes`}},
		{name: "two branches of one parallel reach the same step", src: def("{name: p, kind: parallel, branches: [a, b]}", "{name: a, kind: task, task: t, next: c}", "{name: b, kind: task, task: t, next: c}", "{name: c, kind: task, task: t}"), want: []string{`step "c"`, `reachable from two`}},
		{name: "branch starts another branch", src: def("{name: p, kind: parallel, branches: [a, b]}", "{name: a, kind: task, task: t, next: b}", "{name: b, kind: task, task: t}"), want: []string{`step "b"`, `reachable from two`}},
		{name: "unreachable step", src: def(okStep, "{name: orphan, kind: task, task: t}"), want: []string{`w.yaml: step "orphan": unreachable from the start step "a"`}},
		{name: "unreachable steps sorted", src: def(okStep, "{name: zz, kind: task, task: t}", "{name: mm, kind: task, task: t}"), want: []string{"step \"mm\": unreachable from the start step \"a\"\nw.yaml: step \"zz\": unreachable"}},
		{name: "unreachable because start skips it", src: "name: w\nversion: 1\nstart: b\nsteps:\n" + items(okStep, "{name: b, kind: task, task: t}"), want: []string{`step "a": unreachable from the start step "b"`}},

		// Retry bounds.
		{name: "max_attempts above cap", src: def("{name: a, kind: task, task: t, retry: {max_attempts: 101}}"), want: []string{`w.yaml: step "a": retry.max_attempts must be between 1 and 100, got 101`}},
		{name: "max_attempts negative", src: def("{name: a, kind: task, task: t, retry: {max_attempts: -1}}"), want: []string{`retry.max_attempts must be between 1 and 100, got -1`}},
		{name: "backoff below one", src: def("{name: a, kind: task, task: t, retry: {backoff_coefficient: 0.5}}"), want: []string{`w.yaml: step "a": retry.backoff_coefficient must be at least 1, got 0.5`}},
		{name: "backoff negative", src: def("{name: a, kind: task, task: t, retry: {backoff_coefficient: -2}}"), want: []string{`retry.backoff_coefficient must be at least 1, got -2`}},
		{name: "backoff NaN", src: def("{name: a, kind: task, task: t, retry: {backoff_coefficient: .nan}}"), want: []string{`retry.backoff_coefficient must be at least 1, got NaN`}},

		// Triggers.
		{name: "reserved jetflow subject", src: trig("jetflow.x", "id"), want: []string{`w.yaml: trigger subject "jetflow.x" is reserved`}},
		{name: "reserved jetflow wildcard", src: trig("jetflow.>", "id"), want: []string{`trigger subject "jetflow.>" is reserved`}},
		{name: "reserved system subject", src: trig("$SYS.x", "id"), want: []string{`w.yaml: trigger subject "$SYS.x" is reserved`}},
		{name: "reserved JetStream API", src: trig("$JS.API.>", "id"), want: []string{`is reserved`}},
		{name: "reserved full wildcard", src: trig(">", "id"), want: []string{`w.yaml: trigger subject ">" is reserved`}},
		{name: "reserved token wildcard", src: trig("*", "id"), want: []string{`trigger subject "*" is reserved`}},
		{name: "reserved inbox", src: trig("_INBOX.abc", "id"), want: []string{`trigger subject "_INBOX.abc" is reserved`}},
		{name: "wildcard first token overlaps jetflow", src: trig("*.>", "id"), want: []string{`trigger subject "*.>" is reserved`}},
		{name: "subject empty", src: trig("", "id"), want: []string{`w.yaml: trigger subject: subject is empty`}},
		{name: "subject empty token", src: trig("orders..created", "id"), want: []string{`trigger subject: subject "orders..created" has an empty token`}},
		{name: "subject trailing dot", src: trig("orders.", "id"), want: []string{`has an empty token`}},
		{name: "subject with space", src: trig("orders created", "id"), want: []string{`contains white space`}},
		{name: "subject partial wildcard", src: trig("orders.cre*", "id"), want: []string{`wildcards must be whole tokens`}},
		{name: "subject > not last", src: trig("orders.>.x", "id"), want: []string{`'>' must be the last token`}},
		{name: "subject too long", src: trig("a."+strings.Repeat("b", 255), "id"), want: []string{`is longer than 255 characters`}},
		{name: "trigger key empty", src: trig("orders.created", "''"), want: []string{`w.yaml: trigger key is empty`}},
		{name: "trigger key empty header", src: trig("orders.created", "'header:'"), want: []string{`w.yaml: trigger key "header:" names no header`}},
		{name: "trigger key empty path element", src: trig("orders.created", "order..id"), want: []string{`w.yaml: trigger key "order..id" has an empty path element`}},
		{name: "trigger key leading dot", src: trig("orders.created", ".id"), want: []string{`has an empty path element`}},
		{name: "trigger on_duplicate unknown", src: trigDup("restart"), want: []string{`w.yaml: trigger on_duplicate must be ignore (the default: drop duplicates) or rerun (start a new run once the latest one ended), got "restart"`}},
		{name: "trigger on_duplicate wrong case", src: trigDup("Rerun"), want: []string{`trigger on_duplicate must be ignore`, `got "Rerun"`}},
		{name: "trigger on_duplicate not a string", src: trigDup("[rerun]"), want: []string{`w.yaml: cannot parse:`}},

		// Expressions.
		{name: "input compile error", src: def("{name: a, kind: task, task: t, input: '1 +'}"), want: []string{`w.yaml: step "a": input: unexpected token EOF`}},
		{name: "case compile error", src: def("{name: s, kind: switch, cases: [{when: 'input.x ==', next: a}]}", okStep), want: []string{`w.yaml: step "s": case 1 condition: unexpected token EOF`}},
		{name: "output compile error", src: "name: w\nversion: 1\noutput: '{'\nsteps:\n" + items(okStep), want: []string{`w.yaml: output: `}},
		{name: "unknown step in input", src: def("{name: a, kind: task, task: t, input: steps.nope.output}"), want: []string{`w.yaml: step "a": input refers to unknown step "nope"`}},
		{name: "unknown step by index", src: def("{name: a, kind: task, task: t, input: 'steps[\"nope\"].output'}"), want: []string{`step "a": input refers to unknown step "nope"`}},
		{name: "unknown step in case", src: def("{name: s, kind: switch, cases: [{when: 'steps.ghost.status == \"completed\"', next: a}]}", okStep), want: []string{`step "s": case 1 condition refers to unknown step "ghost"`}},
		{name: "unknown step in output", src: "name: w\nversion: 1\noutput: steps.nope.output\nsteps:\n" + items(okStep), want: []string{`w.yaml: output refers to unknown step "nope"`}},
		{name: "unknown variable", src: def("{name: a, kind: task, task: t, input: 'inptu.x'}"), want: []string{`w.yaml: step "a": input: unknown variable "inptu" (use input or steps.<name>.output)`}},
		{name: "env variable", src: def("{name: a, kind: task, task: t, input: '$env'}"), want: []string{`unknown variable "$env"`}},
		{name: "now call", src: def("{name: a, kind: task, task: t, input: 'now()'}"), want: []string{`w.yaml: step "a": input: now() is not allowed; expressions must give the same result when replayed`}},
		{name: "now in condition", src: def("{name: s, kind: switch, cases: [{when: 'now().Hour() > 12', next: a}]}", okStep), want: []string{`step "s": case 1 condition: now() is not allowed`}},
		{name: "now in output", src: "name: w\nversion: 1\noutput: 'string(now())'\nsteps:\n" + items(okStep), want: []string{`w.yaml: output: now() is not allowed`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.bug != "" {
				t.Skip("bug: " + tc.bug)
			}
			def, err := workflow.Parse("w.yaml", []byte(tc.src))
			require.Nil(t, def)
			require.ErrorIs(t, err, workflow.ErrInvalidDefinition)
			require.ErrorContains(t, err, "w.yaml")
			for _, want := range tc.want {
				require.ErrorContains(t, err, want)
			}
		})
	}
}

func trig(subject, key string) string {
	return "name: w\nversion: 1\ntrigger:\n  subject: '" + subject + "'\n  key: " + key + "\nsteps:\n" + items(okStep)
}

func TestParseAcceptsExpressions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		expr string
	}{
		{name: "input field", expr: `input.orderId`},
		{name: "step output", expr: `steps.a.output`},
		{name: "step by index", expr: `steps["a"].status`},
		{name: "map literal", expr: `{"id": input.id, "n": 1}`},
		{name: "builtin", expr: `len(input.items) > 0 && upper(input.name) != ""`},
		{name: "let", expr: `let x = input.n; x * 2`},
		{name: "predicate", expr: `filter(input.items, .price > 10)`},
		{name: "pointer", expr: `map(input.items, # * 2)`},
		{name: "nil check", expr: `steps["a"] != nil`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := def("{name: a, kind: task, task: t, next: b}", fmt.Sprintf("{name: b, kind: task, task: t, input: %q}", tc.expr))
			_, err := workflow.Parse("w.yaml", []byte(src))
			require.NoError(t, err)
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	t.Parallel()
	src := "name: 'bad name'\nversion: 0\nsteps:\n" + items(
		"{name: a, kind: task, task: t, next: nope}",
		"{name: b, kind: wat}",
	)
	_, err := workflow.Parse("multi.yaml", []byte(src))
	require.ErrorIs(t, err, workflow.ErrInvalidDefinition)
	lines := strings.Split(err.Error(), "\n")
	require.Equal(t, []string{
		`multi.yaml: invalid name: workflow name "bad name" may contain only letters, digits, '-' and '_'`,
		`multi.yaml: version must be a positive integer, got 0`,
		`multi.yaml: step "a": next refers to unknown step "nope"`,
		`multi.yaml: step "b": unknown kind "wat" (one of task, parallel, switch, bulk, sleep, wait, workflow)`,
	}, lines)

	// Each joined error is a *DefinitionError naming its step.
	var de *workflow.DefinitionError
	require.ErrorAs(t, err, &de)
	require.Equal(t, "multi.yaml", de.File)
}

func TestDefinitionError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  *workflow.DefinitionError
		want string
	}{
		{name: "file and step", err: &workflow.DefinitionError{File: "f.yaml", Step: "s", Problem: "broken"}, want: `f.yaml: step "s": broken`},
		{name: "file only", err: &workflow.DefinitionError{File: "f.yaml", Problem: "broken"}, want: `f.yaml: broken`},
		{name: "no file", err: &workflow.DefinitionError{Step: "s", Problem: "broken"}, want: `definition: step "s": broken`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			require.EqualError(t, tc.err, tc.want)
			require.ErrorIs(t, tc.err, workflow.ErrInvalidDefinition)
			require.NotErrorIs(t, tc.err, workflow.ErrInvalidName)
			wrapped := fmt.Errorf("load: %w", tc.err)
			require.True(t, errors.Is(wrapped, workflow.ErrInvalidDefinition))
		})
	}
}

// A parallel branch list with an empty name must be rejected, not crash.
func TestParseEmptyBranchName(t *testing.T) {
	t.Parallel()
	for _, src := range []string{
		def("{name: p, kind: parallel, branches: ['']}"),
		def("{name: p, kind: parallel, branches: [a, '']}", okStep),
		`{"name": "w", "version": 1, "steps": [{"name": "p", "kind": "parallel", "branches": [null]}]}`,
	} {
		var err error
		require.NotPanics(t, func() { _, err = workflow.Parse("w.yaml", []byte(src)) })
		require.ErrorIs(t, err, workflow.ErrInvalidDefinition)
		require.ErrorContains(t, err, `step "p": `)
	}
}

func TestValidateSubject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		subject   string
		wildcards bool
		wantErr   string
	}{
		{name: "plain", subject: "orders.created"},
		{name: "single token", subject: "orders"},
		{name: "star allowed", subject: "orders.*.created", wildcards: true},
		{name: "gt allowed", subject: "orders.>", wildcards: true},
		{name: "star not allowed", subject: "orders.*", wantErr: "must not contain wildcards"},
		{name: "gt not allowed", subject: "orders.>", wantErr: "must not contain wildcards"},
		{name: "gt in the middle", subject: "a.>.b", wildcards: true, wantErr: "'>' must be the last token"},
		{name: "partial wildcard", subject: "a.b*", wildcards: true, wantErr: "wildcards must be whole tokens"},
		{name: "empty", subject: "", wantErr: "subject is empty"},
		{name: "leading dot", subject: ".a", wantErr: "empty token"},
		{name: "tab", subject: "a.\tb", wantErr: "white space"},
		{name: "newline", subject: "a\nb", wantErr: "white space"},
		{name: "255 chars", subject: strings.Repeat("a", 255)},
		{name: "256 chars", subject: strings.Repeat("a", 256), wantErr: "longer than 255"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := workflow.ValidateSubject(tc.subject, tc.wildcards)
			if tc.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.wantErr)
		})
	}
}

func TestParseTriggerKeys(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"orderId", "order.id", "'header:Nats-Msg-Id'", "a.b.c"} {
		t.Run(key, func(t *testing.T) {
			t.Parallel()
			d, err := workflow.Parse("w.yaml", []byte(trig("orders.created", key)))
			require.NoError(t, err)
			require.Equal(t, strings.Trim(key, "'"), d.Trigger.Key)
		})
	}
}

func trigDup(policy string) string {
	return "name: w\nversion: 1\ntrigger:\n  subject: orders.created\n  key: id\n  on_duplicate: " + policy + "\nsteps:\n" + items(okStep)
}

func TestParseTriggerOnDuplicate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src string
		want      workflow.DuplicatePolicy
		reruns    bool
	}{
		{name: "omitted is ignore", src: trig("orders.created", "id"), want: "", reruns: false},
		{name: "ignore", src: trigDup("ignore"), want: workflow.DuplicateIgnore, reruns: false},
		{name: "rerun", src: trigDup("rerun"), want: workflow.DuplicateRerun, reruns: true},
		{name: "json rerun", src: `{"name": "w", "version": 1, "trigger": {"subject": "a.b", "key": "id", "on_duplicate": "rerun"}, "steps": [{"name": "s", "kind": "task", "task": "t"}]}`, want: workflow.DuplicateRerun, reruns: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := workflow.Parse("w.yaml", []byte(tc.src))
			require.NoError(t, err)
			require.Equal(t, tc.want, d.Trigger.OnDuplicate)
			require.Equal(t, tc.reruns, d.Reruns())
		})
	}
	noTrigger := mustParse(t, "name: w\nversion: 1\nsteps:\n"+items(okStep))
	require.False(t, noTrigger.Reruns(), "a workflow without a trigger never reruns")
}
