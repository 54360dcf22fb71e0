package jetstream

import (
	"encoding/binary"
	"fmt"

	"github.com/jetflow/jetflow/workflow"
)

// maxDepth bounds the nesting of decoded maps and arrays: the limit of
// user values (msgpack trigger payloads and values stored by earlier
// versions are user values too).
const maxDepth = workflow.MaxDepth

// checkMsgpack walks untrusted msgpack bytes without allocating and
// rejects what would make the decoder allocate far more than the input
// (a header claiming billions of elements) or recurse too deep. Every
// element takes at least one byte, so no container can claim more
// elements than there are bytes left.
func checkMsgpack(b []byte) error {
	w := msgpackWalk{b: b, stack: []uint64{1}}
	for len(w.stack) > 0 {
		top := len(w.stack) - 1
		if w.stack[top] == 0 {
			w.stack = w.stack[:top]
			continue
		}
		w.stack[top]--
		if err := w.element(); err != nil {
			return err
		}
	}
	if w.i != len(b) {
		return fmt.Errorf("%w: msgpack: %d trailing bytes", ErrMalformed, len(b)-w.i)
	}
	return nil
}

// msgpackFormat says what follows a msgpack type byte: a payload of bytes
// to skip, or the header of a container whose elements follow.
type msgpackFormat struct {
	invalid bool
	// size is the length in the type byte itself: bytes of a fixed-size
	// value or fixstr, elements of a fixarray, entries of a fixmap.
	size uint64
	// lenBytes is the size of the big-endian length that follows the type
	// byte (str, bin, ext 8/16/32, array and map 16/32), replacing size.
	lenBytes int
	// extType is 1 for ext: a type byte precedes the payload.
	extType uint64
	// perEntry is, for a container, the elements per entry: 1 for an
	// array, 2 for a map (a key and a value); 0 for a payload.
	perEntry uint64
}

// msgpackFormats is the msgpack specification's format table, indexed by
// type byte.
var msgpackFormats = func() (t [256]msgpackFormat) {
	for c := 0x80; c <= 0x8f; c++ { // fixmap
		t[c] = msgpackFormat{size: uint64(c & 0x0f), perEntry: 2}
	}
	for c := 0x90; c <= 0x9f; c++ { // fixarray
		t[c] = msgpackFormat{size: uint64(c & 0x0f), perEntry: 1}
	}
	for c := 0xa0; c <= 0xbf; c++ { // fixstr
		t[c] = msgpackFormat{size: uint64(c & 0x1f)}
	}
	// 0x00-0x7f, 0xe0-0xff (fixints), nil, false and true: the type byte
	// is the whole value (the zero format).
	// 0xc1 is never used.
	t[0xc1].invalid = true
	for c, lenBytes := range map[int]int{0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4} { // bin and str 8, 16, 32
		t[c] = msgpackFormat{lenBytes: lenBytes}
	}
	for c, lenBytes := range map[int]int{0xc7: 1, 0xc8: 2, 0xc9: 4} { // ext 8, 16, 32
		t[c] = msgpackFormat{lenBytes: lenBytes, extType: 1}
	}
	for c, size := range map[int]uint64{0xca: 4, 0xcb: 8, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8, 0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8} { // float, uint, int
		t[c] = msgpackFormat{size: size}
	}
	for c := 0xd4; c <= 0xd8; c++ { // fixext 1, 2, 4, 8, 16: a type byte and the data
		t[c] = msgpackFormat{size: 1 + 1<<(c-0xd4)}
	}
	for c, lenBytes := range map[int]int{0xdc: 2, 0xdd: 4} { // array 16, 32
		t[c] = msgpackFormat{lenBytes: lenBytes, perEntry: 1}
	}
	for c, lenBytes := range map[int]int{0xde: 2, 0xdf: 4} { // map 16, 32
		t[c] = msgpackFormat{lenBytes: lenBytes, perEntry: 2}
	}
	return t
}()

// msgpackWalk is the position of checkMsgpack in its input.
type msgpackWalk struct {
	b []byte
	i int
	// stack holds, per open container, how many elements it still expects.
	stack []uint64
}

// element reads one element's type byte and skips its payload or opens
// its container.
func (w *msgpackWalk) element() error {
	if w.i >= len(w.b) {
		return fmt.Errorf("%w: msgpack: unexpected end of input", ErrMalformed)
	}
	c := w.b[w.i]
	w.i++
	f := msgpackFormats[c]
	if f.invalid {
		return fmt.Errorf("%w: msgpack: invalid type byte 0x%02x", ErrMalformed, c)
	}
	n := f.size
	if f.lenBytes > 0 {
		var err error
		if n, err = w.length(f.lenBytes); err != nil {
			return err
		}
	}
	if f.perEntry > 0 {
		return w.open(f.perEntry * n)
	}
	return w.skip(n + f.extType)
}

// need fails unless n bytes are left.
func (w *msgpackWalk) need(n uint64) error {
	if n > uint64(len(w.b)-w.i) {
		return fmt.Errorf("%w: msgpack: length %d exceeds the %d bytes left", ErrMalformed, n, len(w.b)-w.i)
	}
	return nil
}

// length reads a big-endian length of size bytes (1, 2 or 4).
func (w *msgpackWalk) length(size int) (uint64, error) {
	if err := w.need(uint64(size)); err != nil {
		return 0, err
	}
	var n uint64
	switch size {
	case 1:
		n = uint64(w.b[w.i])
	case 2:
		n = uint64(binary.BigEndian.Uint16(w.b[w.i:]))
	case 4:
		n = uint64(binary.BigEndian.Uint32(w.b[w.i:]))
	}
	w.i += size
	return n, nil
}

// skip skips a payload of n bytes.
func (w *msgpackWalk) skip(n uint64) error {
	if err := w.need(n); err != nil {
		return err
	}
	w.i += int(n)
	return nil
}

// open opens a container of elems elements, each at least one byte.
func (w *msgpackWalk) open(elems uint64) error {
	if err := w.need(elems); err != nil {
		return err
	}
	if len(w.stack) > maxDepth { // stack[0] is the root, not a container
		return fmt.Errorf("%w: msgpack: nested deeper than %d", ErrMalformed, maxDepth)
	}
	w.stack = append(w.stack, elems)
	return nil
}
