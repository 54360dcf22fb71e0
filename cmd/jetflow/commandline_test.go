package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/cli/dispatchercmd"
	"github.com/jetflow/jetflow/internal/cli/servercmd"
	"github.com/jetflow/jetflow/internal/cli/workercmd"
)

// helpOf runs cmd with args and returns what it printed.
func helpOf(t *testing.T, cmd *cobra.Command, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	require.NoError(t, cmd.ExecuteContext(context.Background()))
	return out.String()
}

// TestProcessCommandsHelpAgrees: `dispatcher --help` (cmd/dispatcher:
// cli.Main(dispatchercmd.New())) and `jetflow dispatcher --help` print
// the same, but for the program name in the usage line; likewise worker
// and server. Neither lists the client commands' flags, and --version
// works in both.
func TestProcessCommandsHelpAgrees(t *testing.T) {
	for _, c := range []struct {
		name string
		cmd  func() *cobra.Command
	}{{"dispatcher", dispatchercmd.New}, {"worker", workercmd.New}, {"server", servercmd.New}} {
		t.Run(c.name, func(t *testing.T) {
			alone := helpOf(t, c.cmd(), "--help")
			sub := helpOf(t, newRoot(), c.name, "--help")
			require.Contains(t, sub, "\n  jetflow "+c.name+" [flags]\n")
			require.Equal(t, alone, strings.Replace(sub, "\n  jetflow "+c.name+" [flags]\n", "\n  "+c.name+" [flags]\n", 1))
			require.NotContains(t, sub, "Global Flags")
			require.NotContains(t, sub, "--json")
			require.Contains(t, alone, "--log-level")
			require.Contains(t, alone, "(env JETFLOW_LOG_LEVEL)")

			v := helpOf(t, c.cmd(), "--version")
			require.True(t, strings.HasPrefix(v, c.name+" "), v)
			require.Equal(t, v, helpOf(t, newRoot(), c.name, "--version"))
		})
	}
	require.Contains(t, helpOf(t, newRoot(), "--version"), "jetflow ")
	_, _, err := jetflow(t, "dispatcher", "--json")
	require.EqualError(t, err, "unknown flag: --json", "a client flag is not a dispatcher flag")
	_, _, err = jetflow(t, "worker", "extra-arg")
	require.ErrorContains(t, err, "jetflow worker takes no arguments")
}

// TestHelpShowsNoSecrets: with every secret in the environment, --help of
// the dispatcher and the worker shows none of them.
func TestHelpShowsNoSecrets(t *testing.T) {
	for _, v := range []string{"NATS_CONTEXT", "NATS_CREDS", "NATS_NKEY", "NATS_CA", "NATS_CERT", "NATS_KEY"} {
		t.Setenv(v, "")
	}
	t.Setenv("NATS_PASSWORD", "s3cr3t-pw")
	t.Setenv("NATS_TOKEN", "s3cr3t-tok")
	t.Setenv("NATS_USER", "s3cr3t-user")
	t.Setenv("JETFLOW_PASSWORD", "s3cr3t-pw")
	t.Setenv("JETFLOW_NATS_URL", "nats://u:s3cr3t-url@h:4222")
	t.Setenv("NATS_URL", "nats://u:s3cr3t-url@h:4222")
	out := helpOf(t, dispatchercmd.New(), "--help") + helpOf(t, workercmd.New(), "--help") + helpOf(t, newRoot(), "worker", "--help")
	require.Contains(t, out, "--password")
	require.Contains(t, out, "NATS_PASSWORD")
	require.NotContains(t, out, "s3cr3t")
}
