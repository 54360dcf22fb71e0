package jetstream

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	natsjs "github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// noMetadata is a received message whose JetStream metadata cannot be
// read (only Subject and Metadata are called).
type noMetadata struct{ natsjs.Msg }

func (noMetadata) Subject() string { return "jetflow.events.x" }
func (noMetadata) Metadata() (*natsjs.MsgMetadata, error) {
	return nil, errors.New("not a JetStream message")
}

// A message without readable metadata is handled as a first delivery, as
// before, but the failure is counted and logged: once as an error, then
// at debug level.
func TestBadMetadataIsCountedAndLogged(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	c := &Client{log: zerolog.New(&logs).Level(zerolog.InfoLevel)}
	m := &Msg{m: noMetadata{}, c: c}
	require.EqualValues(t, 1, m.Deliveries())
	require.EqualValues(t, 0, m.StreamSeq())
	require.EqualValues(t, 2, c.BadMetadata())
	require.Equal(t, 1, strings.Count(logs.String(), `"level":"error"`), logs.String())
	require.Contains(t, logs.String(), "not a JetStream message")
	require.Contains(t, logs.String(), "jetflow.events.x")
}
