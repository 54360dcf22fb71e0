package embedded

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/require"
)

// TestOpenServerBeyondLoopbackIsRefused: an embedded server that would
// let anyone in on a non-loopback address does not start (nothing
// listens: the check comes first), unless Insecure.
func TestOpenServerBeyondLoopbackIsRefused(t *testing.T) {
	t.Parallel()
	_, err := Start(Config{StoreDir: t.TempDir(), Host: "0.0.0.0", Port: -1})
	require.ErrorIs(t, err, ErrInsecureListen)
	require.ErrorContains(t, err, "--insecure")
	_, err = Start(Config{StoreDir: t.TempDir(), Host: "192.0.2.1", Port: -1})
	require.ErrorIs(t, err, ErrInsecureListen)
}

// TestCheckExposure: which listeners count as exposed and which
// configurations as authenticated.
func TestCheckExposure(t *testing.T) {
	t.Parallel()
	conf := func(body string) *server.Options {
		path := filepath.Join(t.TempDir(), "nats.conf")
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
		o, err := fileOptions(Config{ConfigFile: path}, &server.Options{Host: "127.0.0.1", Port: 4222})
		require.NoError(t, err)
		return o
	}
	for name, c := range map[string]struct {
		opts     *server.Options
		insecure bool
		refused  bool
	}{
		"loopback v4":             {opts: &server.Options{Host: "127.0.0.1"}},
		"loopback v6":             {opts: &server.Options{Host: "::1"}},
		"localhost":               {opts: &server.Options{Host: "localhost"}},
		"in-process only":         {opts: &server.Options{Host: "0.0.0.0", DontListen: true}},
		"all interfaces":          {opts: &server.Options{Host: "0.0.0.0"}, refused: true},
		"all interfaces insecure": {opts: &server.Options{Host: "0.0.0.0"}, insecure: true},
		"a host name":             {opts: &server.Options{Host: "nats.internal"}, refused: true},
		"users":                   {opts: conf("listen: 0.0.0.0:4222\nauthorization { users: [ {user: a, password: b} ] }")},
		"nkeys in an account":     {opts: conf("listen: 0.0.0.0:4222\naccounts { A { users: [ {nkey: UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4} ] } }")},
		"token":                   {opts: conf("listen: 0.0.0.0:4222\nauthorization { token: s3cr3t }")},
		"no_auth_user":            {opts: conf("listen: 0.0.0.0:4222\naccounts { A { users: [ {user: a, password: b} ] } }\nno_auth_user: a"), refused: true},
		"file without listen":     {opts: conf("authorization { token: s3cr3t }")},
		"file, open, no listen":   {opts: conf("max_payload: 2MB")},
	} {
		err := checkExposure(c.opts, c.insecure)
		if c.refused {
			require.ErrorIs(t, err, ErrInsecureListen, name)
		} else {
			require.NoError(t, err, name)
		}
	}
}
