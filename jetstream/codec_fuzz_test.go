package jetstream_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// The decoders read bytes from the network: whatever they get, they must
// return a value or an error matching ErrMalformed, never panic.

func FuzzDecodeEvent(f *testing.F) {
	good, err := jetstream.EncodeMessage(workflow.Event{Kind: workflow.EventResult, Instance: "wf-abc", Step: "a", Attempt: 2, OutputRef: "wf-abc.a.2.out"})
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0xc1})
	f.Add([]byte("not msgpack"))
	f.Add(good[:len(good)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := jetstream.DecodeEvent(b)
		if err == nil {
			require.NotEmpty(t, ev.Instance)
			require.NotEmpty(t, ev.Kind)
		} else {
			require.ErrorIs(t, err, jetstream.ErrMalformed)
		}
	})
}

func FuzzDecodeTask(f *testing.F) {
	good, err := jetstream.EncodeMessage(workflow.Task{Instance: "wf-abc", Workflow: "wf", Version: 1, Step: "a", Type: "echo", Attempt: 1, InputRef: "wf-abc.in", Input: []byte{0x80}})
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte{0x80})
	f.Add([]byte{0xde, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		task, err := jetstream.DecodeTask(b)
		if err == nil {
			require.Positive(t, task.Attempt)
			require.NotEmpty(t, task.InputRef)
		} else {
			require.ErrorIs(t, err, jetstream.ErrMalformed)
		}
	})
}

// FuzzDecodeFlowRecords: slot and rate records are read back from the
// flow bucket; bytes that are not a record are an error, never a panic,
// and a record that decodes keeps the slot invariants when operated on.
func FuzzDecodeFlowRecords(f *testing.F) {
	slot, err := jetstream.EncodeMessage(workflow.SlotRecord{Holders: []workflow.Holder{{Instance: "a"}}, Waiters: []workflow.Holder{{Instance: "b", Step: "s", Attempt: 2}}})
	require.NoError(f, err)
	f.Add(slot)
	f.Add([]byte{0x80})
	f.Add([]byte{0x81, 0xa1, 'h', 0xc0})
	f.Add(slot[:len(slot)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := jetstream.DecodeSlotRecord(b)
		if err != nil {
			require.ErrorIs(t, err, jetstream.ErrMalformed)
		} else {
			next, _, _ := rec.Release(workflow.Holder{Instance: "a"}, 1)
			require.LessOrEqual(t, len(next.Holders), max(len(rec.Holders), 1))
		}
		if _, err := jetstream.DecodeRateRecord(b); err != nil {
			require.ErrorIs(t, err, jetstream.ErrMalformed)
		}
	})
}
