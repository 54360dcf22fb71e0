package run

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/jetstream"
)

// clearNATSEnv empties every variable the connection flags read, so the
// tests do not see the caller's.
func clearNATSEnv(t *testing.T) {
	for _, v := range []string{"JETFLOW_NATS_URL", "NATS_URL", "NATS_CONTEXT", "NATS_CREDS", "NATS_NKEY", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CA", "NATS_CERT", "NATS_KEY"} {
		t.Setenv(v, "")
	}
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
}

func writeNATSContext(t *testing.T, name, body string, selected bool) {
	t.Helper()
	root := os.Getenv("XDG_CONFIG_HOME")
	dir := filepath.Join(root, "nats", "context")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".json"), []byte(body), 0o600))
	if selected {
		require.NoError(t, os.WriteFile(filepath.Join(root, "nats", "context.txt"), []byte(name), 0o600))
	}
}

func resolve(t *testing.T, o ConnOptions, args ...string) (Conn, error) {
	t.Helper()
	var f ConnFlags
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f.Register(fs, o)
	require.NoError(t, fs.Parse(args))
	return f.Resolve("_INBOX_role")
}

// TestConnPrecedence: flags over environment over NATS context over the
// binary's default, as natscli does; a credential method replaces the
// context's.
func TestConnPrecedence(t *testing.T) {
	clearNATSEnv(t)
	writeNATSContext(t, "prod", `{"url":"nats://ctx:4222","nkey":"/ctx/u.nk","ca":"/ctx/ca.pem","inbox_prefix":"_INBOX_ctx"}`, true)
	worker := ConnOptions{DefaultURL: "nats://127.0.0.1:4222", UseSelected: true}

	c, err := resolve(t, worker)
	require.NoError(t, err)
	require.Equal(t, Conn{URL: "nats://ctx:4222", Auth: jetstream.Auth{NKey: "/ctx/u.nk", TLSCA: "/ctx/ca.pem"}, InboxPrefix: "_INBOX_ctx", Context: "prod"}, c, "the selected context")

	c, err = resolve(t, worker, "--no-context")
	require.NoError(t, err)
	require.Equal(t, Conn{URL: "nats://127.0.0.1:4222", InboxPrefix: "_INBOX_role"}, c)

	dispatcher := ConnOptions{}
	c, err = resolve(t, dispatcher)
	require.NoError(t, err)
	require.Equal(t, Conn{InboxPrefix: "_INBOX_role"}, c, "the dispatcher ignores the selected context: no URL, embedded server")
	c, err = resolve(t, dispatcher, "--context", "prod")
	require.NoError(t, err)
	require.Equal(t, "nats://ctx:4222", c.URL, "but uses a named one")

	t.Setenv("NATS_URL", "nats://env:4222")
	t.Setenv("NATS_CREDS", "/env/u.creds")
	c, err = resolve(t, worker, "--tls-ca", "/flag/ca.pem")
	require.NoError(t, err)
	require.Equal(t, "nats://env:4222", c.URL)
	require.Equal(t, jetstream.Auth{Creds: "/env/u.creds", TLSCA: "/flag/ca.pem"}, c.Auth, "env creds replace the context's nkey; the flag's CA its CA")

	t.Setenv("JETFLOW_NATS_URL", "nats://jetflow-env:4222")
	c, err = resolve(t, worker, "--nkey", "/flag/u.nk")
	require.NoError(t, err)
	require.Equal(t, "nats://jetflow-env:4222", c.URL)
	require.Equal(t, "/flag/u.nk", c.Auth.NKey)
	require.Empty(t, c.Auth.Creds, "a flag's method replaces the environment's")

	c, err = resolve(t, worker, "--nats-url", "nats://flag:4222", "--no-context")
	require.NoError(t, err)
	require.Equal(t, "nats://flag:4222", c.URL)

	_, err = resolve(t, worker, "--context", "nope")
	require.ErrorContains(t, err, `unknown context "nope"`)
}

// TestUserWithoutPasswordIsAToken, as in natscli.
func TestUserWithoutPasswordIsAToken(t *testing.T) {
	clearNATSEnv(t)
	c, err := resolve(t, ConnOptions{}, "--user", "t0ken")
	require.NoError(t, err)
	require.Equal(t, jetstream.Auth{Token: "t0ken"}, c.Auth)
	c, err = resolve(t, ConnOptions{}, "--user", "alice", "--password", "pw")
	require.NoError(t, err)
	require.Equal(t, jetstream.Auth{User: "alice", Password: "pw"}, c.Auth)
	_, err = resolve(t, ConnOptions{}, "--creds", "/a", "--nkey", "/b")
	require.ErrorContains(t, err, "more than one way")
}

// TestConnectedLogShowsNoSecrets: the line every binary logs once
// connected names the method and files, never the secrets.
func TestConnectedLogShowsNoSecrets(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := zerolog.New(&buf)
	LogConnected(log, Conn{URL: "nats://alice:s3cr3t@h:4222", Auth: jetstream.Auth{User: "alice", Password: "s3cr3t"}})
	LogConnected(log, Conn{URL: "nats://h:4222", Auth: jetstream.Auth{Token: "s3cr3t"}})
	require.NotContains(t, buf.String(), "s3cr3t")
	require.True(t, strings.Contains(buf.String(), "user alice"), buf.String())
}
