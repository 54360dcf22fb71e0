package workflow_test

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// nested returns a JSON object nested depth levels deep: {"v":{"v":...1}}.
func nested(depth int) string {
	return strings.Repeat(`{"v":`, depth) + "1" + strings.Repeat("}", depth)
}

func TestCheckJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in string
		max      int
		problem  string // "" when accepted
		tooLarge bool
	}{
		{name: "object", in: `{"a":[1,2,{"b":null}]}`},
		{name: "whitespace around", in: " \n\t{}\r\n "},
		{name: "scalar", in: `"x"`},
		{name: "depth 100", in: nested(100)},
		{name: "depth 101", in: nested(101), problem: "nested deeper than 100"},
		{name: "arrays 101", in: strings.Repeat("[", 101) + strings.Repeat("]", 101), problem: "nested deeper than 100"},
		{name: "brackets in strings do not count", in: `["` + strings.Repeat("[{", 200) + `"]`},
		{name: "escaped quote in a string", in: `["\"[[[[",1]`},
		{name: "depth 10001", in: strings.Repeat("[", 10001) + strings.Repeat("]", 10001), problem: "nested deeper than 100"},
		{name: "truncated", in: `{"a":`, problem: "not valid JSON"},
		{name: "two values", in: `{} {}`, problem: "not valid JSON"},
		{name: "empty", in: ``, problem: "not valid JSON"},
		{name: "not UTF-8", in: "\"\xff\"", problem: "not valid UTF-8"},
		{name: "big integer", in: `12345678901234567890123456789012345678901234567890`},
		{name: "largest float", in: `1.7976931348623157e308`},
		{name: "tiny float", in: `1e-400`},
		{name: "beyond float64", in: `{"x":1e400}`, problem: "beyond the range of a 64-bit float"},
		{name: "integer beyond float64", in: "1" + strings.Repeat("0", 309), problem: "beyond the range of a 64-bit float"},
		{name: "size limit", in: `"abcdefgh"`, max: 5, tooLarge: true},
		{name: "size at the limit", in: `"abc"`, max: 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := workflow.CheckJSON([]byte(c.in), c.max)
			switch {
			case c.tooLarge:
				require.ErrorIs(t, err, workflow.ErrTooLarge)
			case c.problem == "":
				require.NoError(t, err)
			default:
				require.ErrorIs(t, err, workflow.ErrMalformed)
				require.ErrorContains(t, err, c.problem)
			}
		})
	}
}

func TestDecodeJSONNumbers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		lit  string
		want any
	}{
		{"0", int64(0)},
		{"-0", int64(0)},
		{"42", int64(42)},
		{"-9223372036854775808", int64(math.MinInt64)},
		{"9223372036854775807", int64(math.MaxInt64)},
		{"9223372036854775808", uint64(1 << 63)},
		{"18446744073709551615", uint64(math.MaxUint64)},
		{"18446744073709551616", json.Number("18446744073709551616")},
		{"-9223372036854775809", json.Number("-9223372036854775809")},
		{"12345678901234567891", uint64(12345678901234567891)},
		{"123456789012345678901", json.Number("123456789012345678901")},
		{"1.5", 1.5},
		{"0.1", 0.1},
		{"1.0", 1.0},
		{"-0.0", 0.0},
		{"1e3", 1000.0},
		{"2.5E-3", 0.0025},
		{"1e300", 1e300},
		{"0.30000000000000004", 0.30000000000000004},
		{"3.141592653589793238462643383279", json.Number("3.141592653589793238462643383279")},
		{"1e-400", json.Number("1e-400")},
		{"9007199254740993.0", json.Number("9007199254740993.0")},
	}
	for _, c := range cases {
		v, err := workflow.DecodeJSON([]byte(c.lit))
		require.NoError(t, err, c.lit)
		require.Equal(t, c.want, v, c.lit)
		// Written back, the number keeps its value exactly.
		b, err := workflow.EncodeJSON(v)
		require.NoError(t, err)
		back, err := workflow.DecodeJSON(b)
		require.NoError(t, err)
		if f, ok := c.want.(float64); ok && f == math.Trunc(f) && math.Abs(f) < 1e21 {
			require.EqualValues(t, int64(f), back, "%s: %s", c.lit, b) // JSON has one kind of number
			continue
		}
		require.Equal(t, c.want, back, "%s: %s", c.lit, b)
	}
}

func TestEventKeyForms(t *testing.T) {
	t.Parallel()
	cases := []struct {
		payload string
		key     string // "" when rejected
		problem string
	}{
		{`"o-1001"`, "o-1001", ""},
		{`"123"`, "123", ""},
		{`123`, "123", ""},
		{`-7`, "-7", ""},
		{`-0`, "0", ""},
		{`12345678901234567890`, "12345678901234567890", ""},
		{`12345678901234567891`, "12345678901234567891", ""},
		{`18446744073709551615`, "18446744073709551615", ""},
		{`123456789012345678901234567890`, "123456789012345678901234567890", ""},
		{`""`, "", "empty string"},
		{`1.5`, "", "fraction or an exponent"},
		{`1.0`, "", "fraction or an exponent"},
		{`1e3`, "", "fraction or an exponent"},
		{`3.141592653589793238462643383279`, "", "fraction or an exponent"},
		{`true`, "", "boolean"},
		{`null`, "", "null"},
		{`{}`, "", "object"},
		{`[1]`, "", "array"},
	}
	for _, c := range cases {
		v, err := workflow.DecodeJSON([]byte(c.payload))
		require.NoError(t, err)
		key, err := workflow.EventKey(v)
		if c.problem != "" {
			require.ErrorContains(t, err, c.problem, c.payload)
			continue
		}
		require.NoError(t, err, c.payload)
		require.Equal(t, c.key, key, c.payload)
	}
}

func TestEncodeJSONRejectsWhatJSONCannotHold(t *testing.T) {
	t.Parallel()
	deep := any(1)
	for range workflow.MaxDepth + 1 {
		deep = []any{deep}
	}
	for name, v := range map[string]any{
		"NaN":      math.NaN(),
		"Inf":      math.Inf(-1),
		"channel":  make(chan int),
		"too deep": deep,
	} {
		_, err := workflow.EncodeJSON(v)
		require.ErrorIs(t, err, workflow.ErrMalformed, name)
	}
	b, err := workflow.EncodeJSON(map[string]any{"html": "<a&b>"})
	require.NoError(t, err)
	require.Equal(t, "{\"html\":\"<a&b>\"}\n", string(b), "readable with nats kv get: no \\u003c")
}

// An expression's result is stored (a step input, the output, bulk
// items), so it must be a value the data bucket takes: the step fails
// with the reason instead.
func TestExpressionResultMustBeStorable(t *testing.T) {
	t.Parallel()
	const src = `
name: store
version: 1
steps:
  - {name: a, kind: task, task: work, input: 'EXPR'}
`
	input, err := workflow.DecodeJSON([]byte(`{"deep":` + nested(workflow.MaxDepth-1) + `,"n":0,"big":123456789012345678901234}`))
	require.NoError(t, err)
	cases := []struct {
		expr, problem string
	}{
		{`{"x": input.deep}`, ""},                          // depth 100: at the limit
		{`{"x": {"y": input.deep}}`, "nested deeper than"}, // 101
		{`{"x": 1 / input.n}`, "cannot be stored as JSON"}, // +Inf
		{`{"x": input.big}`, ""},                           // copied, exactly
	}
	for _, c := range cases {
		t.Run(c.expr, func(t *testing.T) {
			h := setup(t, strings.Replace(src, "EXPR", c.expr, 1), input)
			dec := h.start()
			if c.problem != "" {
				require.Equal(t, workflow.StatusFailed, h.inst.Status)
				require.Equal(t, workflow.StepFailed, h.step("a").Status)
				require.Contains(t, h.inst.Error, c.problem)
				require.Empty(t, dec.Tasks)
				return
			}
			require.Len(t, dec.Writes, 1)
			b, err := workflow.EncodeJSON(dec.Writes[0].Value)
			require.NoError(t, err)
			if c.expr == `{"x": input.big}` {
				require.Equal(t, "{\"x\":123456789012345678901234}\n", string(b))
			}
		})
	}
}
