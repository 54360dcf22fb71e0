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
//	       4xx fail permanently
package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/jetflow/jetflow/worker"
)

// Register adds every built-in task type to w.
func Register(w *worker.Worker) error { return RegisterTypes(w) }

// RegisterTypes adds the named built-in task types to w (every one when
// none is named), e.g. for a worker whose NATS user may handle only some.
func RegisterTypes(w *worker.Worker, types ...string) error {
	builtins := map[string]worker.Handler{
		"echo":  Echo,
		"noop":  Noop,
		"sleep": Sleep,
		"fail":  Fail,
		"http":  HTTP,
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

var httpClient = &http.Client{Timeout: 30 * time.Second}

// HTTP performs an HTTP request.
func HTTP(ctx context.Context, t *worker.Task) (any, error) {
	_, m, err := field(t, "url")
	if err != nil {
		return nil, err
	}
	url, _ := m["url"].(string)
	if url == "" {
		return nil, worker.Permanent(errors.New("http task: input.url is required"))
	}
	method, _ := m["method"].(string)
	if method == "" {
		method = http.MethodGet
	}
	var body io.Reader
	if b, ok := m["body"].(string); ok {
		body = bytes.NewBufferString(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return nil, worker.Permanent(fmt.Errorf("http task: %w", err))
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("http task: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<10))
	if err != nil {
		return nil, fmt.Errorf("http task: read body: %w", err)
	}
	out := map[string]any{"status": int64(resp.StatusCode), "body": string(b)}
	switch {
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("http task: %s returned %d", url, resp.StatusCode)
	case resp.StatusCode >= 400:
		return nil, worker.Permanent(fmt.Errorf("http task: %s returned %d", url, resp.StatusCode))
	}
	return out, nil
}
