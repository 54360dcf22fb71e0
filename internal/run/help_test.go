package run_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/internal/serve"
)

// TestHelpShowsNoSecrets: with every secret in the environment, --help of
// the dispatcher and the worker shows none of them.
func TestHelpShowsNoSecrets(t *testing.T) {
	run.ClearNATSEnv(t)
	t.Setenv("NATS_PASSWORD", "s3cr3t-pw")
	t.Setenv("NATS_TOKEN", "s3cr3t-tok")
	t.Setenv("NATS_USER", "s3cr3t-user")
	t.Setenv("JETFLOW_NATS_URL", "nats://u:s3cr3t-url@h:4222")
	t.Setenv("NATS_URL", "nats://u:s3cr3t-url@h:4222")
	out := run.CaptureStderr(t, func() {
		require.NoError(t, serve.Dispatcher(context.Background(), []string{"--help"}))
		require.NoError(t, run.Worker(context.Background(), []string{"--help"}))
	})
	require.Contains(t, out, "-password")
	require.Contains(t, out, "NATS_PASSWORD")
	require.NotContains(t, out, "s3cr3t")
}
