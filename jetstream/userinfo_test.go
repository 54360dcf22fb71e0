package jetstream

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseUserInfo(t *testing.T) {
	t.Parallel()
	r, err := parseUserInfo([]byte(`{"data":{"user":"u","account":"A","permissions":{"publish":{"allow":["a.>"],"deny":["a.secret"]}}}}`))
	require.NoError(t, err)
	require.True(t, r.May("a.b"))
	require.False(t, r.May("a.secret"), "deny wins")
	require.False(t, r.May("b"))
	r, err = parseUserInfo([]byte(`{"data":{"user":"u","account":"$G"}}`))
	require.NoError(t, err)
	require.True(t, r.May("anything"), "no permissions: everything")
	_, err = parseUserInfo([]byte(`{"error":{"code":503,"description":"no"}}`))
	require.ErrorIs(t, err, ErrPermissionsUnknown)
	_, err = parseUserInfo([]byte(`not json`))
	require.ErrorIs(t, err, ErrPermissionsUnknown)
}

// FuzzParseUserInfo: the server's answer is parsed without panics.
func FuzzParseUserInfo(f *testing.F) {
	f.Add([]byte(`{"data":{"permissions":{"publish":{"allow":["a"]}}}}`))
	f.Add([]byte(`{"error":{"description":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseUserInfo(b)
		if err == nil {
			_ = r.May("a.b")
		}
	})
}
