package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// userValues are the keys under which the read commands embed user
// values as they are (whatever their keys).
var userValues = map[string]bool{"input": true, "output": true, "data": true}

// requireSnakeCase fails on a key of v, at any depth, that is not
// snake_case (no upper case, no Go field names like "ID" or "InputRef"),
// skipping the user values.
func requireSnakeCase(t *testing.T, what string, v any, path string) {
	t.Helper()
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			require.False(t, strings.IndexFunc(k, unicode.IsUpper) >= 0 || strings.Contains(k, "-") || strings.Contains(k, " "),
				"%s: key %q at %s is not snake_case", what, k, path)
			if !userValues[k] {
				requireSnakeCase(t, what, e, path+"."+k)
			}
		}
	case []any:
		for _, e := range x {
			requireSnakeCase(t, what, e, path+"[]")
		}
	}
}

// jsonOf runs the CLI with --json and decodes what it printed.
func jsonOf(t *testing.T, url string, args ...string) any {
	t.Helper()
	out, stderr, err := jetflow(t, append([]string{"--nats-url", url, "--json"}, args...)...)
	require.NoError(t, err, "%v: %s", args, stderr)
	var v any
	require.NoError(t, json.Unmarshal([]byte(out), &v), "%v printed no JSON:\n%s", args, out)
	requireSnakeCase(t, strings.Join(args, " "), v, "$")
	return v
}

// TestReadCommandsJSON runs every read command with --json against real
// instances (one whose step failed once and then succeeded, a bulk step,
// a dead-lettered trigger) and requires snake_case keys throughout, user
// values as JSON, the attempts of each step, and pages of instances.
// Without --json, stats prints text. decode prints an instance record
// read with the nats client as show --json prints the instance.
func TestReadCommandsJSON(t *testing.T) {
	t.Parallel()
	e := setup(t, jetstream.Config{})
	e.Register("name: flaky\nversion: 1\nsteps:\n  - {name: charge, kind: task, task: flaky, retry: {max_attempts: 3, initial_interval: 1ms}}\n")
	e.Register("name: fan\nversion: 1\nsteps:\n  - {name: notify, kind: bulk, workflow: manual, items: input.to}\n")
	e.Dispatcher(nil, dispatcher.Config{})
	var calls atomic.Int64
	e.Worker(nil, worker.Config{Name: "w-test"}, map[string]worker.Handler{
		"echo": echo,
		"flaky": func(_ context.Context, t *worker.Task) (any, error) {
			if calls.Add(1) == 1 {
				return nil, errors.New("card declined")
			}
			return map[string]any{"Charged": 1250, "orderId": "o-1"}, nil
		},
	})
	url := e.URL

	// show, and start --wait, with the attempts of the step.
	inst := jsonOf(t, url, "start", "flaky", `{"Amount":1250}`, "--key", "k1", "--wait", "60s").(map[string]any)
	id := workflow.InstanceID("flaky", "k1")
	require.Equal(t, id, inst["id"])
	require.Equal(t, "completed", inst["status"])
	require.Equal(t, map[string]any{"Amount": 1250.0}, inst["input"], "the user's input as JSON, its keys as they are")
	require.Equal(t, map[string]any{"Charged": 1250.0, "orderId": "o-1"}, inst["output"])
	steps := inst["steps"].([]any)
	require.Len(t, steps, 1)
	charge := steps[0].(map[string]any)
	require.Equal(t, "charge", charge["name"])
	attempts := charge["attempts"].([]any)
	require.Len(t, attempts, 2)
	first, second := attempts[0].(map[string]any), attempts[1].(map[string]any)
	require.Equal(t, 1.0, first["attempt"])
	require.Equal(t, "w-test", first["worker"])
	require.Equal(t, "card declined", first["error"])
	require.NotEmpty(t, first["started"])
	require.NotEmpty(t, first["ended"])
	require.Equal(t, 2.0, second["attempt"])
	require.Nil(t, second["error"])
	require.Equal(t, inst, jsonOf(t, url, "show", id))
	require.Equal(t, inst, jsonOf(t, url, "wait", id))

	out, _, err := jetflow(t, "--nats-url", url, "show", id)
	require.NoError(t, err)
	require.Contains(t, out, "STEP    ATTEMPT  STARTED")
	require.Regexp(t, `charge\s+1\s+\S+ \S+\s+\S+ \(\S+\)\s+w-test\s+card declined`, out)

	// decode: the instance record as the nats CLI reads it (nats kv get
	// --raw jetflow_instances ID) prints as show --json, but for the
	// values, which live in another bucket.
	raw := rawInstance(t, url, id)
	decoded := decodeOut(t, raw)
	want := asJSONMap(inst)
	delete(want, "input")
	delete(want, "output")
	require.Equal(t, want, decoded)

	// A bulk step's children, and its progress.
	jsonOf(t, url, "start", "fan", `{"to":["a","b","c"]}`, "--key", "f1", "--wait", "60s")
	children := jsonOf(t, url, "children", workflow.InstanceID("fan", "f1"), "notify").([]any)
	require.Len(t, children, 3)
	require.Equal(t, "completed", children[0].(map[string]any)["status"])
	fan := jsonOf(t, url, "show", workflow.InstanceID("fan", "f1")).(map[string]any)
	require.Equal(t, 3.0, fan["steps"].([]any)[0].(map[string]any)["bulk"].(map[string]any)["completed"])

	// Pages of instances: 1 + 1 + 3 children + 1 (of "manual" and
	// "flaky" and "fan"), newest first.
	page := jsonOf(t, url, "instances", "--limit", "2").(map[string]any)
	require.Equal(t, true, page["more"])
	require.Len(t, page["instances"], 2)
	var seen []string
	for after := ""; ; {
		args := []string{"instances", "--limit", "2"}
		if after != "" {
			args = append(args, "--after", after)
		}
		p := jsonOf(t, url, args...).(map[string]any)
		for _, in := range p["instances"].([]any) {
			seen = append(seen, in.(map[string]any)["id"].(string))
		}
		if p["more"] != true {
			require.Nil(t, p["next_after"])
			break
		}
		after = p["next_after"].(string)
	}
	all := jsonOf(t, url, "instances", "--limit", "0").(map[string]any)["instances"].([]any)
	require.Len(t, seen, len(all))
	require.Len(t, all, 5)
	_, stderr, err := jetflow(t, "--nats-url", url, "instances", "--limit", "2")
	require.NoError(t, err)
	require.Contains(t, stderr, "more instances: next page with --after ")

	// A trigger that is not JSON is dead-lettered; its payload is shown
	// as base64, a JSON one as JSON.
	c := e.NewClient()
	_, err = c.Publish(context.Background(), "orders.created", []byte("not json"), nil)
	require.NoError(t, err)
	_, err = c.Publish(context.Background(), "orders.created", []byte(`{"no_id":true}`), nil)
	require.NoError(t, err)
	var dls []any
	jftest.Eventually(t, 60*time.Second, func() bool {
		dls = jsonOf(t, url, "dlq").([]any)
		return len(dls) == 2
	}, "two dead letters")
	require.Equal(t, "bm90IGpzb24=", dls[0].(map[string]any)["data_base64"])
	require.Equal(t, map[string]any{"no_id": true}, dls[1].(map[string]any)["data"])

	// The others.
	jsonOf(t, url, "definitions")
	jsonOf(t, url, "explain", id)
	jftest.Eventually(t, 60*time.Second, func() bool { return len(jsonOf(t, url, "workers").([]any)) == 1 }, "the worker is present")
	jsonOf(t, url, "dispatchers")
	stats := jsonOf(t, url, "stats").([]any)
	require.Len(t, stats, 1)
	require.GreaterOrEqual(t, stats[0].(map[string]any)["stats"].(map[string]any)["completed"], 5.0)
	out, _, err = jetflow(t, "--nats-url", url, "stats")
	require.NoError(t, err)
	require.False(t, json.Valid([]byte(out)), "stats prints text without --json:\n%s", out)
	require.Regexp(t, `(?m)^dispatcher \S+\n(  \S+\s+\d+\n)+`, out)
}

// asJSONMap round-trips v through JSON, so it compares equal to decoded JSON.
func asJSONMap(v any) map[string]any {
	b, _ := json.Marshal(v)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

// rawInstance reads an instance record as `nats kv get --raw
// jetflow_instances ID` does.
func rawInstance(t *testing.T, url, id string) []byte {
	t.Helper()
	nc, err := nats.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	js, err := nc.JetStream()
	require.NoError(t, err)
	kv, err := js.KeyValue(jetstream.BucketInstances)
	require.NoError(t, err)
	e, err := kv.Get(id)
	require.NoError(t, err)
	return e.Value()
}

// decodeOut runs `jetflow decode` with b on stdin.
func decodeOut(t *testing.T, b []byte) map[string]any {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetIn(bytes.NewReader(b))
	root.SetOut(&out)
	root.SetArgs([]string{"decode"})
	require.NoError(t, root.ExecuteContext(context.Background()))
	var v map[string]any
	require.NoError(t, json.Unmarshal(out.Bytes(), &v), out.String())
	requireSnakeCase(t, "decode", v, "$")
	return v
}

// TestDecode: a JSON value (the data bucket) prints as it is; msgpack
// prints as JSON; nothing and garbage are errors.
func TestDecode(t *testing.T) {
	t.Parallel()
	v, err := decodeStored([]byte("{\"a\": 1}\n"))
	require.NoError(t, err)
	require.JSONEq(t, `{"a":1}`, string(v.(json.RawMessage)))
	mp, err := jetstream.EncodeMessage(workflow.Event{Kind: workflow.EventCancel, Instance: "x", Reason: "r"})
	require.NoError(t, err)
	v, err = decodeStored(mp)
	require.NoError(t, err)
	require.JSONEq(t, `{"k":"cancel","i":"x","r":"r"}`, string(v.(json.RawMessage)))
	v, err = decodeStored([]byte{0x07}) // a one-byte msgpack value: 7
	require.NoError(t, err)
	require.JSONEq(t, `7`, string(v.(json.RawMessage)))
	_, err = decodeStored(nil)
	require.ErrorIs(t, err, errEmptyInput)
	_, err = decodeStored([]byte{0xc1})
	require.Error(t, err)
}

// FuzzDecode: decode never panics, and what it prints is JSON.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"a":[1,2]}`))
	f.Add([]byte{0x81, 0xa1, 'a', 0x01})
	f.Add([]byte{0xc1})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := decodeStored(b)
		if err != nil {
			return
		}
		out, err := json.Marshal(v)
		require.NoError(t, err)
		require.True(t, json.Valid(out))
	})
}
