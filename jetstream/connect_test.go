package jetstream

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/embedded"
)

// startConfigServer starts a listening embedded server from a config
// file body.
func startConfigServer(t *testing.T, conf string) *embedded.Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	require.NoError(t, os.WriteFile(path, []byte(conf), 0o600))
	srv, err := embedded.Start(embedded.Config{StoreDir: t.TempDir(), ConfigFile: path, Port: -1})
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	return srv
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestWrongPasswordFailsAtOnce: a refused credential is reported with the
// server's reason as soon as the server refuses it, not after the 10s
// connect deadline, and neither the error nor the log holds the password.
func TestWrongPasswordFailsAtOnce(t *testing.T) {
	t.Parallel()
	srv := startConfigServer(t, `authorization { users: [ { user: alice, password: "s3cr3t-right" } ] }`)
	var logs syncBuffer
	log := zerolog.New(&logs)
	ctx := context.Background()

	for _, cfg := range []Config{
		{URL: srv.ClientURL(), Auth: Auth{User: "alice", Password: "s3cr3t-wrong"}},
		{URL: strings.Replace(srv.ClientURL(), "nats://", "nats://alice:s3cr3t-wrong@", 1)},
		{URL: srv.ClientURL()},
	} {
		cfg.Logger = log
		_, err := Connect(ctx, cfg)
		require.ErrorIs(t, err, ErrConnectRefused)
		require.ErrorContains(t, err, "Authorization Violation")
		require.NotContains(t, err.Error(), "s3cr3t")
	}
	c, err := Connect(ctx, Config{URL: strings.Replace(srv.ClientURL(), "nats://", "nats://alice:s3cr3t-right@", 1), Logger: log})
	require.NoError(t, err)
	c.Close()
	c, err = Connect(ctx, Config{URL: srv.ClientURL(), Auth: Auth{User: "alice", Password: "s3cr3t-right"}, Logger: log})
	require.NoError(t, err)
	c.Close()
	require.NotContains(t, logs.String(), "s3cr3t")
}

// operatorMode is an operator-mode (JWT) server with one account, and
// credentials files for its users.
type operatorMode struct {
	srv     *embedded.Server
	account nkeys.KeyPair
	dir     string
}

func startOperatorMode(t *testing.T) *operatorMode {
	t.Helper()
	op, err := nkeys.CreateOperator()
	require.NoError(t, err)
	opPub, _ := op.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
	require.NoError(t, err)
	accounts := map[string]string{}
	newAccount := func(name string, js bool) nkeys.KeyPair {
		kp, err := nkeys.CreateAccount()
		require.NoError(t, err)
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := ac.Encode(op)
		require.NoError(t, err)
		accounts[pub] = token
		return kp
	}
	sys := newAccount("SYS", false)
	acc := newAccount("JETFLOW", true)
	sysPub, _ := sys.PublicKey()
	var preload strings.Builder
	for pub, token := range accounts {
		fmt.Fprintf(&preload, "  %s: %s\n", pub, token)
	}
	srv := startConfigServer(t, fmt.Sprintf("operator: %s\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n%s}\n", opJWT, sysPub, preload.String()))
	return &operatorMode{srv: srv, account: acc, dir: t.TempDir()}
}

// creds writes a credentials file for a new user of the account whose JWT
// expires at expires (zero: never).
func (o *operatorMode) creds(t *testing.T, name string, expires time.Time) string {
	t.Helper()
	u, err := nkeys.CreateUser()
	require.NoError(t, err)
	pub, _ := u.PublicKey()
	uc := jwt.NewUserClaims(pub)
	uc.Name = name
	if !expires.IsZero() {
		uc.Expires = expires.Unix()
	}
	token, err := uc.Encode(o.account)
	require.NoError(t, err)
	seed, _ := u.Seed()
	b, err := jwt.FormatUserConfig(token, seed)
	require.NoError(t, err)
	path := filepath.Join(o.dir, name+".creds")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	return path
}

// TestCredsFile: a credentials file (user JWT and seed, as nsc and
// Synadia Cloud issue them) connects to an operator-mode account and
// provisions; an expired one is refused at once with the server's reason.
func TestCredsFile(t *testing.T) {
	t.Parallel()
	o := startOperatorMode(t)
	ctx := context.Background()
	c, err := Connect(ctx, Config{URL: o.srv.ClientURL(), Auth: Auth{Creds: o.creds(t, "valid", time.Time{})}})
	require.NoError(t, err)
	require.NoError(t, c.Provision(ctx))
	c.Close()

	_, err = Connect(ctx, Config{URL: o.srv.ClientURL(), Auth: Auth{Creds: o.creds(t, "expired", time.Now().Add(-time.Hour))}})
	require.ErrorIs(t, err, ErrConnectRefused)
	require.ErrorContains(t, err, "Authorization Violation")
}
