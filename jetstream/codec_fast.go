package jetstream

import (
	"reflect"
	"time"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/jetflow/jetflow/workflow"
)

// Every instance write encodes the whole instance, and every task and
// event is encoded once on its way out. msgpack's reflective struct
// encoder spent most of that time deciding which omitempty fields to
// leave out (it boxes every field to ask it whether it is zero): 6% of
// the dispatcher process's CPU at saturation. The encoders below write
// the same bytes as the reflective one, field for field and in the same
// order (TestFastEncodersMatchReflection compares them on random values),
// so what they write decodes with the ordinary struct decoder, and
// records written before them read the same. Decoding stays reflective:
// it reads untrusted bytes and is fuzzed as it is.
//
// A field added to workflow.Instance, StepState, ParentRef, Event or Task
// must be added here too; the test fails until it is.

func init() {
	msgpack.Register(workflow.Instance{}, byValue(encodeInstance), nil)
	msgpack.Register(workflow.Event{}, byValue(encodeEvent), nil)
	msgpack.Register(workflow.Task{}, byValue(encodeTask), nil)
}

// byValue adapts an encoder of *T to msgpack's encoder of reflected
// values: a T inside a struct or behind a pointer is addressable; a T
// passed by value is copied once.
func byValue[T any](enc func(*msgpack.Encoder, *T) error) func(*msgpack.Encoder, reflect.Value) error {
	return func(e *msgpack.Encoder, v reflect.Value) error {
		if v.CanAddr() {
			return enc(e, v.Addr().Interface().(*T))
		}
		x := v.Interface().(T)
		return enc(e, &x)
	}
}

// fieldWriter writes map entries and keeps the first error, so the
// encoders read as a list of fields.
type fieldWriter struct {
	e   *msgpack.Encoder
	err error
}

func (w *fieldWriter) key(k string) {
	if w.err == nil {
		w.err = w.e.EncodeString(k)
	}
}

func (w *fieldWriter) str(k, v string) {
	w.key(k)
	if w.err == nil {
		w.err = w.e.EncodeString(v)
	}
}

func (w *fieldWriter) int(k string, v int) {
	w.key(k)
	if w.err == nil {
		w.err = w.e.EncodeInt(int64(v))
	}
}

// uint64 writes all 9 bytes, as the reflective encoder does for uint64
// fields (it compacts int fields, not uint64 ones).
func (w *fieldWriter) uint64(k string, v uint64) {
	w.key(k)
	if w.err == nil {
		w.err = w.e.EncodeUint64(v)
	}
}

// int64 writes all 9 bytes, as the reflective encoder does for int64
// kinds (time.Duration).
func (w *fieldWriter) int64(k string, v int64) {
	w.key(k)
	if w.err == nil {
		w.err = w.e.EncodeInt64(v)
	}
}

func (w *fieldWriter) bool(k string, v bool) {
	w.key(k)
	if w.err == nil {
		w.err = w.e.EncodeBool(v)
	}
}

func (w *fieldWriter) bytes(k string, v []byte) {
	w.key(k)
	if w.err == nil {
		w.err = w.e.EncodeBytes(v)
	}
}

func (w *fieldWriter) parent(k string, p *workflow.ParentRef) {
	w.key(k)
	w.mapLen(3)
	w.str("id", p.ID)
	w.str("s", p.Step)
	w.int("i", p.Index)
}

func (w *fieldWriter) time(k string, v time.Time) {
	w.key(k)
	if w.err == nil {
		w.err = w.e.EncodeTime(v)
	}
}

func (w *fieldWriter) mapLen(n int) {
	if w.err == nil {
		w.err = w.e.EncodeMapLen(n)
	}
}

// count returns how many of the omitempty conditions hold.
func count(present ...bool) int {
	n := 0
	for _, p := range present {
		if p {
			n++
		}
	}
	return n
}

func encodeInstance(e *msgpack.Encoder, in *workflow.Instance) error {
	w := &fieldWriter{e: e}
	// id wf v key in st c u n steps are always written.
	w.mapLen(10 + count(in.InputDigest != "", in.OutputRef != "", in.Error != "", !in.Ended.IsZero(),
		len(in.Timers) > 0, in.Parent != nil, len(in.Signals) > 0, in.TriggerSeq != 0, in.Run != 0))
	w.str("id", in.ID)
	w.str("wf", in.Workflow)
	w.int("v", in.Version)
	w.str("key", in.EventKey)
	w.str("in", in.InputRef)
	if in.InputDigest != "" {
		w.str("dig", in.InputDigest)
	}
	w.str("st", string(in.Status))
	if in.OutputRef != "" {
		w.str("out", in.OutputRef)
	}
	if in.Error != "" {
		w.str("err", in.Error)
	}
	w.time("c", in.Created)
	w.time("u", in.Updated)
	if !in.Ended.IsZero() {
		w.time("e", in.Ended)
	}
	w.uint64("n", in.Events)
	w.key("steps")
	if w.err == nil {
		if in.Steps == nil {
			w.err = e.EncodeNil()
		} else {
			w.mapLen(len(in.Steps))
			for name, st := range in.Steps {
				w.key(name)
				if w.err == nil {
					w.err = encodeStepState(e, st)
				}
			}
		}
	}
	if len(in.Timers) > 0 {
		w.key("timers")
		w.mapLen(len(in.Timers))
		for id, at := range in.Timers {
			w.time(id, at)
		}
	}
	if in.Parent != nil {
		w.parent("parent", in.Parent)
	}
	if len(in.Signals) > 0 {
		w.key("sig")
		w.mapLen(len(in.Signals))
		for name, ref := range in.Signals {
			w.str(name, ref)
		}
	}
	if in.TriggerSeq != 0 {
		w.uint64("tseq", in.TriggerSeq)
	}
	if in.Run != 0 {
		w.int("run", in.Run)
	}
	return w.err
}

func encodeStepState(e *msgpack.Encoder, st *workflow.StepState) error {
	if st == nil {
		return e.EncodeNil()
	}
	w := &fieldWriter{e: e}
	// st and s are always written.
	w.mapLen(2 + count(st.Attempt != 0, st.Pending != 0, st.InputRef != "", st.OutputRef != "", st.Error != "",
		!st.Ended.IsZero(), !st.AttemptStarted.IsZero(),
		st.Total != 0, st.Cursor != 0, st.ChunkFrom != 0, st.Done != 0, st.ChildFailed != 0))
	w.str("st", string(st.Status))
	if st.Attempt != 0 {
		w.int("a", st.Attempt)
	}
	if st.Pending != 0 {
		w.int("p", st.Pending)
	}
	if st.InputRef != "" {
		w.str("in", st.InputRef)
	}
	if st.OutputRef != "" {
		w.str("out", st.OutputRef)
	}
	if st.Error != "" {
		w.str("err", st.Error)
	}
	w.time("s", st.Started)
	if !st.Ended.IsZero() {
		w.time("e", st.Ended)
	}
	if !st.AttemptStarted.IsZero() {
		w.time("as", st.AttemptStarted)
	}
	if st.Total != 0 {
		w.int("tot", st.Total)
	}
	if st.Cursor != 0 {
		w.int("cur", st.Cursor)
	}
	if st.ChunkFrom != 0 {
		w.int("cf", st.ChunkFrom)
	}
	if st.Done != 0 {
		w.int("done", st.Done)
	}
	if st.ChildFailed != 0 {
		w.int("cfail", st.ChildFailed)
	}
	return w.err
}

func encodeEvent(e *msgpack.Encoder, ev *workflow.Event) error {
	w := &fieldWriter{e: e}
	// k and i are always written.
	w.mapLen(2 + count(ev.Workflow != "", ev.Version != 0, ev.EventKey != "", ev.InputRef != "", ev.InputDigest != "",
		ev.TriggerSeq != 0, ev.Run != 0, ev.Step != "", ev.Attempt != 0, ev.OutputRef != "", ev.Error != "",
		ev.Permanent, ev.RetryAfter != 0, ev.Timer != "", ev.Reason != "", ev.Parent != nil, ev.Index != 0,
		ev.ChildStatus != "", ev.Signal != "", ev.Completed != 0, ev.Failed != 0))
	w.str("k", string(ev.Kind))
	w.str("i", ev.Instance)
	if ev.Workflow != "" {
		w.str("wf", ev.Workflow)
	}
	if ev.Version != 0 {
		w.int("v", ev.Version)
	}
	if ev.EventKey != "" {
		w.str("key", ev.EventKey)
	}
	if ev.InputRef != "" {
		w.str("in", ev.InputRef)
	}
	if ev.InputDigest != "" {
		w.str("dig", ev.InputDigest)
	}
	if ev.TriggerSeq != 0 {
		w.uint64("tseq", ev.TriggerSeq)
	}
	if ev.Run != 0 {
		w.int("run", ev.Run)
	}
	if ev.Step != "" {
		w.str("s", ev.Step)
	}
	if ev.Attempt != 0 {
		w.int("a", ev.Attempt)
	}
	if ev.OutputRef != "" {
		w.str("out", ev.OutputRef)
	}
	if ev.Error != "" {
		w.str("err", ev.Error)
	}
	if ev.Permanent {
		w.bool("perm", ev.Permanent)
	}
	if ev.RetryAfter != 0 {
		w.int64("ra", int64(ev.RetryAfter))
	}
	if ev.Timer != "" {
		w.str("t", ev.Timer)
	}
	if ev.Reason != "" {
		w.str("r", ev.Reason)
	}
	if ev.Parent != nil {
		w.parent("par", ev.Parent)
	}
	if ev.Index != 0 {
		w.int("idx", ev.Index)
	}
	if ev.ChildStatus != "" {
		w.str("cst", string(ev.ChildStatus))
	}
	if ev.Signal != "" {
		w.str("sig", ev.Signal)
	}
	if ev.Completed != 0 {
		w.int("cc", ev.Completed)
	}
	if ev.Failed != 0 {
		w.int("cf", ev.Failed)
	}
	return w.err
}

func encodeTask(e *msgpack.Encoder, t *workflow.Task) error {
	w := &fieldWriter{e: e}
	// i wf v s t a in ek are always written.
	w.mapLen(8 + count(t.Timeout != 0, t.MaxAttempts != 0, t.Once, len(t.Input) > 0))
	w.str("i", t.Instance)
	w.str("wf", t.Workflow)
	w.int("v", t.Version)
	w.str("s", t.Step)
	w.str("t", t.Type)
	w.int("a", t.Attempt)
	w.str("in", t.InputRef)
	w.str("ek", t.EffectKey)
	if t.Timeout != 0 {
		w.int64("to", int64(t.Timeout))
	}
	if t.MaxAttempts != 0 {
		w.int("ma", t.MaxAttempts)
	}
	if t.Once {
		w.bool("once", t.Once)
	}
	if len(t.Input) > 0 {
		w.bytes("inl", t.Input)
	}
	return w.err
}
