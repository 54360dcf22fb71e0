package jetstream

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeContext writes a natscli context file under a fresh
// XDG_CONFIG_HOME and returns that root.
func writeContext(t *testing.T, root, name, body string) {
	t.Helper()
	dir := filepath.Join(root, "nats", "context")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".json"), []byte(body), 0o600))
}

// TestLoadNATSContext reads the format natscli writes (nats-io/jsm.go
// natscontext): paths with ~ and $VARS expanded, secrets as literals or
// env:// references, the selected context from context.txt.
func TestLoadNATSContext(t *testing.T) {
	root := t.TempDir()
	home := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", root)
	t.Setenv("HOME", home)
	t.Setenv("JETFLOW_TEST_CERTS", "/certs")
	t.Setenv("JETFLOW_TEST_PW", "from-env")
	writeContext(t, root, "prod", `{
  "description": "production",
  "url": "tls://nats.example:4222",
  "user": "alice",
  "password": "env://JETFLOW_TEST_PW",
  "creds": "",
  "nkey": "",
  "cert": "$JETFLOW_TEST_CERTS/client.pem",
  "key": "file://~/client-key.pem",
  "ca": "~/ca.pem",
  "inbox_prefix": "_INBOX_prod",
  "jetstream_domain": "",
  "color_scheme": "dark"
}`)
	c, err := LoadNATSContext("prod")
	require.NoError(t, err)
	require.Equal(t, "tls://nats.example:4222", c.URL)
	require.Equal(t, "_INBOX_prod", c.InboxPrefix)
	require.Equal(t, Auth{User: "alice", Password: "from-env", TLSCert: "/certs/client.pem", TLSKey: home + "/client-key.pem", TLSCA: home + "/ca.pem"}, c.Auth)

	require.Empty(t, SelectedNATSContext())
	require.NoError(t, os.WriteFile(filepath.Join(root, "nats", "context.txt"), []byte("prod\n"), 0o600))
	require.Equal(t, "prod", SelectedNATSContext())

	writeContext(t, root, "creds", `{"url":"nats://a:4222","creds":"/x/user.creds"}`)
	c, err = LoadNATSContext("creds")
	require.NoError(t, err)
	require.Equal(t, Auth{Creds: "/x/user.creds"}, c.Auth)
}

// TestLoadNATSContextRefuses what jetflow cannot honour, rather than
// connecting with half the settings.
func TestLoadNATSContextRefuses(t *testing.T) {
	root := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", root)
	for name, body := range map[string]string{
		"domain":  `{"url":"nats://a","jetstream_domain":"hub"}`,
		"nsc":     `{"nsc":"nsc://op/acc/user"}`,
		"op":      `{"creds":"op://vault/item/creds"}`,
		"socks":   `{"socks_proxy":"127.0.0.1:1080"}`,
		"userjwt": `{"user_jwt":"eyJ..."}`,
		"broken":  `{"url":`,
	} {
		writeContext(t, root, name, body)
		_, err := LoadNATSContext(name)
		require.ErrorIs(t, err, ErrNATSContext, name)
	}
	_, err := LoadNATSContext("missing")
	require.ErrorContains(t, err, "unknown context")
	for _, bad := range []string{"", "../x", "a/b"} {
		_, err := LoadNATSContext(bad)
		require.ErrorContains(t, err, "invalid context name", bad)
	}
	t.Setenv("JETFLOW_TEST_UNSET", "")
	os.Unsetenv("JETFLOW_TEST_UNSET")
	writeContext(t, root, "envpw", `{"user":"a","password":"env://JETFLOW_TEST_UNSET"}`)
	_, err = LoadNATSContext("envpw")
	require.ErrorContains(t, err, "JETFLOW_TEST_UNSET is not set")
}
