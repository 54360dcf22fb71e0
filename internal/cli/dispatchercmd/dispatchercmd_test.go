package dispatchercmd

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasktoken"
)

// TestMaxPayloadIsValidatedAtStart: --max-payload and JETFLOW_MAX_PAYLOAD
// set the limit the dispatcher provisions (workers and clients read it
// from the data bucket); a value that is not a size, under 1 KiB or over
// what the NATS server accepts stops the dispatcher at start with an
// error that says which.
func TestMaxPayloadIsValidatedAtStart(t *testing.T) {
	ctx := context.Background()
	// runFor starts a dispatcher on a server of its own and stops it once
	// it runs; the limit it provisioned must be want.
	runFor := func(want int, args ...string) {
		t.Helper()
		e := jftest.StartTCP(t, jetstream.Config{})
		dctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- Run(dctx, append([]string{"--nats-url", e.URL, "--log-level", "error", "--repair-interval", "-1s"}, args...))
		}()
		// Running: it pulls events (stopped while it starts, it would
		// report the cancelled start).
		jftest.Eventually(t, 60*time.Second, func() bool {
			n, err := e.Client.PullsWaiting(ctx, jetstream.StreamEvents, jetstream.ConsumerDispatcher)
			return err == nil && n > 0
		}, "the dispatcher does not pull")
		cancel()
		require.NoError(t, <-done)
		c, err := jetstream.Connect(ctx, jetstream.Config{URL: e.URL})
		require.NoError(t, err)
		defer c.Close()
		require.NoError(t, c.Bind(ctx))
		require.Equal(t, want, c.Config().MaxPayload, "the limit a client reads from the data bucket")
	}
	runFor(2<<20, "--max-payload", "2MiB")
	t.Setenv("JETFLOW_MAX_PAYLOAD", "512KiB")
	runFor(512 << 10)

	e := jftest.StartTCP(t, jetstream.Config{})
	for _, c := range []struct{ value, want string }{
		{"lots", `--max-payload (JETFLOW_MAX_PAYLOAD): "lots" is not a size`},
		{"100", "max payload must be at least 1 KiB"},
		{"9MiB", "max payload too large: 9437184 bytes is more than the NATS server (" + e.URL + ") accepts (max_payload 8388608 bytes)"},
	} {
		// A dispatcher that accepted the value would run until this
		// context ends, and return no error.
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := Run(sctx, []string{"--nats-url", e.URL, "--log-level", "error", "--max-payload", c.value})
		cancel()
		require.ErrorContains(t, err, c.want, c.value)
	}
	// The embedded server too.
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := Run(sctx, []string{"--store-dir", t.TempDir(), "--listen", "", "--log-level", "error", "--max-payload", "9MiB"})
	require.ErrorIs(t, err, jetstream.ErrMaxPayload)
	require.ErrorContains(t, err, "(embedded) accepts (max_payload 8388608 bytes)")
}

// TestTaskTokenKeyFileIsCheckedAtStart: a missing or broken task token
// key file stops the dispatcher before it connects, naming the flag.
func TestTaskTokenKeyFileIsCheckedAtStart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.keys")
	require.NoError(t, os.WriteFile(broken, []byte("key tooshort\n"), 0o600))
	for _, path := range []string{filepath.Join(dir, "missing.keys"), broken} {
		err := Run(context.Background(), []string{"--nats-url", "nats://127.0.0.1:1", "--log-level", "error", "--task-token-key-file", path})
		require.ErrorContains(t, err, "--task-token-key-file")
		require.ErrorIs(t, err, tasktoken.ErrKeyFile)
	}
}
