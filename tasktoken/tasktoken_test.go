package tasktoken_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/tasktoken"
)

func newSet(t *testing.T) tasktoken.KeySet {
	t.Helper()
	k, err := tasktoken.NewKey()
	require.NoError(t, err)
	return tasktoken.KeySet{Keys: []tasktoken.Key{k}}
}

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func TestTokenIsBoundToInstanceStepAndAttempt(t *testing.T) {
	t.Parallel()
	s := newSet(t)
	tok := s.Sign("wf-1", "check", 2, t0)
	require.NoError(t, s.Verify("wf-1", "check", 2, tok, t0))
	for name, c := range map[string]struct {
		instance, step string
		attempt        int
		token          string
	}{
		"other instance":   {"wf-2", "check", 2, tok},
		"other step":       {"wf-1", "charge", 2, tok},
		"other attempt":    {"wf-1", "check", 3, tok},
		"missing":          {"wf-1", "check", 2, ""},
		"malformed":        {"wf-1", "check", 2, "abc"},
		"truncated":        {"wf-1", "check", 2, tok[:len(tok)-2]},
		"other key":        {"wf-1", "check", 2, newSet(t).Sign("wf-1", "check", 2, t0)},
		"boundary shifted": {"wf-1c", "heck", 2, tok},
	} {
		t.Run(name, func(t *testing.T) {
			err := s.Verify(c.instance, c.step, c.attempt, c.token, t0)
			require.ErrorIs(t, err, tasktoken.ErrForged)
		})
	}
}

// TestRotation: after Rotate the new key signs from the lead on; the old
// key's tokens are accepted until lead+grace and refused from then on.
func TestRotation(t *testing.T) {
	t.Parallel()
	old := newSet(t)
	oldTok := old.Sign("wf-1", "s", 1, t0)
	rotated, err := tasktoken.Rotate(old, t0, time.Minute, time.Hour)
	require.NoError(t, err)
	require.Len(t, rotated.Keys, 2)

	require.Equal(t, oldTok, rotated.Sign("wf-1", "s", 1, t0.Add(30*time.Second)), "within the lead the old key still signs")
	newTok := rotated.Sign("wf-1", "s", 1, t0.Add(time.Minute))
	require.NotEqual(t, oldTok, newTok, "after the lead the new key signs")
	require.NoError(t, rotated.Verify("wf-1", "s", 1, newTok, t0), "the new key is accepted at once")

	require.NoError(t, rotated.Verify("wf-1", "s", 1, oldTok, t0.Add(time.Minute+time.Hour-time.Second)), "old key within the grace")
	err = rotated.Verify("wf-1", "s", 1, oldTok, t0.Add(time.Minute+time.Hour))
	require.ErrorIs(t, err, tasktoken.ErrForged, "old key after the grace")
	require.ErrorContains(t, err, "retired")

	// A second rotation drops keys already retired.
	again, err := tasktoken.Rotate(rotated, t0.Add(2*time.Hour), 0, time.Hour)
	require.NoError(t, err)
	require.Len(t, again.Keys, 2)
}

func TestKeyFileRoundTrip(t *testing.T) {
	t.Parallel()
	s, err := tasktoken.Rotate(newSet(t), t0, time.Minute, time.Hour)
	require.NoError(t, err)
	back, err := tasktoken.Parse(s.Marshal())
	require.NoError(t, err)
	require.Equal(t, len(s.Keys), len(back.Keys))
	for i := range s.Keys {
		require.Equal(t, s.Keys[i].Secret, back.Keys[i].Secret)
		require.True(t, s.Keys[i].NotBefore.Equal(back.Keys[i].NotBefore))
		require.True(t, s.Keys[i].NotAfter.Equal(back.Keys[i].NotAfter))
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	good := strings.TrimSpace(string(newSet(t).Marshal()))
	for name, text := range map[string]string{
		"empty":         "",
		"only comments": "# nothing\n",
		"short secret":  "key AAAA\n",
		"bad base64":    "key !!!!\n",
		"unknown word":  good + " color blue\n",
		"odd fields":    good + " not-after\n",
		"bad time":      good + " not-after tomorrow\n",
		"repeated":      good + " not-after 2026-01-01T00:00:00Z not-after 2026-01-02T00:00:00Z\n",
		"all retire":    good + " not-after 2026-01-01T00:00:00Z\n",
		"twice":         good + "\n" + good + "\n",
		"not a key":     "secret abc\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := tasktoken.Parse([]byte(text))
			require.ErrorIs(t, err, tasktoken.ErrKeyFile)
		})
	}
}

// TestKeyringReloads: a Keyring reads its file again when it changed, at
// most every ReloadInterval on the clock it is given; a broken file keeps
// the keys in use and is reported.
func TestKeyringReloads(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keys")
	first := newSet(t)
	require.NoError(t, os.WriteFile(path, first.Marshal(), 0o600))
	k, err := tasktoken.Load(path)
	require.NoError(t, err)
	var reloads []error
	k.OnReload = func(err error) { reloads = append(reloads, err) }
	tok := k.Sign("i", "s", 1, t0)
	require.NoError(t, first.Verify("i", "s", 1, tok, t0))

	second, err := tasktoken.Rotate(first, t0, 0, time.Hour)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, append(second.Marshal(), []byte("# changed size\n")...), 0o600))
	require.Equal(t, tok, k.Sign("i", "s", 1, t0.Add(time.Second)), "not looked at within the interval")
	now := t0.Add(tasktoken.ReloadInterval + time.Second)
	newTok := k.Sign("i", "s", 1, now)
	require.NotEqual(t, tok, newTok)
	require.NoError(t, second.Verify("i", "s", 1, newTok, now))
	require.Equal(t, []error{nil}, reloads)

	require.NoError(t, os.WriteFile(path, []byte("garbage that is longer than before, so the size differs for sure............................................................................................................................................................................................................................"), 0o600))
	later := now.Add(2 * tasktoken.ReloadInterval)
	require.Equal(t, newTok, k.Sign("i", "s", 1, later), "a broken file keeps the keys in use")
	require.Len(t, reloads, 2)
	require.True(t, errors.Is(reloads[1], tasktoken.ErrKeyFile))
}

func FuzzParse(f *testing.F) {
	k := tasktoken.Key{Secret: []byte(strings.Repeat("k", 32))}
	f.Add(tasktoken.KeySet{Keys: []tasktoken.Key{k}}.Marshal())
	f.Add([]byte("key a not-before 2026-01-01T00:00:00Z\nkey b"))
	f.Add([]byte("#\n\n  key   x  not-after 2026-01-01T00:00:00+02:00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := tasktoken.Parse(b)
		if err != nil {
			require.ErrorIs(t, err, tasktoken.ErrKeyFile)
			return
		}
		back, err := tasktoken.Parse(s.Marshal())
		require.NoError(t, err, "what Parse accepts, Marshal writes back readably")
		require.Equal(t, len(s.Keys), len(back.Keys))
		tok := s.Sign("i", "s", 1, t0)
		require.NoError(t, back.Verify("i", "s", 1, tok, time.Time{}))
	})
}

func FuzzVerify(f *testing.F) {
	s := tasktoken.KeySet{Keys: []tasktoken.Key{{Secret: []byte(strings.Repeat("k", 32))}}}
	f.Add("i", "s", 1, s.Sign("i", "s", 1, t0))
	f.Add("i", "s", 1, "")
	f.Add("i", "s", 1, "0000.....")
	f.Fuzz(func(t *testing.T, instance, step string, attempt int, token string) {
		err := s.Verify(instance, step, attempt, token, t0)
		if err == nil {
			require.Equal(t, s.Sign(instance, step, attempt, t0), token)
		} else {
			require.ErrorIs(t, err, tasktoken.ErrForged)
		}
	})
}

func benchRing(b *testing.B) *tasktoken.Keyring {
	r, err := tasktoken.Static(tasktoken.KeySet{Keys: []tasktoken.Key{{Secret: []byte(strings.Repeat("k", 32))}}})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func BenchmarkSign(b *testing.B) {
	s := benchRing(b)
	for i := 0; i < b.N; i++ {
		_ = s.Sign("order-0123456789abcdef", "charge", 1, t0)
	}
}

func BenchmarkVerify(b *testing.B) {
	s := benchRing(b)
	tok := s.Sign("order-0123456789abcdef", "charge", 1, t0)
	for i := 0; i < b.N; i++ {
		if err := s.Verify("order-0123456789abcdef", "charge", 1, tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}
