package cli

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"
)

func TestEnvName(t *testing.T) {
	t.Parallel()
	for flag, want := range map[string]string{"shards": "JETFLOW_SHARDS", "instance-retention": "JETFLOW_INSTANCE_RETENTION", "nats-url": "JETFLOW_NATS_URL"} {
		require.Equal(t, want, EnvName(flag))
	}
}

// command is a leaf command with a flag of each kind, returning what it
// ran with.
func command(got *struct {
	n int
	d time.Duration
	b bool
	s string
}) *cobra.Command {
	cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
	cmd.Flags().IntVar(&got.n, "count", 1, "an int")
	cmd.Flags().DurationVar(&got.d, "every", time.Second, "a duration")
	cmd.Flags().BoolVar(&got.b, "on", false, "a bool")
	cmd.Flags().StringVar(&got.s, "name-of", "def", "a string")
	AlsoEnv(cmd.Flags(), "name-of", "OTHER_NAME")
	return Setup(cmd)
}

// TestEnvironmentSetsFlags: each flag reads JETFLOW_<FLAG>, parsed as the
// flag parses its value; the command line wins; an empty variable is
// unset; a malformed one is an error naming it; the help names the
// variables.
func TestEnvironmentSetsFlags(t *testing.T) {
	var got struct {
		n int
		d time.Duration
		b bool
		s string
	}
	run := func(args ...string) error {
		cmd := command(&got)
		cmd.SetArgs(args)
		return cmd.Execute()
	}
	t.Setenv("JETFLOW_COUNT", "7")
	t.Setenv("JETFLOW_EVERY", "1m30s")
	t.Setenv("JETFLOW_ON", "true")
	t.Setenv("JETFLOW_NAME_OF", "")
	require.NoError(t, run())
	require.Equal(t, 7, got.n)
	require.Equal(t, 90*time.Second, got.d)
	require.True(t, got.b)
	require.Equal(t, "def", got.s, "an empty variable is not set")

	require.NoError(t, run("--count", "3", "--every", "2s"))
	require.Equal(t, 3, got.n, "the flag wins")
	require.Equal(t, 2*time.Second, got.d)

	for name, value := range map[string]string{"JETFLOW_COUNT": "abc", "JETFLOW_EVERY": "5", "JETFLOW_ON": "yes please"} {
		t.Run(name, func(t *testing.T) {
			t.Setenv(name, value)
			err := run()
			require.Error(t, err)
			require.Contains(t, err.Error(), name+"=")
		})
	}

	cmd := command(&got)
	help := cmd.Flags().Lookup("name-of").Usage
	require.Equal(t, "a string (env JETFLOW_NAME_OF, OTHER_NAME)", help)
}

// TestExtraArgumentsAreErrors: a leaf takes no positional argument.
func TestExtraArgumentsAreErrors(t *testing.T) {
	t.Parallel()
	var got struct {
		n int
		d time.Duration
		b bool
		s string
	}
	cmd := command(&got)
	cmd.SetArgs([]string{"extra", "--on"})
	require.ErrorContains(t, cmd.Execute(), `x takes no arguments, got ["extra"]`)
}

// TestWorkerLinksNoServer: cmd/worker links neither the NATS server nor
// the command packages that start one (serve, servercmd).
func TestWorkerLinksNoServer(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "github.com/jetflow/jetflow/cmd/worker").CombinedOutput()
	require.NoError(t, err, string(out))
	for _, pkg := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		require.False(t, strings.HasPrefix(pkg, "github.com/nats-io/nats-server"), "cmd/worker links %s", pkg)
		require.NotContains(t, []string{"github.com/jetflow/jetflow/internal/serve", "github.com/jetflow/jetflow/internal/cli/servercmd",
			"github.com/jetflow/jetflow/embedded"}, pkg, "cmd/worker links %s", pkg)
	}
}
