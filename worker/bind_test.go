package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

type address struct {
	City string `json:"city"`
	Zip  string `json:"zip,omitempty"`
}

type base struct {
	ID      string    `json:"id"`
	Created time.Time `json:"created"`
}

// cents is a json.Marshaler and json.Unmarshaler: "12.34" <-> 1234.
type cents int64

func (c cents) MarshalJSON() ([]byte, error) {
	return json.Marshal(fmt.Sprintf("%d.%02d", c/100, c%100))
}

func (c *cents) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	whole, frac, _ := strings.Cut(s, ".")
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return err
	}
	f, err := strconv.ParseInt(frac, 10, 64)
	if err != nil {
		return err
	}
	*c = cents(w*100 + f)
	return nil
}

func bigInt(s string) *big.Int {
	b, ok := new(big.Int).SetString(s, 10)
	if !ok {
		panic(s)
	}
	return b
}

func strPtr(s string) *string { return &s }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 123_000_000, time.UTC)

// taskWith is a task whose stored input is raw, as the worker gets it.
func taskWith(raw []byte) *Task { return &Task{Instance: "wf-1", Step: "a", Attempt: 1, input: raw} }

// stored is what the data bucket holds for a published JSON payload.
func stored(t *testing.T, payload string) []byte {
	t.Helper()
	b, err := jetstream.CheckPayload([]byte(payload), 1<<20)
	require.NoError(t, err)
	return b
}

// TestBindIsEncodingJSON: Task.Bind gives a handler exactly what
// encoding/json.Unmarshal gives for the input: json tags,
// case-insensitive names, nested, embedded and pointer fields, time.Time,
// Unmarshaler, and large integers kept exact in the types that can hold
// them.
func TestBindIsEncodingJSON(t *testing.T) {
	t.Parallel()
	type tagged struct {
		OrderID string `json:"orderId"`
	}
	type untagged struct{ Amount int64 }
	type readme struct {
		Amount  int64
		OrderID string `json:"orderId"`
	}
	type nested struct {
		Ship address `json:"ship"`
	}
	type embedded struct {
		base
		N int `json:"n"`
	}
	type pointers struct {
		Bill *address `json:"bill"`
		Note *string  `json:"note"`
		Gift *string  `json:"gift"`
	}
	type times struct {
		At time.Time `json:"at"`
	}
	type bigs struct {
		Big   *big.Int    `json:"big"`
		Exact json.Number `json:"exact"`
		Max   uint64      `json:"max"`
		Min   int64       `json:"min"`
	}
	type marshaler struct {
		Money cents `json:"money"`
	}
	type skipped struct {
		Keep string `json:"keep"`
		Drop string `json:"-"`
	}
	cases := []struct {
		name  string
		input string
		dst   func() any // a pointer to a fresh destination
		want  any        // what the destination holds after Bind
	}{
		{"tagged", `{"orderId":"o-1"}`, func() any { return new(tagged) }, &tagged{OrderID: "o-1"}},
		{"untagged, any case", `{"amount":1250}`, func() any { return new(untagged) }, &untagged{Amount: 1250}},
		{"upper case", `{"AMOUNT":7}`, func() any { return new(untagged) }, &untagged{Amount: 7}},
		{"the README's worker", `{"amount":1250,"orderId":"o-1"}`, func() any { return new(readme) }, &readme{Amount: 1250, OrderID: "o-1"}},
		{"nested", `{"ship":{"city":"Oslo","zip":"0150"}}`, func() any { return new(nested) }, &nested{Ship: address{City: "Oslo", Zip: "0150"}}},
		{"embedded", `{"id":"x","created":"2026-01-02T03:04:05.123Z","n":3}`, func() any { return new(embedded) },
			&embedded{base: base{ID: "x", Created: t0}, N: 3}},
		{"pointers", `{"bill":{"city":"Bergen"},"note":null,"gift":"yes"}`, func() any { return new(pointers) },
			&pointers{Bill: &address{City: "Bergen"}, Gift: strPtr("yes")}},
		{"time", `{"at":"2026-01-02T03:04:05.123Z"}`, func() any { return new(times) }, &times{At: t0}},
		{"big integers", `{"big":123456789012345678901234567890,"exact":12345678901234567891,"max":18446744073709551615,"min":-9223372036854775808}`,
			func() any { return new(bigs) },
			&bigs{Big: bigInt("123456789012345678901234567890"), Exact: "12345678901234567891", Max: math.MaxUint64, Min: math.MinInt64}},
		{"unmarshaler", `{"money":"12.34"}`, func() any { return new(marshaler) }, &marshaler{Money: 1234}},
		{"json:\"-\"", `{"keep":"k","Drop":"d","-":"d"}`, func() any { return new(skipped) }, &skipped{Keep: "k"}},
		{"any: numbers are float64", `{"n":1,"list":[true,null,"s"]}`, func() any { return new(any) },
			ptr(any(map[string]any{"n": 1.0, "list": []any{true, nil, "s"}}))},
		{"raw", ` {"a": 1.0} `, func() any { return new(json.RawMessage) }, ptr(json.RawMessage(`{"a": 1.0}`))},
		{"scalar", `5`, func() any { return new(int) }, ptr(5)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := c.dst()
			require.NoError(t, taskWith(stored(t, c.input)).Bind(got))
			require.Equal(t, c.want, got)
			direct := c.dst()
			require.NoError(t, json.Unmarshal([]byte(c.input), direct))
			require.Equal(t, direct, got, "Bind differs from json.Unmarshal")
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestBindErrors: a type mismatch is encoding/json's own error; an input
// that cannot be decoded matches ErrMalformed.
func TestBindErrors(t *testing.T) {
	t.Parallel()
	var in struct{ Amount int64 }
	err := taskWith(stored(t, `{"amount":"lots"}`)).Bind(&in)
	var typeErr *json.UnmarshalTypeError
	require.True(t, errors.As(err, &typeErr), "%v", err)

	err = taskWith([]byte(`{"amount":`)).Bind(&in)
	require.ErrorIs(t, err, jetstream.ErrMalformed)
	err = taskWith([]byte(strings.Repeat("[", workflow.MaxDepth+1) + strings.Repeat("]", workflow.MaxDepth+1))).Bind(&in)
	require.ErrorIs(t, err, jetstream.ErrMalformed)
}

// TestBindReadsInputsOfEarlierVersions: an input stored as msgpack by an
// earlier version binds with JSON semantics too.
func TestBindReadsInputsOfEarlierVersions(t *testing.T) {
	t.Parallel()
	old, err := jetstream.EncodeMessage(map[string]any{"amount": int64(1250), "orderId": "o-1"})
	require.NoError(t, err)
	var in struct {
		Amount  int64
		OrderID string `json:"orderId"`
	}
	require.NoError(t, taskWith(old).Bind(&in))
	require.Equal(t, int64(1250), in.Amount)
	require.Equal(t, "o-1", in.OrderID)
	v, err := taskWith(old).Input()
	require.NoError(t, err)
	require.Equal(t, map[string]any{"amount": int64(1250), "orderId": "o-1"}, v)
}

// TestOutputIsEncodingJSON: a handler's output is stored as
// encoding/json.Marshal writes it (json tags, untagged Go names,
// omitempty, json:"-", embedded fields, time.Time in RFC 3339, Marshaler,
// exact large integers), and expressions read it by those names.
func TestOutputIsEncodingJSON(t *testing.T) {
	t.Parallel()
	type charged struct {
		Charged int64  `json:"charged"`
		OrderID string `json:"orderId"`
	}
	type mixed struct {
		base
		Amount int64
		Bill   *address `json:"bill,omitempty"`
		Ship   *address `json:"ship"`
		Tags   []string `json:"tags,omitempty"`
		Secret string   `json:"-"`
		Money  cents    `json:"money"`
	}
	type bigs struct {
		Big   *big.Int    `json:"big"`
		Exact json.Number `json:"exact"`
		Max   uint64      `json:"max"`
	}
	cases := []struct {
		name string
		out  any
		json string
	}{
		{"tagged", charged{Charged: 1250, OrderID: "o-1"}, `{"charged":1250,"orderId":"o-1"}`},
		{"pointer to a struct", &charged{Charged: 1}, `{"charged":1,"orderId":""}`},
		{"nested by value, pointers to scalars", struct {
			Ship address `json:"ship"`
			Note *string `json:"note"`
			Gift *string `json:"gift,omitempty"`
			Nil  *string `json:"nil"`
		}{Ship: address{City: "Oslo", Zip: "0150"}, Note: strPtr("n")}, `{"ship":{"city":"Oslo","zip":"0150"},"note":"n","nil":null}`},
		{"embedded, untagged, omitempty, skipped, marshaler", mixed{base: base{ID: "x", Created: t0}, Amount: 5, Ship: &address{City: "Oslo"}, Secret: "s", Money: 1234},
			`{"id":"x","created":"2026-01-02T03:04:05.123Z","Amount":5,"ship":{"city":"Oslo"},"money":"12.34"}`},
		{"big integers", bigs{Big: bigInt("123456789012345678901234567890"), Exact: "12345678901234567891", Max: math.MaxUint64},
			`{"big":123456789012345678901234567890,"exact":12345678901234567891,"max":18446744073709551615}`},
		{"time", t0, `"2026-01-02T03:04:05.123Z"`},
		{"map", map[string]any{"b": 2, "a": []int{1}}, `{"a":[1],"b":2}`},
		{"raw JSON", json.RawMessage(`{"n": 1.50, "z": 12345678901234567891}`), `{"n":1.50,"z":12345678901234567891}`},
		{"bytes are base64", []byte("hi"), `"aGk="`},
		{"html is not escaped", map[string]string{"q": "<a&b>"}, `{"q":"<a&b>"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := encodeOutput(c.out)
			require.NoError(t, err)
			require.Equal(t, c.json+"\n", string(b))
			var want, got any
			direct, err := json.Marshal(c.out)
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(direct, &want))
			require.NoError(t, json.Unmarshal(b, &got))
			require.Equal(t, want, got, "differs from json.Marshal")
		})
	}
	// What a following step's expressions see: the JSON names, exact.
	b, err := encodeOutput(charged{Charged: 1250, OrderID: "o-1"})
	require.NoError(t, err)
	v, err := jetstream.DecodeValue(b)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"charged": int64(1250), "orderId": "o-1"}, v)
	b, err = encodeOutput(bigs{Big: bigInt("123456789012345678901234567890"), Exact: "12", Max: math.MaxUint64})
	require.NoError(t, err)
	v, err = jetstream.DecodeValue(b)
	require.NoError(t, err)
	require.Equal(t, map[string]any{"big": json.Number("123456789012345678901234567890"), "exact": int64(12), "max": uint64(math.MaxUint64)}, v)
}

type failingMarshaler struct{}

func (failingMarshaler) MarshalJSON() ([]byte, error) { return nil, errors.New("no") }

// TestOutputJSONCannotHoldIsPermanent: an output that cannot be stored
// fails the attempt permanently, with the reason.
func TestOutputJSONCannotHoldIsPermanent(t *testing.T) {
	t.Parallel()
	deep := any("x")
	for range workflow.MaxDepth + 1 {
		deep = map[string]any{"v": deep}
	}
	for name, out := range map[string]any{
		"NaN":               map[string]any{"x": math.NaN()},
		"Inf":               math.Inf(1),
		"channel":           map[string]any{"c": make(chan int)},
		"failing marshaler": failingMarshaler{},
		"too deep":          deep,
	} {
		_, err := encodeOutput(out)
		require.Error(t, err, name)
		require.True(t, IsPermanent(err), "%s: %v", name, err)
		require.ErrorIs(t, err, jetstream.ErrMalformed, name)
		require.Contains(t, err.Error(), "output cannot be stored", name)
	}
}
