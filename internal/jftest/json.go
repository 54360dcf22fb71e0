package jftest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"
)

// RandomJSON returns a random JSON text whose arrays and objects nest
// exactly depth levels: strings of arbitrary Unicode (raw and escaped,
// surrogate pairs, lone surrogates, control characters), numbers of every
// form (small and 20-to-40-digit integers, negative zero, fractions,
// exponents, values beyond float64), duplicate object keys and random
// whitespace. It is valid JSON; Mangle breaks one.
func RandomJSON(r *rand.Rand, depth int) []byte {
	var b bytes.Buffer
	g := jsonGen{r: r, b: &b}
	g.space()
	g.value(depth)
	g.space()
	return b.Bytes()
}

// AcceptablePayload is what the payload door should accept, decided
// without the door's code: JSON that encoding/json decodes into an any
// (one value, numbers within float64's range), UTF-8, nested at most
// maxDepth levels counted on the decoded value, at most limit bytes; or
// nothing but whitespace (which is null).
func AcceptablePayload(b []byte, limit, maxDepth int) bool {
	if len(bytes.Trim(b, " \t\r\n")) == 0 {
		return true
	}
	var v any
	return len(b) <= limit && utf8.Valid(b) && json.Unmarshal(b, &v) == nil && JSONDepth(b) <= maxDepth
}

// JSONDepth is the nesting depth of a valid JSON text as encoding/json's
// tokenizer reads it (so an object's duplicate keys count, although
// decoding keeps only the last), for tests to compare with what the door
// decided. -1 when the text is not valid.
func JSONDepth(b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return deepest
		}
		if err != nil {
			return -1
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			deepest = max(deepest, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
}

// Mangle returns a copy of a JSON text broken in one random way: cut
// short, an invalid UTF-8 byte inside, trailing data, or a stray byte.
func Mangle(r *rand.Rand, b []byte) []byte {
	out := bytes.Clone(b)
	switch r.IntN(4) {
	case 0:
		if len(out) > 1 {
			return out[:r.IntN(len(out)-1)+1]
		}
		return []byte("[")
	case 1:
		i := r.IntN(len(out) + 1)
		return append(out[:i:i], append([]byte{0xff}, b[i:]...)...)
	case 2:
		return append(out, []byte(" {}")...)
	default:
		i := r.IntN(len(out) + 1)
		return append(out[:i:i], append([]byte{"}],:x'"[r.IntN(6)]}, b[i:]...)...)
	}
}

type jsonGen struct {
	r *rand.Rand
	b *bytes.Buffer
}

func (g *jsonGen) space() {
	for g.r.IntN(4) == 0 {
		g.b.WriteByte(" \t\r\n"[g.r.IntN(4)])
	}
}

// value writes a value nested exactly depth levels deep.
func (g *jsonGen) value(depth int) {
	if depth == 0 {
		g.scalar()
		return
	}
	n := 1 + g.r.IntN(2)
	deep := g.r.IntN(n) // the child that carries the depth
	child := func(i int) {
		d := depth - 1
		if i != deep {
			d = g.r.IntN(min(depth, 2)) // shallow siblings keep the size down
		}
		g.space()
		g.value(d)
		g.space()
	}
	if g.r.IntN(2) == 0 {
		g.b.WriteByte('[')
		for i := range n {
			if i > 0 {
				g.b.WriteByte(',')
			}
			child(i)
		}
		g.b.WriteByte(']')
		return
	}
	g.b.WriteByte('{')
	for i := range n {
		if i > 0 {
			g.b.WriteByte(',')
		}
		g.space()
		if g.r.IntN(8) == 0 {
			g.b.WriteString(`"dup"`) // duplicate keys: the last one counts
		} else {
			g.str()
		}
		g.space()
		g.b.WriteByte(':')
		child(i)
	}
	g.b.WriteByte('}')
}

func (g *jsonGen) scalar() {
	switch g.r.IntN(8) {
	case 0:
		g.b.WriteString([]string{"true", "false", "null"}[g.r.IntN(3)])
	case 1, 2, 3:
		g.number()
	default:
		g.str()
	}
}

var numberForms = []string{
	"0", "-0", "1", "-3", "42", "9223372036854775807", "9223372036854775808",
	"-9223372036854775808", "-9223372036854775809", "18446744073709551615",
	"18446744073709551616", "12345678901234567890", "12345678901234567891",
	"1.5", "-0.0", "0.1", "1.0", "1e3", "1E-7", "2.5e+10",
	"1e-400", "4.9e-324", "1.7976931348623157e308", "0.30000000000000004",
	"3.141592653589793238462643383279", "123456789012345678901234567890.5",
	"1e22", "100000000000000000000000", "9007199254740993",
}

// outOfRange are numbers beyond a float64, which the door rejects; rare,
// or few random values would pass.
var outOfRange = []string{"1e400", "-1e400", "1.7976931348623159e308", "1" + strings.Repeat("0", 309)}

func (g *jsonGen) number() {
	if g.r.IntN(100) == 0 {
		g.b.WriteString(outOfRange[g.r.IntN(len(outOfRange))])
		return
	}
	if g.r.IntN(2) == 0 {
		g.b.WriteString(numberForms[g.r.IntN(len(numberForms))])
		return
	}
	if g.r.IntN(3) == 0 {
		g.b.WriteByte('-')
	}
	g.digits(1 + g.r.IntN(40))
	if g.r.IntN(3) == 0 {
		g.b.WriteByte('.')
		n := 1 + g.r.IntN(25)
		for range n {
			g.b.WriteByte(byte('0' + g.r.IntN(10)))
		}
	}
	if g.r.IntN(4) == 0 {
		g.b.WriteString([]string{"e", "E", "e+", "e-", "E-"}[g.r.IntN(5)])
		g.b.WriteString(strconv.Itoa(g.r.IntN(250))) // with up to 40 digits, at most ~1e290
	}
}

// digits writes an integer of n digits without a leading zero.
func (g *jsonGen) digits(n int) {
	if n == 1 {
		g.b.WriteByte(byte('0' + g.r.IntN(10)))
		return
	}
	g.b.WriteByte(byte('1' + g.r.IntN(9)))
	for range n - 1 {
		g.b.WriteByte(byte('0' + g.r.IntN(10)))
	}
}

func (g *jsonGen) str() {
	g.b.WriteByte('"')
	n := g.r.IntN(12)
	if g.r.IntN(400) == 0 {
		n = 500 + g.r.IntN(3000) // now and then a long one
	}
	for range n {
		switch g.r.IntN(10) {
		case 0:
			g.b.WriteString([]string{`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`}[g.r.IntN(8)])
		case 1:
			fmt.Fprintf(g.b, `\u%04x`, g.r.IntN(0x10000)) // any BMP code unit, lone surrogates too
		case 2:
			fmt.Fprintf(g.b, `\ud83d\ude%02x`, g.r.IntN(0x50)) // a surrogate pair (emoji)
		case 3:
			g.b.WriteRune(rune(0x80 + g.r.IntN(0xd800-0x80))) // raw BMP
		case 4:
			g.b.WriteRune(rune(0x10000 + g.r.IntN(0x10ffff-0x10000))) // raw astral
		default:
			c := byte(0x20 + g.r.IntN(0x5f))
			if c == '"' || c == '\\' {
				c = 'x'
			}
			g.b.WriteByte(c)
		}
	}
	g.b.WriteByte('"')
}

// SameJSON reports how two JSON texts differ as values, nil when they do
// not: objects and arrays compare element by element (an object's last
// duplicate key counts, as in encoding/json), strings by their decoded
// text, and numbers by their exact decimal value, so 1.0 equals 1 and
// 1e2 equals 100, but 12345678901234567891 does not equal
// 12345678901234567890, nor 0.1 the double nearest to it.
func SameJSON(a, b []byte) error {
	va, err := decodeNumbers(a)
	if err != nil {
		return fmt.Errorf("first: %w", err)
	}
	vb, err := decodeNumbers(b)
	if err != nil {
		return fmt.Errorf("second: %w", err)
	}
	return sameValue("$", va, vb)
}

func decodeNumbers(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func sameValue(path string, a, b any) error {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return fmt.Errorf("%s: %s against %s", path, short(a), short(b))
		}
		for k, e := range x {
			if err := sameValue(path+"."+k, e, y[k]); err != nil {
				return err
			}
		}
		return nil
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return fmt.Errorf("%s: %s against %s", path, short(a), short(b))
		}
		for i := range x {
			if err := sameValue(path+"["+strconv.Itoa(i)+"]", x[i], y[i]); err != nil {
				return err
			}
		}
		return nil
	case json.Number:
		y, ok := b.(json.Number)
		if !ok || !sameNumber(string(x), string(y)) {
			return fmt.Errorf("%s: number %s against %s", path, x, short(b))
		}
		return nil
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("%s: %s against %s", path, short(a), short(b))
	}
	return nil
}

// sameNumber compares two number literals by exact value: as a sign,
// significant digits and a power of ten (held as a big.Int, so that any
// exponent compares), with no arithmetic on the digits.
func sameNumber(a, b string) bool {
	if a == b {
		return true
	}
	na, da, ea, oka := splitNumber(a)
	nb, db, eb, okb := splitNumber(b)
	if !oka || !okb {
		return false
	}
	if da == "" || db == "" {
		return da == db // zero: 0, -0, 0.0e7000
	}
	return na == nb && da == db && ea.Cmp(eb) == 0
}

// splitNumber splits a JSON number literal into its sign, significant
// digits without leading or trailing zeros, and the power of ten of the
// last digit.
func splitNumber(s string) (neg bool, digits string, exp *big.Int, ok bool) {
	s = strings.ToLower(s)
	neg = strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, e, hasExp := strings.Cut(s, "e")
	exp = new(big.Int)
	if hasExp {
		if _, ok := exp.SetString(strings.TrimPrefix(e, "+"), 10); !ok {
			return false, "", nil, false
		}
	}
	whole, frac, _ := strings.Cut(mant, ".")
	exp.Sub(exp, big.NewInt(int64(len(frac))))
	digits = strings.TrimLeft(whole+frac, "0")
	trimmed := strings.TrimRight(digits, "0")
	exp.Add(exp, big.NewInt(int64(len(digits)-len(trimmed))))
	return neg, trimmed, exp, true
}

func short(v any) string {
	s := fmt.Sprintf("%T %v", v, v)
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	if !utf8.ValidString(s) {
		s = strconv.Quote(s)
	}
	return s
}
