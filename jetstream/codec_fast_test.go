package jetstream

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/workflow"
)

// The plain types have the fields and tags of the records but not their
// registered encoders: msgpack encodes them by reflection, the reference
// the fast encoders must match byte for byte.
type (
	plainInstance workflow.Instance
	plainEvent    workflow.Event
	plainTask     workflow.Task
)

func reflective(t testing.TB, in *workflow.Instance) []byte {
	t.Helper()
	b, err := msgpack.Marshal((*plainInstance)(in))
	require.NoError(t, err)
	return b
}

// fill sets every field of the struct v points to to a non-zero value
// drawn from r, recursively, with at most one entry per map (map order is
// random, so only single-entry maps compare byte for byte). A field added
// to the instance types is set here without anyone listing it, so an
// encoder that forgets it fails the comparison.
func fill(r *rand.Rand, v reflect.Value) {
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(r, v.Elem())
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Unix(r.Int64N(1<<34), r.Int64N(1e9)).UTC()))
			return
		}
		for i := range v.NumField() {
			fill(r, v.Field(i))
		}
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
		k := reflect.New(v.Type().Key()).Elem()
		fill(r, k)
		e := reflect.New(v.Type().Elem()).Elem()
		fill(r, e)
		v.SetMapIndex(k, e)
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d", r.IntN(1000)))
	case reflect.Int, reflect.Int64:
		v.SetInt(r.Int64N(1<<40) - 1<<39)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type().Elem().Kind() != reflect.Uint8 {
			v.Set(reflect.MakeSlice(v.Type(), 1+r.IntN(3), 3))
			for i := range v.Len() {
				fill(r, v.Index(i))
			}
			return
		}
		b := make([]byte, 1+r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		v.SetBytes(b)
	case reflect.Uint64:
		v.SetUint(r.Uint64())
	default:
		panic(fmt.Sprintf("fill: add a case for %s", v.Type()))
	}
}

// clearSome zeroes each field of the struct v points to (and of nested
// structs) with probability 1/2, so every omitempty combination occurs.
func clearSome(r *rand.Rand, v reflect.Value) {
	for i := range v.NumField() {
		f := v.Field(i)
		if r.IntN(2) == 0 {
			f.Set(reflect.Zero(f.Type()))
			continue
		}
		switch {
		case f.Kind() == reflect.Pointer && !f.IsNil():
			clearSome(r, f.Elem())
		case f.Kind() == reflect.Map && f.Type().Elem().Kind() == reflect.Pointer:
			for _, k := range f.MapKeys() {
				clearSome(r, f.MapIndex(k).Elem())
			}
		case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.Struct:
			for j := range f.Len() {
				clearSome(r, f.Index(j))
			}
		}
	}
}

// TestFastEncodersMatchReflection encodes random records — every field
// set, then random subsets zeroed — with the fast encoders and by
// reflection, and requires the same bytes.
func TestFastEncodersMatchReflection(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		// make returns a pointer to a new record and the same memory as
		// its plain type.
		make func() (record any, plain any)
	}{
		{"instance", func() (any, any) { in := &workflow.Instance{}; return in, (*plainInstance)(in) }},
		{"event", func() (any, any) { ev := &workflow.Event{}; return ev, (*plainEvent)(ev) }},
		{"task", func() (any, any) { tk := &workflow.Task{}; return tk, (*plainTask)(tk) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(1, 2))
			for i := range 2000 {
				rec, plain := tc.make()
				fill(r, reflect.ValueOf(rec).Elem())
				if i > 0 {
					clearSome(r, reflect.ValueOf(rec).Elem())
				}
				want, err := msgpack.Marshal(plain)
				require.NoError(t, err)
				got, err := encode(rec)
				require.NoError(t, err)
				require.True(t, bytes.Equal(want, got), "%s %d: %+v\nreflection %x\nfast       %x", tc.name, i, rec, want, got)
				// By value too (not addressable inside msgpack).
				got, err = encode(reflect.ValueOf(rec).Elem().Interface())
				require.NoError(t, err)
				require.Equal(t, want, got)
			}
		})
	}
}

func TestInstanceEncoderRoundTrips(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 123) // local, as msgpack decodes times
	in := &workflow.Instance{
		ID: "wf-abc", Workflow: "wf", Version: 2, EventKey: "k", InputRef: "wf-abc.in", Status: workflow.StatusRunning,
		Created: now, Updated: now, Events: 7,
		Steps: map[string]*workflow.StepState{
			"a":    {Status: workflow.StepCompleted, Attempt: 1, Started: now, Ended: now, OutputRef: "o"},
			"b":    {Status: workflow.StepRunning, Attempt: 3, Started: now, AttemptStarted: now},
			"fan":  {Status: workflow.StepRunning, Started: now, Total: 100000, Cursor: 5000, ChunkFrom: 4000, Done: 4100, ChildFailed: 3},
			"none": nil,
		},
		Timers:  map[string]time.Time{"t1": now, "t2": now.Add(time.Hour)},
		Signals: map[string]string{"go": "ref1", "stop": "ref2"},
		Parent:  &workflow.ParentRef{ID: "p", Step: "s", Index: 42},
	}
	b, err := encode(in)
	require.NoError(t, err)
	var out workflow.Instance
	require.NoError(t, decode(b, &out))
	require.Equal(t, *in, out)

	empty := &workflow.Instance{}
	require.Equal(t, reflective(t, empty), must(encode(empty)))
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func benchInstance() *workflow.Instance {
	now := time.Now().UTC()
	return &workflow.Instance{
		ID: "bench-seq3-qqys6nyyywnl4bhpts62lokozi", Workflow: "bench-seq3", Version: 1, EventKey: "run-12345",
		InputRef: "bench-seq3-qqys6nyyywnl4bhpts62lokozi.in", InputDigest: "sha256:0123456789abcdef", Status: workflow.StatusRunning,
		Created: now, Updated: now, Events: 3, TriggerSeq: 991,
		Steps: map[string]*workflow.StepState{
			"a": {Status: workflow.StepCompleted, Attempt: 1, Started: now, Ended: now, AttemptStarted: now},
			"b": {Status: workflow.StepCompleted, Attempt: 1, Started: now, Ended: now, AttemptStarted: now},
			"c": {Status: workflow.StepRunning, Attempt: 1, Started: now, AttemptStarted: now, InputRef: "x.in"},
		},
	}
}

// go test ./jetstream -run '^$' -bench EncodeInstance -benchmem
func BenchmarkEncodeInstance(b *testing.B) {
	in := benchInstance()
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if _, err := encode(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reflection", func(b *testing.B) {
		for b.Loop() {
			if _, err := msgpack.Marshal((*plainInstance)(in)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
