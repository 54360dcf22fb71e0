package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/security"
)

// runCLI runs the CLI with args and returns stdout and stderr.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestCLIHelpShowsNoSecrets: with every secret in the environment, no
// help text shows one.
func TestCLIHelpShowsNoSecrets(t *testing.T) {
	t.Setenv("NATS_PASSWORD", "s3cr3t-pw")
	t.Setenv("NATS_TOKEN", "s3cr3t-tok")
	t.Setenv("NATS_USER", "s3cr3t-user")
	t.Setenv("JETFLOW_NATS_URL", "nats://u:s3cr3t-url@h:4222")
	for _, args := range [][]string{{"--help"}, {"instances", "--help"}, {"provision", "--help"}, {"publish", "--help"}} {
		out, errOut, err := runCLI(t, args...)
		require.NoError(t, err)
		require.Contains(t, out+errOut, "--password")
		require.NotContains(t, out+errOut, "s3cr3t", args)
	}
}

// TestSecurityPermissionsCommand prints one role's block in each format.
func TestSecurityPermissionsCommand(t *testing.T) {
	out, _, err := runCLI(t, "security", "permissions", "--role", "worker", "--task-types", "resize,thumb")
	require.NoError(t, err)
	require.Contains(t, out, `"$JS.API.CONSUMER.MSG.NEXT.JETFLOW_TASKS.worker_resize"`)
	require.Contains(t, out, `"$JS.ACK.JETFLOW_TASKS.worker_thumb.>"`)
	require.NotContains(t, out, "JETFLOW_TASKS.*", "limited to its task types")
	require.Contains(t, out, "_INBOX_jetflow_worker")

	out, _, err = runCLI(t, "security", "permissions", "--role", "dispatcher", "--format", "nsc", "--account", "ACME")
	require.NoError(t, err)
	require.Contains(t, out, "nsc edit user --account 'ACME' --name 'jetflow-dispatcher'")
	require.Contains(t, out, "--allow-pub '$KV.jetflow_instances.>'")
	require.Contains(t, out, "--allow-sub 'jetflow.stats'")

	_, _, err = runCLI(t, "security", "permissions", "--role", "producer")
	require.ErrorIs(t, err, security.ErrNoTriggerSubjects)
	out, _, err = runCLI(t, "security", "permissions", "--role", "producer", "--definitions", "../../examples", "--format", "json")
	require.NoError(t, err)
	var p security.Permissions
	require.NoError(t, json.Unmarshal([]byte(out), &p))
	require.Equal(t, []string{"orders.created"}, p.Publish)

	_, _, err = runCLI(t, "security", "permissions", "--role", "root")
	require.ErrorContains(t, err, `unknown role "root"`)
	_, _, err = runCLI(t, "security", "permissions", "--role", "producer", "--trigger-subjects", "jetflow.task.x")
	require.ErrorContains(t, err, "reserved")
}

// TestSecurityInitCommand writes the files once and refuses to replace
// them without --force.
func TestSecurityInitCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sec")
	out, _, err := runCLI(t, "security", "init", "--dir", dir, "--definitions", "../../examples", "--tls")
	require.NoError(t, err)
	for _, f := range []string{security.ServerConfigFile, security.SeedFile(security.Worker), security.CAFile, security.CertFile(security.Producer)} {
		require.FileExists(t, filepath.Join(dir, f))
		require.Contains(t, out, filepath.Join(dir, f))
	}
	st, err := os.Stat(filepath.Join(dir, security.SeedFile(security.Admin)))
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "seeds are private")
	conf, err := os.ReadFile(filepath.Join(dir, security.ServerConfigFile))
	require.NoError(t, err)
	require.True(t, strings.Contains(string(conf), "verify: true"))
	_, _, err = runCLI(t, "security", "init", "--dir", dir)
	require.ErrorContains(t, err, "--force")
	_, _, err = runCLI(t, "security", "init", "--dir", dir, "--force")
	require.NoError(t, err)
}
