package jetstream

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/workflow"
)

// ErrMalformed: a message or value could not be decoded. It is
// workflow.ErrMalformed, so either name matches.
var ErrMalformed = workflow.ErrMalformed

// ErrTooLarge: a payload exceeds the configured limit. It is
// workflow.ErrTooLarge.
var ErrTooLarge = workflow.ErrTooLarge

// Internal records and messages (instances, events, tasks, effects) are
// msgpack; user values in the data bucket are JSON (see value.go).

func encode(v any) ([]byte, error) {
	b, err := msgpack.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return b, nil
}

// decode decodes msgpack into v. Untyped values decode loosely: integers as
// int64 or uint64, floats as float64, maps as map[string]any.
func decode(b []byte, v any) error {
	if err := checkMsgpack(b); err != nil {
		return err
	}
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	dec.UseLooseInterfaceDecoding(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// decodeMsgpackValue decodes an untyped msgpack value.
func decodeMsgpackValue(b []byte) (any, error) {
	var v any
	if err := decode(b, &v); err != nil {
		return nil, err
	}
	return normalize(v), nil
}

// normalize turns map[any]any (msgpack maps with non-string keys) into
// map[string]any so expressions and JSON output can use them.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalize(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = normalize(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = normalize(e)
		}
		return x
	}
	return v
}

// EncodeMessage encodes an internal message or record (an event, a task)
// as msgpack, as jetflow publishes it (tools and tests craft messages
// with it).
func EncodeMessage(v any) ([]byte, error) { return encode(v) }

func itoa(i int) string { return strconv.Itoa(i) }
