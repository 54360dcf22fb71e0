package jetstream_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// doorLimit is the size limit of the door tests: small, so that some
// random values exceed it.
const doorLimit = 16 << 10

// checkDoor is the property of the door: a payload is either accepted,
// and then what is stored decodes — for expressions (DecodeValue) and for
// handlers (DecodeInto) — to a value equal to the payload's, exact
// numbers included, and encodes back to the same value; or it is
// rejected with an error matching ErrMalformed or ErrTooLarge. Which one
// must agree with an oracle that does not share the door's code:
// encoding/json decodes it into an any (valid JSON, numbers within a
// float64's range), UTF-8, nested at most MaxDepth levels (counted on the
// decoded value), at most the limit.
func checkDoor(t *testing.T, payload []byte) {
	t.Helper()
	stored, err := jetstream.CheckPayload(payload, doorLimit)
	trimmed := bytes.Trim(payload, " \t\r\n")
	want := jftest.AcceptablePayload(payload, doorLimit, workflow.MaxDepth)
	if err != nil {
		require.False(t, want, "a valid payload was rejected: %v", err)
		if len(payload) > 1 && payload[0] < 0x80 && !errorIs(err, jetstream.ErrTooLarge) {
			// The decoders hold the same definition (read as JSON: not a
			// value of an earlier version).
			_, derr := jetstream.DecodeValue(payload)
			require.Error(t, derr, "the door rejected what the decoder reads: %v", err)
			require.True(t, errorIs(derr, jetstream.ErrMalformed), "%v", derr)
		}
		if !(errorIs(err, jetstream.ErrMalformed) || errorIs(err, jetstream.ErrTooLarge)) {
			t.Fatalf("rejection without its sentinel: %v", err)
		}
		require.NotEmpty(t, err.Error())
		return
	}
	require.True(t, want, "an invalid payload was accepted: %q", payload)
	if len(trimmed) == 0 {
		payload = []byte("null")
	}
	// What handlers bind: encoding/json's decoding of the payload itself.
	var bound, direct any
	require.NoError(t, jetstream.DecodeInto(stored, &bound))
	require.NoError(t, json.Unmarshal(payload, &direct))
	require.Equal(t, direct, bound)
	// What expressions see, written back: the same value, exactly.
	v, err := jetstream.DecodeValue(stored)
	require.NoError(t, err, "accepted, then undecodable")
	back, err := jetstream.EncodeValue(v)
	require.NoError(t, err, "decoded, then not encodable")
	require.NoError(t, jftest.SameJSON(payload, back), "payload %q, written back as %q", payload, back)
	// Written back once, a value is at its fixed point (1.0 reads as the
	// float 1, written back as 1, which reads as the integer 1: JSON does
	// not tell them apart).
	again, err := jetstream.DecodeValue(back)
	require.NoError(t, err)
	twice, err := jetstream.EncodeValue(again)
	require.NoError(t, err)
	require.Equal(t, string(back), string(twice))
}

func errorIs(err, target error) bool {
	for e := err; e != nil; {
		if e == target {
			return true
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		e = u.Unwrap()
	}
	return false
}

func FuzzPayloadDoor(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range []string{
		`{"orderId":"A-1","amount":12.5,"n":3}`, `[1,2,3]`, `null`, `{"a":`, `{} {}`, `"x"`, `1e400`,
		`5`, ` `, ``, "\xff", `"\ud800"`, `{"a":1,"a":2}`, `-0`, `12345678901234567891`,
		strings.Repeat("[", 101) + strings.Repeat("]", 101),
		strings.Repeat("[", 100) + strings.Repeat("]", 100),
		`["]]]]]"]`, `"\u00e9\ud83d\ude00"`, "\"\u2028\"",
	} {
		f.Add([]byte(s))
	}
	for range 20 {
		f.Add(jftest.RandomJSON(r, r.IntN(8)))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkDoor(t, b) })
}

// TestPayloadDoorProperty runs the door's property over random JSON of
// every depth around the limit, and over the same texts broken.
func TestPayloadDoorProperty(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(7, 11))
	n := 3000
	if testing.Short() {
		n = 500
	}
	accepted, rejected := 0, 0
	for i := range n {
		depth := r.IntN(workflow.MaxDepth + 20)
		b := jftest.RandomJSON(r, depth)
		if i%5 == 0 {
			b = jftest.Mangle(r, b)
		}
		checkDoor(t, b)
		if _, err := jetstream.CheckPayload(b, doorLimit); err == nil {
			accepted++
		} else {
			rejected++
		}
	}
	t.Logf("%d accepted, %d rejected", accepted, rejected)
	require.Positive(t, accepted)
	require.Positive(t, rejected)
}

// TestLegacyMsgpackValuesAreRead: values stored by earlier versions
// (msgpack) read as the JSON they stand for, for expressions and for
// handlers, and a JSON value is never mistaken for one.
func TestLegacyMsgpackValuesAreRead(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		v    any
		json string
	}{
		{"object", map[string]any{"amount": int64(1250), "orderId": "o-1", "ok": true}, `{"amount":1250,"orderId":"o-1","ok":true}`},
		{"small integer", int64(5), `5`},
		{"digit-valued integer", int64('7'), `55`},
		{"negative", int64(-3), `-3`},
		{"big unsigned", uint64(18446744073709551615), `18446744073709551615`},
		{"float", 2.5, `2.5`},
		{"string", "x", `"x"`},
		{"nil", nil, `null`},
		{"list", []any{int64(1), "a", nil}, `[1,"a",null]`},
		{"binary (read as a string, as earlier versions did)", []byte("hi"), `"hi"`},
		{"struct with Go names", struct{ Charged int64 }{1250}, `{"Charged":1250}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := jetstream.EncodeMessage(c.v) // what earlier versions stored
			require.NoError(t, err)
			j, err := jetstream.ValueJSON(b)
			require.NoError(t, err)
			require.NoError(t, jftest.SameJSON([]byte(c.json), j), "%s", j)
			v, err := jetstream.DecodeValue(b)
			require.NoError(t, err)
			want, err := workflow.DecodeJSON([]byte(c.json))
			require.NoError(t, err)
			require.Equal(t, want, v)
		})
	}
	// Every JSON value jetflow stores is read as JSON, single digits too.
	for _, s := range []string{"0", "7", "9", `""`, "[]", "{}", "-1", " 1", "1 "} {
		stored, err := jetstream.CheckPayload([]byte(s), doorLimit)
		require.NoError(t, err, s)
		v, err := jetstream.DecodeValue(stored)
		require.NoError(t, err, s)
		want, err := workflow.DecodeJSON([]byte(s))
		require.NoError(t, err)
		require.Equal(t, want, v, "%q stored as %q", s, stored)
	}
	enc, err := jetstream.EncodeValue(int64(7))
	require.NoError(t, err)
	require.Greater(t, len(enc), 1, "a one-byte value would read as msgpack")
}
