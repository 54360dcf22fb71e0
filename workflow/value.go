package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// User values — trigger payloads, explicit start inputs, signal payloads,
// task inputs and outputs, expression results — are JSON, and this file
// is the one definition of which JSON jetflow accepts. The same checks
// run where a value comes in (the trigger and start door, Signal, a
// worker's output, an expression's result) and where a stored value is
// decoded, so a value accepted once is always decodable later.

// MaxDepth is the deepest nesting of arrays and objects a user value may
// have. A scalar has depth 0; `[]`, `{}` and `{"a":1}` have depth 1;
// `{"a":[1]}` has depth 2.
const MaxDepth = 100

// ErrMalformed: a value or message is not what jetflow accepts or cannot
// be decoded (not JSON, not UTF-8, nested deeper than MaxDepth, a number
// JSON cannot hold, an undecodable stored record). Whatever needs it
// cannot succeed by retrying.
var ErrMalformed = errors.New("malformed value")

// ErrTooLarge: a value exceeds the configured size limit.
var ErrTooLarge = errors.New("value too large")

// CheckJSON is the door every user value passes: b must be one JSON value
// (surrounding whitespace allowed), valid UTF-8, nested at most MaxDepth
// levels, with every number within the range of a float64 (|x| up to
// about 1.8e308: encoding/json cannot decode a larger one into an any or
// a float64; integers of up to 308 digits stay exact), and at most
// maxBytes long (no size limit when maxBytes <= 0). Errors match
// ErrMalformed or ErrTooLarge and say what is wrong.
func CheckJSON(b []byte, maxBytes int) error {
	if maxBytes > 0 && len(b) > maxBytes {
		return fmt.Errorf("%w: %d bytes; the limit is %d", ErrTooLarge, len(b), maxBytes)
	}
	tooDeep, outOfRange := scan(b, 0)
	if tooDeep != nil {
		return tooDeep
	}
	if !utf8.Valid(b) {
		return fmt.Errorf("%w: not valid UTF-8 (JSON text must be UTF-8)", ErrMalformed)
	}
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v) // for its description of the problem
		return fmt.Errorf("%w: not valid JSON: %v", ErrMalformed, err)
	}
	return outOfRange
}

// scan goes once over b, outside strings, and reports arrays and objects
// that, inside outer levels of nesting, go deeper than MaxDepth (it
// stops there), and the first number beyond the range of a float64.
// Syntax is checked apart; on invalid JSON its findings mean nothing.
func scan(b []byte, outer int) (tooDeep, outOfRange error) {
	depth := outer
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			if depth > MaxDepth {
				return fmt.Errorf("%w: nested deeper than %d levels of arrays and objects", ErrMalformed, MaxDepth), nil
			}
		case ']', '}':
			depth--
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			j := i + 1
			for j < len(b) && isNumberByte(b[j]) {
				j++
			}
			if outOfRange == nil {
				outOfRange = checkRange(b[i:j])
			}
			i = j - 1
		}
	}
	return nil, outOfRange
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'
}

// checkRange rejects a number literal beyond the range of a float64.
func checkRange(lit []byte) error {
	if len(lit) <= 15 && !bytes.ContainsAny(lit, "eE") {
		return nil // at most 15 digits: far inside
	}
	f, err := strconv.ParseFloat(string(lit), 64)
	if err == nil || !math.IsInf(f, 0) {
		return nil
	}
	s := string(lit)
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return fmt.Errorf("%w: the number %s is beyond the range of a 64-bit float (about ±1.8e308), which encoding/json cannot decode", ErrMalformed, s)
}

// DecodeJSON checks b (CheckJSON without a size limit) and decodes it to
// plain Go values: map[string]any, []any, string, bool, nil, and numbers
// as follows, so that expressions compute on numbers and nothing is
// rounded on the way through:
//
//   - an integer literal (no fraction, no exponent) is an int64 when it
//     fits, else a uint64 when it fits, else a json.Number holding its
//     digits, which is written back unchanged;
//   - any other number is a float64 when the float64 reads back as the
//     same decimal value (0.1, 2.5, 1e300), else a json.Number with its
//     literal (more digits than a float64 holds, or below its smallest
//     value: 1e-400), which is written back unchanged.
func DecodeJSON(b []byte) (any, error) {
	// CheckJSON, with the decoder as the syntax check.
	tooDeep, outOfRange := scan(b, 0)
	if tooDeep != nil {
		return nil, tooDeep
	}
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: not valid UTF-8 (JSON text must be UTF-8)", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = errors.New("invalid character after top-level value")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %v", ErrMalformed, err)
	}
	if outOfRange != nil {
		return nil, outOfRange
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		return exactNumber(x)
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	}
	return v
}

// exactNumber converts a JSON number literal as DecodeJSON does.
func exactNumber(n json.Number) any {
	lit := string(n)
	if isIntLiteral(lit) {
		if i, err := strconv.ParseInt(lit, 10, 64); err == nil {
			return i
		}
		if u, err := strconv.ParseUint(lit, 10, 64); err == nil {
			return u
		}
		return n
	}
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(f, 0) {
		return n
	}
	if !sameDecimal(lit, strconv.FormatFloat(f, 'e', -1, 64)) {
		return n
	}
	if f == 0 {
		return float64(0) // -0.0 is 0, as the integer -0 is
	}
	return f
}

// isIntLiteral reports a JSON number without fraction or exponent.
func isIntLiteral(lit string) bool {
	return lit != "" && !strings.ContainsAny(lit, ".eE")
}

// sameDecimal reports whether two decimal literals (JSON number syntax,
// or Go's 'e' format) have the same value, comparing their significant
// digits and exponents as text: no arithmetic, so a literal with a
// million digits or an exponent of a billion costs its length, no more.
func sameDecimal(a, b string) bool {
	na, da, ea, oka := decimal(a)
	nb, db, eb, okb := decimal(b)
	if !oka || !okb {
		return false
	}
	if da == "" || db == "" {
		return da == db // zero equals zero, whatever its sign
	}
	return na == nb && da == db && ea == eb
}

// decimal splits a number literal into its sign, its significant digits
// (no leading or trailing zeros; "" for zero) and the power of ten of the
// last of them.
func decimal(s string) (neg bool, digits string, exp int, ok bool) {
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	if hasExp {
		e, err := strconv.Atoi(strings.TrimPrefix(expPart, "+"))
		if err != nil || e > 1<<30 || e < -(1<<30) {
			return false, "", 0, false
		}
		exp = e
	}
	exp -= len(frac)
	digits = strings.TrimLeft(intPart+frac, "0")
	trimmed := strings.TrimRight(digits, "0")
	exp += len(digits) - len(trimmed)
	return neg, trimmed, exp, true
}

// EncodeJSON encodes a value as encoding/json does (json tags, omitempty,
// Marshaler, time.Time as RFC 3339, []byte as base64), without escaping
// <, > and &, followed by a newline, and checks the result with
// CheckJSON (no size limit). Errors match ErrMalformed: NaN and ±Inf,
// channels, functions, maps with keys JSON cannot have, and values nested
// deeper than MaxDepth.
func EncodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("%w: cannot be encoded as JSON: %v", ErrMalformed, err)
	}
	b := buf.Bytes()
	// encoding/json writes valid JSON (it checks what a Marshaler
	// returns), but not within the limits: check those.
	tooDeep, outOfRange := scan(b, 0)
	switch {
	case tooDeep != nil:
		return nil, tooDeep
	case outOfRange != nil: // a json.Number or a Marshaler's 1e400
		return nil, outOfRange
	case !utf8.Valid(b): // a Marshaler's
		return nil, fmt.Errorf("%w: not valid UTF-8 (JSON text must be UTF-8)", ErrMalformed)
	}
	return b, nil
}

// EventKey is the canonical event key of the value a trigger's key
// field holds:
//
//   - a string is the key as it is (it must not be empty);
//   - an integer is its decimal digits, exact at any size: 123 and "123"
//     are the same key, 12345678901234567890 and 12345678901234567891
//     are two;
//   - a number with a fraction or an exponent (1.5, 1e3, 1.0), a
//     boolean, null, an object or an array is rejected.
//
// v is a value as DecodeJSON returns it (or a json.Number).
func EventKey(v any) (string, error) {
	switch k := v.(type) {
	case string:
		if k == "" {
			return "", errors.New("is an empty string")
		}
		return k, nil
	case int64:
		return strconv.FormatInt(k, 10), nil
	case uint64:
		return strconv.FormatUint(k, 10), nil
	case json.Number:
		if !isIntLiteral(string(k)) {
			return "", fmt.Errorf("is the number %s, which has a fraction or an exponent; a key must be a string or an integer", k)
		}
		return string(k), nil
	case float64:
		return "", fmt.Errorf("is the number %s, which has a fraction or an exponent; a key must be a string or an integer", strconv.FormatFloat(k, 'g', -1, 64))
	case bool:
		return "", fmt.Errorf("is the boolean %t; a key must be a string or an integer", k)
	case nil:
		return "", errors.New("is null; a key must be a string or an integer")
	case map[string]any:
		return "", errors.New("is an object; a key must be a string or an integer")
	case []any:
		return "", errors.New("is an array; a key must be a string or an integer")
	}
	return "", fmt.Errorf("is a %T; a key must be a string or an integer", v)
}

// checkComputed reports a value an expression computed that cannot be
// stored as a user value: nested deeper than MaxDepth, NaN or ±Inf, or of
// a type JSON cannot represent. The types that values loaded from the
// data bucket and expr's own results have are checked by walking them;
// anything else by encoding it.
func checkComputed(v any) error {
	return walkComputed(v, 0)
}

func walkComputed(v any, depth int) error {
	switch x := v.(type) {
	case nil, bool, string, json.Number, time.Time, time.Duration,
		int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return nil
	case float64:
		return finite(x)
	case float32:
		return finite(float64(x))
	case []any:
		if depth+1 > MaxDepth {
			return tooDeep()
		}
		for _, e := range x {
			if err := walkComputed(e, depth+1); err != nil {
				return err
			}
		}
		return nil
	case map[string]any:
		if depth+1 > MaxDepth {
			return tooDeep()
		}
		for _, e := range x {
			if err := walkComputed(e, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if k := reflect.TypeOf(v).Kind(); k == reflect.Func || k == reflect.Chan {
		return fmt.Errorf("%w: a %T cannot be stored as JSON", ErrMalformed, v)
	}
	b, err := EncodeJSON(v)
	if err != nil {
		return err
	}
	tooDeep, _ := scan(b, depth)
	return tooDeep
}

func finite(f float64) error {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Errorf("%w: the number %v cannot be stored as JSON", ErrMalformed, f)
	}
	return nil
}

func tooDeep() error {
	return fmt.Errorf("%w: nested deeper than %d levels of arrays and objects", ErrMalformed, MaxDepth)
}
