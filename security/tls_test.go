package security_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/security"
)

// loadCA reads the CA Init wrote.
func loadCA(t *testing.T, dir string) *security.CA {
	t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(dir, security.CAFile))
	require.NoError(t, err)
	keyPEM, err := os.ReadFile(filepath.Join(dir, security.CAKeyFile))
	require.NoError(t, err)
	cb, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(cb.Bytes)
	require.NoError(t, err)
	kb, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	require.NoError(t, err)
	return &security.CA{Cert: cert, Key: key.(*ecdsa.PrivateKey), CertPEM: certPEM, KeyPEM: keyPEM}
}

func writeCert(t *testing.T, c *security.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	require.NoError(t, os.WriteFile(certFile, c.CertPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, c.KeyPEM, 0o600))
	return certFile, keyFile
}

// TestMutualTLS: with `jetflow security init --tls`, a client connects
// only with a certificate the generated CA signed and still valid, and
// only if it trusts that CA for the server; each refusal comes at once
// with the reason.
func TestMutualTLS(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := startSecured(t, securedOptions{scope: security.Scope{TriggerSubjects: []string{"orders.created"}}, tls: true, listen: true})
	require.True(t, strings.HasPrefix(s.url, "tls://"))

	admin, _ := s.connect(security.Admin, jetstream.Config{})
	require.NoError(t, admin.Provision(ctx))
	op, _ := s.connect(security.Operator, jetstream.Config{})
	require.NoError(t, op.Bind(ctx), "a role with its certificate connects and works")

	connect := func(a jetstream.Auth, url string) error {
		c, err := jetstream.Connect(ctx, jetstream.Config{URL: url, Auth: a, InboxPrefix: security.Operator.InboxPrefix()})
		if err == nil {
			c.Close()
		}
		return err
	}
	good := s.auth(security.Operator)

	noCert := good
	noCert.TLSCert, noCert.TLSKey = "", ""
	err := connect(noCert, s.url)
	require.ErrorIs(t, err, jetstream.ErrConnectRefused)
	// The server's alert, or, when the connection closed before the
	// client read it, the hint.
	require.Regexp(t, "certificate required|client certificate", err.Error())

	other, err := security.NewCA("another CA", time.Now(), time.Hour)
	require.NoError(t, err)
	foreign, err := other.ClientCert("stranger", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	wrongCA := good
	wrongCA.TLSCert, wrongCA.TLSKey = writeCert(t, foreign)
	require.ErrorIs(t, connect(wrongCA, s.url), jetstream.ErrConnectRefused)

	ca := loadCA(t, s.res.Dir)
	old, err := ca.ClientCert("jetflow operator", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	expired := good
	expired.TLSCert, expired.TLSKey = writeCert(t, old)
	require.ErrorIs(t, connect(expired, s.url), jetstream.ErrConnectRefused)

	fresh, err := ca.ClientCert("jetflow operator", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	require.NoError(t, err)
	renewed := good
	renewed.TLSCert, renewed.TLSKey = writeCert(t, fresh)
	require.NoError(t, connect(renewed, s.url), "a new certificate from the same CA works")

	untrusting := good
	untrusting.TLSCA = ""
	err = connect(untrusting, s.url)
	require.ErrorIs(t, err, jetstream.ErrConnectRefused)
	require.ErrorContains(t, err, "x509")

	err = connect(jetstream.Auth{NKey: good.NKey}, strings.Replace(s.url, "tls://", "nats://", 1))
	require.ErrorIs(t, err, jetstream.ErrConnectRefused, "a client without any TLS settings is refused too")
}
