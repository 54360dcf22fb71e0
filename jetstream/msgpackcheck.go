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
	// stack holds, per open container, how many elements it still expects.
	stack := []uint64{1}
	i := 0
	for len(stack) > 0 {
		top := len(stack) - 1
		if stack[top] == 0 {
			stack = stack[:top]
			continue
		}
		stack[top]--
		if i >= len(b) {
			return fmt.Errorf("%w: msgpack: unexpected end of input", ErrMalformed)
		}
		c := b[i]
		i++
		need := func(n uint64) error {
			if n > uint64(len(b)-i) {
				return fmt.Errorf("%w: msgpack: length %d exceeds the %d bytes left", ErrMalformed, n, len(b)-i)
			}
			return nil
		}
		length := func(size int) (uint64, error) {
			if err := need(uint64(size)); err != nil {
				return 0, err
			}
			var n uint64
			switch size {
			case 1:
				n = uint64(b[i])
			case 2:
				n = uint64(binary.BigEndian.Uint16(b[i:]))
			case 4:
				n = uint64(binary.BigEndian.Uint32(b[i:]))
			}
			i += size
			return n, nil
		}
		skip := func(n uint64) error {
			if err := need(n); err != nil {
				return err
			}
			i += int(n)
			return nil
		}
		open := func(elems uint64) error {
			if err := need(elems); err != nil {
				return err
			}
			if len(stack) > maxDepth { // stack[0] is the root, not a container
				return fmt.Errorf("%w: msgpack: nested deeper than %d", ErrMalformed, maxDepth)
			}
			stack = append(stack, elems)
			return nil
		}
		var err error
		var n uint64
		switch {
		case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		case c >= 0x80 && c <= 0x8f:
			err = open(2 * uint64(c&0x0f))
		case c >= 0x90 && c <= 0x9f:
			err = open(uint64(c & 0x0f))
		case c >= 0xa0 && c <= 0xbf:
			err = skip(uint64(c & 0x1f))
		case c == 0xc4 || c == 0xd9:
			if n, err = length(1); err == nil {
				err = skip(n)
			}
		case c == 0xc5 || c == 0xda:
			if n, err = length(2); err == nil {
				err = skip(n)
			}
		case c == 0xc6 || c == 0xdb:
			if n, err = length(4); err == nil {
				err = skip(n)
			}
		case c == 0xc7:
			if n, err = length(1); err == nil {
				err = skip(n + 1)
			}
		case c == 0xc8:
			if n, err = length(2); err == nil {
				err = skip(n + 1)
			}
		case c == 0xc9:
			if n, err = length(4); err == nil {
				err = skip(n + 1)
			}
		case c == 0xca:
			err = skip(4)
		case c == 0xcb:
			err = skip(8)
		case c == 0xcc || c == 0xd0:
			err = skip(1)
		case c == 0xcd || c == 0xd1:
			err = skip(2)
		case c == 0xce || c == 0xd2:
			err = skip(4)
		case c == 0xcf || c == 0xd3:
			err = skip(8)
		case c >= 0xd4 && c <= 0xd8:
			err = skip(1 + (1 << (c - 0xd4)))
		case c == 0xdc:
			if n, err = length(2); err == nil {
				err = open(n)
			}
		case c == 0xdd:
			if n, err = length(4); err == nil {
				err = open(n)
			}
		case c == 0xde:
			if n, err = length(2); err == nil {
				err = open(2 * n)
			}
		case c == 0xdf:
			if n, err = length(4); err == nil {
				err = open(2 * n)
			}
		default: // 0xc1 is never used
			err = fmt.Errorf("%w: msgpack: invalid type byte 0x%02x", ErrMalformed, c)
		}
		if err != nil {
			return err
		}
	}
	if i != len(b) {
		return fmt.Errorf("%w: msgpack: %d trailing bytes", ErrMalformed, len(b)-i)
	}
	return nil
}
