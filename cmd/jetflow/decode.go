package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/jetstream"
)

// maxDecodeInput bounds what decode reads from stdin: a KV value or a
// message is at most the NATS server's max_payload (64 MiB at most).
const maxDecodeInput = 64 << 20

func decodeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "decode",
		Short: "Print a stored jetflow value (msgpack or JSON, on stdin) as JSON",
		Long: `Read one value as jetflow stores it from stdin and print it as JSON: an
instance record (bucket jetflow_instances, msgpack) in the fields of
jetflow show --json, any other msgpack value (events, tasks) as plain JSON,
and a JSON value (bucket jetflow_data) as it is.`,
		Example: `  nats kv get --raw jetflow_instances order-processing.7f3a | jetflow decode
  nats kv get --raw jetflow_data in.order-processing.7f3a | jetflow decode`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxDecodeInput+1))
			if err != nil {
				return err
			}
			if len(b) > maxDecodeInput {
				return fmt.Errorf("input larger than %d bytes", maxDecodeInput)
			}
			v, err := decodeStored(b)
			if err != nil {
				return err
			}
			return printJSON(cmd.OutOrStdout(), v)
		},
	}
}

// errEmptyInput: decode read nothing.
var errEmptyInput = errors.New("nothing on stdin: pipe a value into jetflow decode (nats kv get --raw BUCKET KEY | jetflow decode)")

// decodeStored turns one stored value into what decode prints.
func decodeStored(b []byte) (any, error) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return nil, errEmptyInput
	}
	if json.Valid(trimmed) && !isLegacyScalar(b) {
		return json.RawMessage(trimmed), nil
	}
	if in, err := jetstream.DecodeInstance(b); err == nil && in.ID != "" && in.Workflow != "" && in.Status != "" {
		return viewInstance(in), nil
	}
	j, err := jetstream.MsgpackToJSON(b)
	if err != nil {
		return nil, fmt.Errorf("neither JSON nor msgpack: %w", err)
	}
	return json.RawMessage(j), nil
}

// isLegacyScalar: a one-byte value is msgpack (a positive integer below
// 128), never stored JSON (see jetstream's value encoding).
func isLegacyScalar(b []byte) bool { return len(b) == 1 }
