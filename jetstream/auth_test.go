package jetstream

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// TestAuthNeverShowsSecrets: however an Auth is printed, the password
// and token are not in it; the method and file paths are.
func TestAuthNeverShowsSecrets(t *testing.T) {
	t.Parallel()
	for _, a := range []Auth{
		{User: "alice", Password: "s3cr3t-pw"},
		{Token: "s3cr3t-tok"},
		{Creds: "/x/u.creds", TLSCA: "/x/ca.pem"},
	} {
		for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
			out := fmt.Sprintf(format, a)
			require.NotContains(t, out, "s3cr3t", format)
			out = fmt.Sprintf(format, Config{URL: "nats://h:4222", Auth: a})
			require.NotContains(t, out, "s3cr3t", "Config printed with %s", format)
		}
	}
	require.Contains(t, Auth{User: "alice", Password: "pw"}.String(), "user alice")
	require.Contains(t, Auth{Creds: "/x/u.creds"}.String(), "/x/u.creds")
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"nats://alice:s3cr3t@h:4222":            "nats://xxxxx@h:4222",
		"nats://tok3n@h:4222,tls://b:c@h2:4222": "nats://xxxxx@h:4222,tls://xxxxx@h2:4222",
		"nats://127.0.0.1:4222":                 "nats://127.0.0.1:4222",
		"":                                      "",
		"nats://a:b%zz@h:4222":                  "<unparsable URL>",
		"nats://h1:4222, nats://u:p@h2:4222":    "nats://h1:4222,nats://xxxxx@h2:4222",
	} {
		got := RedactURL(in)
		require.Equal(t, want, got, in)
		require.NotContains(t, got, "s3cr3t")
	}
}

func TestAuthValidateAndOver(t *testing.T) {
	t.Parallel()
	require.NoError(t, Auth{}.Validate())
	require.ErrorContains(t, Auth{Creds: "a", NKey: "b"}.Validate(), "creds, nkey")
	require.ErrorContains(t, Auth{Password: "p"}.Validate(), "without a user")
	require.ErrorContains(t, Auth{TLSCert: "c"}.Validate(), "both")

	ctx := Auth{User: "ctxuser", Password: "ctxpw", TLSCA: "/ctx/ca.pem", TLSCert: "/ctx/c.pem", TLSKey: "/ctx/k.pem"}
	// A method from flags replaces the context's method, not just its field.
	got := Auth{Creds: "/flag.creds"}.Over(ctx)
	require.NoError(t, got.Validate())
	require.Equal(t, Auth{Creds: "/flag.creds", TLSCA: "/ctx/ca.pem", TLSCert: "/ctx/c.pem", TLSKey: "/ctx/k.pem"}, got)
	// No method from flags: the context's applies; TLS one by one.
	got = Auth{TLSCA: "/flag/ca.pem"}.Over(ctx)
	require.Equal(t, Auth{User: "ctxuser", Password: "ctxpw", TLSCA: "/flag/ca.pem", TLSCert: "/ctx/c.pem", TLSKey: "/ctx/k.pem"}, got)
}

// TestAuthOptionsCheckFiles: a missing or unreadable file is reported
// before connecting, naming which setting it is.
func TestAuthOptionsCheckFiles(t *testing.T) {
	t.Parallel()
	_, err := Auth{NKey: filepath.Join(t.TempDir(), "missing.nk")}.natsOptions()
	require.ErrorContains(t, err, "nkey seed file")
	bad := filepath.Join(t.TempDir(), "bad.nk")
	require.NoError(t, os.WriteFile(bad, []byte("not a seed\n"), 0o600))
	_, err = Auth{NKey: bad}.natsOptions()
	require.ErrorContains(t, err, "nkey seed file "+bad)
	_, err = Auth{TLSCA: filepath.Join(t.TempDir(), "ca.pem")}.natsOptions()
	require.ErrorContains(t, err, "TLS CA file")
}

// TestSubjectMatches against the NATS rules: '*' is one token, '>' one
// or more at the end.
func TestSubjectMatches(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		pattern, subject string
		want             bool
	}{
		{"$JS.API.>", "$JS.API.STREAM.INFO.X", true},
		{"$JS.API.>", "$JS.API", false},
		{"$JS.API.>", "$JS.APIX.Y", false},
		{"a.*.c", "a.b.c", true},
		{"a.*.c", "a.b.d", false},
		{"a.*.c", "a.b.c.d", false},
		{"a.b", "a.b", true},
		{"a.b", "a.b.c", false},
		{"_INBOX_x.>", "_INBOX_x.abc.*", true},
		{"_INBOX_x.>", "_INBOX_y.abc", false},
		{"jetflow.event.*.result", "jetflow.event.i-1.result", true},
		{"jetflow.event.*.result", "jetflow.event.i-1.cancel", false},
	} {
		require.Equal(t, c.want, subjectMatches(c.pattern, c.subject), "%s ~ %s", c.pattern, c.subject)
	}
}

// FuzzSubjectMatches: a pattern always matches itself with wildcards
// read literally, "a.>" matches every subject under a, and the function
// never panics on any input.
func FuzzSubjectMatches(f *testing.F) {
	f.Add("a.b.c", "a")
	f.Add("$KV.b.k", "x.*")
	f.Fuzz(func(t *testing.T, subject, pattern string) {
		_ = subjectMatches(pattern, subject)
		if !subjectMatches(subject, subject) {
			t.Fatalf("%q does not match itself", subject)
		}
		if first, _, ok := strings.Cut(subject, "."); ok && first != "" && !subjectMatches(first+".>", subject) {
			t.Fatalf("%q does not match %q", first+".>", subject)
		}
	})
}

func TestParseViolation(t *testing.T) {
	t.Parallel()
	pe, ok := parseViolation(fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Publish to "$KV.jetflow_instances.x"`))
	require.True(t, ok)
	require.Equal(t, "$KV.jetflow_instances.x", pe.Subject)
	require.True(t, errors.Is(pe, ErrPermissionDenied))
	pe, ok = parseViolation(fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Subscription to "_INBOX_a.b.*"`))
	require.True(t, ok)
	require.Equal(t, "subscribe to", pe.Op)
	require.Equal(t, "_INBOX_a.b.*", pe.Subject)
	_, ok = parseViolation(errors.New("something else"))
	require.False(t, ok)
}
