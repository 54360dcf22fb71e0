package jetstream

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/jetflow/jetflow/workflow"
)

// User values in the data bucket (inputs, outputs, signal payloads) are
// JSON, so `nats kv get jetflow_data <key>` shows them as they are:
// trigger payloads, explicit start inputs and signal payloads are stored
// exactly as they were published, handler outputs and expression results
// as encoding/json writes them (with a trailing newline). The checks are
// workflow.CheckJSON's, on the way in and on the way out.
//
// Earlier versions of jetflow stored msgpack here. Such values are still
// read, and told apart without a marker: a JSON value never starts with
// a byte of 0x80 or above (JSON text is UTF-8 and begins with ASCII
// whitespace or a value), and jetflow never stores a one-byte JSON value
// (it appends a newline to one), while a msgpack value either starts
// with a byte of 0x80 or above or is a positive integer below 128, which
// is exactly one byte long.

// legacy reports a value written as msgpack by an earlier version.
func legacy(b []byte) bool { return len(b) == 1 || (len(b) > 0 && b[0] >= 0x80) }

// storable returns JSON bytes as they are stored: a value of one byte (a
// single digit) gets a newline, so that it cannot be read as msgpack.
func storable(b []byte) []byte {
	if len(b) == 1 {
		return []byte{b[0], '\n'}
	}
	return b
}

// CheckPayload checks a JSON payload at the door (a trigger, an explicit
// start, a signal) against the one definition of a valid user value,
// workflow.CheckJSON, with Config.MaxPayload as the size limit, and
// returns the bytes to store: the payload itself, null for an empty
// (or all-whitespace) one. Errors match ErrMalformed or ErrTooLarge.
func (c *Client) CheckPayload(b []byte) ([]byte, error) {
	return CheckPayload(b, c.cfg.MaxPayload)
}

// CheckPayload is Client.CheckPayload with an explicit size limit.
func CheckPayload(b []byte, maxBytes int) ([]byte, error) {
	if len(bytes.Trim(b, " \t\r\n")) == 0 { // JSON's whitespace

		b = []byte("null")
	}
	if err := workflow.CheckJSON(b, maxBytes); err != nil {
		return nil, err
	}
	return storable(b), nil
}

// ValueJSON returns a data bucket value as checked JSON: the stored bytes
// themselves, or the JSON of a msgpack value stored by an earlier
// version. Errors match ErrMalformed.
func ValueJSON(b []byte) ([]byte, error) {
	if legacy(b) {
		return MsgpackToJSON(b)
	}
	if err := workflow.CheckJSON(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// MsgpackToJSON converts a msgpack value (a trigger payload published
// with Content-Type application/msgpack, or a value stored by an earlier
// version) to JSON: maps with non-string keys get their keys' text,
// binary strings become base64 strings and timestamps RFC 3339 strings,
// as encoding/json writes []byte and time.Time. NaN and ±Inf, which JSON
// cannot hold, and anything nested deeper than workflow.MaxDepth are
// rejected with an error matching ErrMalformed.
func MsgpackToJSON(b []byte) ([]byte, error) {
	v, err := decodeMsgpackValue(b)
	if err != nil {
		return nil, fmt.Errorf("msgpack value: %w", err)
	}
	out, err := workflow.EncodeJSON(v)
	if err != nil {
		return nil, fmt.Errorf("msgpack value: %w", err)
	}
	return out, nil
}

// EncodeValue encodes a user value for the data bucket: JSON as
// encoding/json writes it (see workflow.EncodeJSON).
func EncodeValue(v any) ([]byte, error) { return workflow.EncodeJSON(v) }

// DecodeValue decodes a data bucket value to plain Go values with exact
// numbers (see workflow.DecodeJSON): what expressions see.
func DecodeValue(b []byte) (any, error) {
	if legacy(b) {
		j, err := MsgpackToJSON(b)
		if err != nil {
			return nil, err
		}
		b = j
	}
	return workflow.DecodeJSON(b)
}

// DecodeInto decodes a data bucket value into v exactly as
// encoding/json.Unmarshal does (json tags, case-insensitive field names,
// Unmarshaler, json.Number; numbers in an `any` are float64).
func DecodeInto(b []byte, v any) error {
	j, err := ValueJSON(b)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(j, v); err != nil {
		return fmt.Errorf("bind %T: %w", v, err)
	}
	return nil
}
