package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/security"
	"github.com/jetflow/jetflow/tasktoken"
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

// TestSecurityTokenKeyCommand writes a private key file, refuses to
// overwrite it, and rotates it: the new file holds the old key, retired
// after lead + grace, and a new one; no secret is printed.
func TestSecurityTokenKeyCommand(t *testing.T) {
	file := filepath.Join(t.TempDir(), "task-token.keys")
	out, _, err := runCLI(t, "security", "token-key", "--file", file)
	require.NoError(t, err)
	st, err := os.Stat(file)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm(), "the key file is private")
	first, err := tasktoken.Load(file)
	require.NoError(t, err)
	require.Len(t, first.Keys().Keys, 1)
	_, _, err = runCLI(t, "security", "token-key", "--file", file)
	require.ErrorContains(t, err, "--rotate")

	out2, _, err := runCLI(t, "security", "token-key", "--file", file, "--rotate", "--lead", "1m", "--grace", "2h")
	require.NoError(t, err)
	rotated, err := tasktoken.Load(file)
	require.NoError(t, err)
	keys := rotated.Keys().Keys
	require.Len(t, keys, 2)
	old := first.Keys().Keys[0]
	require.Equal(t, old.Secret, keys[0].Secret)
	require.Equal(t, 2*time.Hour, keys[0].NotAfter.Sub(keys[1].NotBefore), "the old key is accepted for the grace after the new one signs")
	for _, k := range keys {
		require.NotContains(t, out+out2, base64.RawURLEncoding.EncodeToString(k.Secret))
		require.Contains(t, out2, k.ID())
	}
}

// TestSecurityInitServerDir: --server-dir sets the paths the server
// config names.
func TestSecurityInitServerDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sec")
	_, _, err := runCLI(t, "security", "init", "--dir", dir, "--trigger-subjects", "a.b", "--tls", "--server-dir", "/etc/nats/secrets")
	require.NoError(t, err)
	conf, err := os.ReadFile(filepath.Join(dir, security.ServerConfigFile))
	require.NoError(t, err)
	require.Contains(t, string(conf), `cert_file: "/etc/nats/secrets/server.pem"`)
	require.NotContains(t, string(conf), dir)
}
