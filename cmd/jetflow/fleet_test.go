package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
)

// childArgsEnv, when set, makes the test binary run the CLI with these
// arguments (separated by \x1f) instead of the tests: a real child process
// that a test can SIGKILL.
const childArgsEnv = "JETFLOW_TEST_CHILD_ARGS"

func TestMain(m *testing.M) {
	if args := os.Getenv(childArgsEnv); args != "" {
		ctx, stop := signalContext()
		defer stop()
		root := newRoot()
		root.SetArgs(strings.Split(args, "\x1f"))
		if err := root.ExecuteContext(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM)
}

// child starts the CLI in a child process with args; it is killed when
// the test ends.
func child(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childArgsEnv+"="+strings.Join(args, "\x1f"))
	if os.Getenv("JETFLOW_TEST_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

func workersNow(t *testing.T, url string) []jetstream.Presence {
	t.Helper()
	out, _, err := jetflow(t, "--nats-url", url, "--json", "workers")
	require.NoError(t, err)
	var ws []jetstream.Presence
	require.NoError(t, json.Unmarshal([]byte(out), &ws), out)
	return ws
}

func byName(ws []jetstream.Presence, name string) *jetstream.Presence {
	for i := range ws {
		if ws[i].Name == name {
			return &ws[i]
		}
	}
	return nil
}

// TestWorkersListsTheFleetAndDropsAKilledWorker: `jetflow workers`
// lists two running worker processes with their task types and busy
// slots; after one is killed with SIGKILL (no chance to withdraw) it
// drops out when its presence record expires, a few seconds later,
// while the other stays. `jetflow dispatchers` lists the dispatcher.
func TestWorkersListsTheFleetAndDropsAKilledWorker(t *testing.T) {
	t.Parallel()
	e := jftest.StartTCP(t, jetstream.Config{})
	e.Register("name: nap\nversion: 1\nsteps:\n  - {name: a, kind: task, task: sleep}\n")
	e.Dispatcher(nil, dispatcher.Config{Name: "disp-1"})

	sleeper := child(t, "worker", "--nats-url", e.URL, "--name", "sleeper", "--task-types", "sleep", "--concurrency", "3", "--log-level", "error")
	echoerCmd := child(t, "worker", "--nats-url", e.URL, "--name", "echoer", "--task-types", "echo,noop", "--concurrency", "5", "--log-level", "error")

	// Two long tasks keep two of the sleeper's three slots busy.
	ctx := context.Background()
	for i := range 2 {
		require.NoError(t, e.Client.PublishStart(ctx, jetstream.Start{Workflow: "nap", EventKey: fmt.Sprint(i), Payload: []byte(`{"ms": 600000}`)}))
	}
	var ws []jetstream.Presence
	jftest.Eventually(t, 60*time.Second, func() bool {
		ws = workersNow(t, e.URL)
		s := byName(ws, "sleeper")
		return len(ws) == 2 && s != nil && s.Busy == 2
	}, "workers never listed both with the sleeper busy: %+v", ws)
	s, ec := byName(ws, "sleeper"), byName(ws, "echoer")
	require.Equal(t, []string{"sleep"}, s.TaskTypes)
	require.Equal(t, 3, s.Concurrency)
	require.Equal(t, []string{"echo", "noop"}, ec.TaskTypes)
	require.Equal(t, 5, ec.Concurrency)
	require.Zero(t, ec.Busy)
	require.Equal(t, sleeper.Process.Pid, s.PID)
	require.False(t, s.LastSeen.IsZero())

	text, _, err := jetflow(t, "--nats-url", e.URL, "workers")
	require.NoError(t, err)
	require.Contains(t, text, "sleeper")
	require.Contains(t, text, "echo,noop")

	out, _, err := jetflow(t, "--nats-url", e.URL, "--json", "dispatchers")
	require.NoError(t, err)
	var ds []jetstream.Presence
	require.NoError(t, json.Unmarshal([]byte(out), &ds))
	require.Len(t, ds, 1)
	require.Equal(t, "disp-1", ds[0].Name)
	require.True(t, ds[0].Consuming)

	require.NoError(t, sleeper.Process.Signal(syscall.SIGKILL))
	_ = sleeper.Wait()
	killed := time.Now()
	// The record lives two presence intervals and a second (5s) after
	// its last write; the deadline is generous for a loaded machine.
	jftest.Eventually(t, 30*time.Second, func() bool {
		ws = workersNow(t, e.URL)
		return byName(ws, "sleeper") == nil
	}, "the killed worker is still listed: %+v", ws)
	t.Logf("the killed worker dropped out %s after SIGKILL", time.Since(killed).Round(100*time.Millisecond))
	require.NotNil(t, byName(ws, "echoer"), "the live worker dropped out too")

	// A worker that stops gracefully withdraws its record before it
	// exits: it is gone at the first look after the process ended.
	require.NoError(t, echoerCmd.Process.Signal(syscall.SIGTERM))
	exited := make(chan error, 1)
	go func() { exited <- echoerCmd.Wait() }()
	select {
	case err := <-exited:
		require.NoError(t, err, "the echoer did not stop cleanly")
	case <-time.After(60 * time.Second):
		t.Fatal("the echoer did not stop")
	}
	require.Nil(t, byName(workersNow(t, e.URL), "echoer"), "a worker that stopped gracefully is still listed")
}
