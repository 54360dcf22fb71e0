package jetstream

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/vmihailenco/msgpack/v5"
)

// ErrMalformed: a message or value could not be decoded.
var ErrMalformed = errors.New("malformed message")

// ErrTooLarge: a payload exceeds the configured limit.
var ErrTooLarge = errors.New("payload too large")

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

// decodeValue decodes an untyped msgpack value.
func decodeValue(b []byte) (any, error) {
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

// DecodeJSON parses a JSON document into plain Go values, keeping integers
// exact (int64) instead of turning every number into float64.
func DecodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: not valid JSON: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: not valid JSON: trailing data after the first value", ErrMalformed)
	}
	return numbers(v), nil
}

func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
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

// EncodeValue encodes a value for the data bucket (exported for the worker
// SDK and tools that build payloads).
func EncodeValue(v any) ([]byte, error) { return encode(v) }

// DecodeValue decodes a value from the data bucket.
func DecodeValue(b []byte) (any, error) { return decodeValue(b) }

// DecodeInto decodes a data bucket value into a typed destination.
func DecodeInto(b []byte, v any) error { return decode(b, v) }

func itoa(i int) string { return strconv.Itoa(i) }
