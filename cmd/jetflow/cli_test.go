package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// jetflow executes the CLI in-process, as the binary would with args.
func jetflow(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err = root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

const (
	orderDef  = "name: order\nversion: 1\ntrigger: {subject: orders.*, key: id}\nsteps:\n  - {name: a, kind: task, task: echo}\n"
	manualDef = "name: manual\nversion: 1\nsteps:\n  - {name: a, kind: task, task: echo}\n"
)

func echo(_ context.Context, t *worker.Task) (any, error) { return t.Input() }

// setup starts a server on loopback with both definitions registered.
func setup(t *testing.T, cfg jetstream.Config) *jftest.Env {
	t.Helper()
	e := jftest.StartTCP(t, cfg)
	e.Register(orderDef)
	e.Register(manualDef)
	return e
}

func streamCounts(t *testing.T, e *jftest.Env) map[string]uint64 {
	t.Helper()
	counts, err := e.Client.StreamCounts(context.Background())
	require.NoError(t, err)
	return counts
}

// TestStartUnknownWorkflowFails: start of a workflow nobody registered
// fails at once, naming the registered ones, and publishes nothing.
func TestStartUnknownWorkflowFails(t *testing.T) {
	t.Parallel()
	e := setup(t, jetstream.Config{})
	_, _, err := jetflow(t, "--nats-url", e.URL, "start", "no-such-wf", "{}")
	require.ErrorIs(t, err, errUnknownWorkflow)
	require.EqualError(t, err, "unknown workflow no-such-wf (registered: manual, order)")
	_, _, err = jetflow(t, "--nats-url", e.URL, "start", "no-such-wf", "{}", "--wait", "30s")
	require.ErrorIs(t, err, errUnknownWorkflow, "--wait does not wait for a start that cannot happen")
	require.Zero(t, streamCounts(t, e)[jetstream.StreamTriggers], "nothing was published")

	empty := jftest.StartTCP(t, jetstream.Config{})
	_, _, err = jetflow(t, "--nats-url", empty.URL, "start", "manual")
	require.EqualError(t, err, "unknown workflow manual (registered: none)")

	_, _, err = jetflow(t, "--nats-url", e.URL, "start", "manual", "{not json")
	require.ErrorIs(t, err, jetstream.ErrMalformed)
}

// TestStartWaitReportsARejectedStart: start checks the payload against
// the limit the dispatcher provisioned before publishing; and when a
// dispatcher dead-letters a start (here one published by another
// producer, past the CLI's checks), waiting for it fails at once with the
// dispatcher's reason instead of waiting out the timeout and asking
// whether a dispatcher runs. A start it accepts is waited for and shown.
func TestStartWaitReportsARejectedStart(t *testing.T) {
	t.Parallel()
	e := setup(t, jetstream.Config{MaxPayload: 2048}) // the dispatcher's limit
	e.Dispatcher(nil, dispatcher.Config{})
	e.Worker(nil, worker.Config{}, map[string]worker.Handler{"echo": echo})
	ctx := context.Background()

	out, _, err := jetflow(t, "--nats-url", e.URL, "start", "manual", `{"n":1}`, "--key", "small", "--wait", "60s")
	require.NoError(t, err)
	require.Contains(t, out, "status    completed")

	payload := []byte(`{"pad":"` + strings.Repeat("x", 4096) + `"}`)
	big := filepath.Join(t.TempDir(), "big.json")
	require.NoError(t, os.WriteFile(big, payload, 0o600))
	before := streamCounts(t, e)[jetstream.StreamTriggers] // the small start's trigger
	_, _, err = jetflow(t, "--nats-url", e.URL, "start", "manual", "@"+big, "--key", "big", "--wait", "10m")
	require.ErrorIs(t, err, jetstream.ErrTooLarge, "the CLI knows the provisioned limit")
	require.Equal(t, before, streamCounts(t, e)[jetstream.StreamTriggers], "nothing was published")

	// The same start from a producer that does not check.
	c, err := jetstream.Connect(ctx, jetstream.Config{URL: e.URL})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.Bind(ctx))
	id := workflow.InstanceID("manual", "big")
	msgID := jetstream.TriggerMsgID("manual", "big")
	sent := time.Now()
	_, err = c.Publish(ctx, jetstream.StartSubject("manual"), payload, map[string]string{jetstream.HeaderEventKey: "big", jetstream.HeaderMsgID: msgID})
	require.NoError(t, err)
	_, err = waitFor(ctx, c, id, 10*time.Minute, &startRef{msgID: msgID, sent: sent})
	require.Error(t, err)
	require.Contains(t, err.Error(), "the start of "+id+" was rejected (see jetflow dlq): ")
	require.Contains(t, err.Error(), "4106 bytes")
	require.NotContains(t, err.Error(), "dispatcher running")
	t.Logf("a rejected start was reported after %s (waiting up to 10m): %v", time.Since(sent).Round(time.Millisecond), err)
}

// TestPublishRefusesReservedSubjects: jetflow's own subjects and NATS's
// $ subjects are refused before anything is sent.
func TestPublishRefusesReservedSubjects(t *testing.T) {
	t.Parallel()
	e := setup(t, jetstream.Config{})
	for _, subject := range []string{"jetflow.start.manual", "jetflow.timer.x.y", "jetflow.event.x", "$JS.API.INFO", "$KV.jetflow_instances.x"} {
		_, _, err := jetflow(t, "--nats-url", e.URL, "publish", subject, "{}")
		require.ErrorContains(t, err, "subject "+subject+" is reserved", subject)
	}
	for name, n := range streamCounts(t, e) {
		require.Zero(t, n, "stream %s", name)
	}
}

// TestPublishWarnsWhenNoTriggerMatches: a subject a registered trigger
// matches is published quietly; any other gets a warning listing the
// trigger subjects, and when no stream captures it, a clear error instead
// of "no response from stream".
func TestPublishWarnsWhenNoTriggerMatches(t *testing.T) {
	t.Parallel()
	e := setup(t, jetstream.Config{})
	out, stderr, err := jetflow(t, "--nats-url", e.URL, "publish", "orders.created", `{"id":"1"}`)
	require.NoError(t, err)
	require.Equal(t, "published to orders.created\n", out)
	require.Empty(t, stderr)

	_, stderr, err = jetflow(t, "--nats-url", e.URL, "publish", "nobody.listens", "{}")
	require.Equal(t, "warning: no registered workflow is triggered by nobody.listens (trigger subjects: orders.*)\n", stderr)
	require.EqualError(t, err, "nothing was published: no stream captures nobody.listens, so no workflow would ever see it (trigger subjects: orders.*)")
	require.EqualValues(t, 1, streamCounts(t, e)[jetstream.StreamTriggers])
}

// TestCommandsFailFastWithoutAServer: every command that needs NATS
// fails after --connect-timeout (2s by default) when no server answers —
// nothing listening, or a listener that never speaks NATS — naming the
// URL it tried.
func TestCommandsFailFastWithoutAServer(t *testing.T) {
	t.Parallel()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := "nats://" + closed.Addr().String()
	require.NoError(t, closed.Close())
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { silent.Close() })
	go func() { // accept and never answer
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	def := filepath.Join(t.TempDir(), "manual.yaml")
	require.NoError(t, os.WriteFile(def, []byte(manualDef), 0o600))
	commands := [][]string{
		{"register", def}, {"definitions"}, {"publish", "orders.created", "{}"}, {"start", "manual"},
		{"instances"}, {"show", "x"}, {"wait", "x"}, {"cancel", "x"}, {"signal", "x", "go"},
		{"children", "x", "y"}, {"stats"}, {"dlq"}, {"bench", "throughput", "--external"},
	}
	// All at once: each mostly waits, and parallel subtests would queue
	// behind -parallel (the number of CPUs).
	type result struct {
		url  string
		args []string
		err  error
		took time.Duration
	}
	var wg sync.WaitGroup
	results := make(chan result, 2*len(commands))
	for _, url := range []string{refused, "nats://" + silent.Addr().String()} {
		for _, args := range commands {
			wg.Add(1)
			go func() {
				defer wg.Done()
				begin := time.Now()
				_, _, err := jetflow(t, append([]string{"--nats-url", url}, args...)...)
				results <- result{url, args, err, time.Since(begin)}
			}()
		}
	}
	wg.Wait()
	close(results)
	var slowest time.Duration
	for r := range results {
		require.Error(t, r.err, "%v", r.args)
		require.True(t, strings.HasPrefix(r.err.Error(), fmt.Sprintf("connect to %s as no credentials: no server answered within 2s", r.url)), "%v: %v", r.args, r.err)
		slowest = max(slowest, r.took)
	}
	t.Logf("%d commands against a refused port and a silent listener each failed within %s", 2*len(commands), slowest.Round(time.Millisecond))
}
