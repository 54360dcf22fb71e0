// Package tasks holds the reference worker's built-in task types, useful
// for demos, tests and benchmarks:
//
//	echo   returns its input
//	noop   returns nothing
//	sleep  waits input.ms milliseconds (default 100), then returns its input
//	fail   fails attempts 1..input.times (permanently with
//	       input.permanent), then returns its input
//	http   calls input.url with input.method (GET) and input.body;
//	       returns {status, body}; 5xx and network errors are retried,
//	       4xx fail permanently. Only hosts on an allowlist
//	       (Options.HTTPAllow; default: loopback only) are called.
package tasks

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jetflow/jetflow/worker"
)

// Options configures the built-in task types.
type Options struct {
	// HTTPAllow lists the hosts the http task may call (see NewHTTP).
	// Default: none but loopback.
	HTTPAllow []string
}

// Register adds every built-in task type to w, with default Options.
func Register(w *worker.Worker) error { return RegisterTypes(w) }

// RegisterTypes adds the named built-in task types to w (every one when
// none is named), with default Options.
func RegisterTypes(w *worker.Worker, types ...string) error {
	return RegisterWith(w, Options{}, types...)
}

// RegisterWith adds the named built-in task types to w (every one when
// none is named), e.g. for a worker whose NATS user may handle only some.
func RegisterWith(w *worker.Worker, o Options, types ...string) error {
	httpTask, err := NewHTTP(o.HTTPAllow)
	if err != nil {
		return err
	}
	builtins := map[string]worker.Handler{
		"echo":  Echo,
		"noop":  Noop,
		"sleep": Sleep,
		"fail":  Fail,
		"http":  httpTask,
	}
	if len(types) == 0 {
		for name := range builtins {
			types = append(types, name)
		}
	}
	for _, name := range types {
		h, ok := builtins[name]
		if !ok {
			return fmt.Errorf("no built-in task type %q (there are echo, noop, sleep, fail and http)", name)
		}
		if err := w.Handle(name, h); err != nil {
			return err
		}
	}
	return nil
}

// Echo returns its input, byte for byte as JSON (numbers keep their
// exact form).
func Echo(_ context.Context, t *worker.Task) (any, error) {
	var in json.RawMessage
	if err := t.Bind(&in); err != nil {
		return nil, worker.Permanent(err)
	}
	return in, nil
}

// Noop returns nothing.
func Noop(context.Context, *worker.Task) (any, error) { return nil, nil }

func field(t *worker.Task, name string) (any, map[string]any, error) {
	in, err := t.Input()
	if err != nil {
		return nil, nil, worker.Permanent(err)
	}
	m, _ := in.(map[string]any)
	if m == nil {
		return in, nil, nil
	}
	return in, m, nil
}

func intOf(v any, def int64) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case uint64:
		return int64(n)
	case float64:
		return int64(n)
	}
	return def
}

// Sleep waits input.ms milliseconds, honouring cancellation.
func Sleep(ctx context.Context, t *worker.Task) (any, error) {
	in, m, err := field(t, "ms")
	if err != nil {
		return nil, err
	}
	d := time.Duration(intOf(m["ms"], 100)) * time.Millisecond
	select {
	case <-time.After(d):
		return in, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Fail fails the first input.times attempts.
func Fail(_ context.Context, t *worker.Task) (any, error) {
	in, m, err := field(t, "times")
	if err != nil {
		return nil, err
	}
	times := intOf(m["times"], 1)
	if int64(t.Attempt) <= times {
		err := fmt.Errorf("failing attempt %d of %d on purpose", t.Attempt, times)
		if p, _ := m["permanent"].(bool); p {
			return nil, worker.Permanent(err)
		}
		return nil, err
	}
	return in, nil
}
