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

// fieldWriter writes the entries of a msgpack map. An encoder lists its
// fields once, as calls on a fieldWriter inside `for w.pass() { ... }`,
// and the loop runs that list twice: first counting the entries (msgpack
// writes a map's length before its entries), then writing them. The
// methods ending in Omit leave a zero value out, as the omitempty tag
// does. The first error is kept. (A closure holding the list would be
// simpler to call but puts the writer on the heap: 4 more allocations
// per instance.)
type fieldWriter struct {
	e        *msgpack.Encoder
	passes   int
	counting bool
	n        int
	err      error
}

// pass starts the counting pass, then the writing pass, then ends the
// loop.
func (w *fieldWriter) pass() bool {
	w.passes++
	switch w.passes {
	case 1:
		w.counting = true
		return true
	case 2:
		w.counting = false
		if w.err == nil {
			w.err = w.e.EncodeMapLen(w.n)
		}
		return w.err == nil
	}
	return false
}

// key counts an entry or writes its key; it reports whether the caller
// writes the value now.
func (w *fieldWriter) key(k string) bool {
	if w.counting {
		w.n++
		return false
	}
	if w.err == nil {
		w.err = w.e.EncodeString(k)
	}
	return w.err == nil
}

func (w *fieldWriter) str(k, v string) {
	if w.key(k) {
		w.err = w.e.EncodeString(v)
	}
}

func (w *fieldWriter) strOmit(k, v string) {
	if v != "" {
		w.str(k, v)
	}
}

func (w *fieldWriter) int(k string, v int) {
	if w.key(k) {
		w.err = w.e.EncodeInt(int64(v))
	}
}

func (w *fieldWriter) intOmit(k string, v int) {
	if v != 0 {
		w.int(k, v)
	}
}

// uint64 writes all 9 bytes, as the reflective encoder does for uint64
// fields (it compacts int fields, not uint64 ones).
func (w *fieldWriter) uint64(k string, v uint64) {
	if w.key(k) {
		w.err = w.e.EncodeUint64(v)
	}
}

func (w *fieldWriter) uint64Omit(k string, v uint64) {
	if v != 0 {
		w.uint64(k, v)
	}
}

// int64Omit writes all 9 bytes, as the reflective encoder does for int64
// kinds (time.Duration).
func (w *fieldWriter) int64Omit(k string, v int64) {
	if v != 0 && w.key(k) {
		w.err = w.e.EncodeInt64(v)
	}
}

func (w *fieldWriter) boolOmit(k string, v bool) {
	if v && w.key(k) {
		w.err = w.e.EncodeBool(v)
	}
}

func (w *fieldWriter) bytesOmit(k string, v []byte) {
	if len(v) > 0 && w.key(k) {
		w.err = w.e.EncodeBytes(v)
	}
}

func (w *fieldWriter) time(k string, v time.Time) {
	if w.key(k) {
		w.err = w.e.EncodeTime(v)
	}
}

func (w *fieldWriter) timeOmit(k string, v time.Time) {
	if !v.IsZero() {
		w.time(k, v)
	}
}

func (w *fieldWriter) parentOmit(k string, p *workflow.ParentRef) {
	if p != nil && w.key(k) {
		pw := fieldWriter{e: w.e}
		for pw.pass() {
			pw.str("id", p.ID)
			pw.str("s", p.Step)
			pw.int("i", p.Index)
		}
		w.err = pw.err
	}
}

func (w *fieldWriter) historyOmit(k string, h []workflow.AttemptRecord) {
	if len(h) == 0 || !w.key(k) {
		return
	}
	if w.err = w.e.EncodeArrayLen(len(h)); w.err != nil {
		return
	}
	for i := range h {
		a := &h[i]
		aw := fieldWriter{e: w.e}
		for aw.pass() {
			aw.int("n", a.Attempt)
			aw.time("s", a.Started)
			aw.time("e", a.Ended)
			aw.strOmit("w", a.Worker)
			aw.strOmit("err", a.Error)
		}
		if w.err = aw.err; w.err != nil {
			return
		}
	}
}

func encodeInstance(e *msgpack.Encoder, in *workflow.Instance) error {
	w := fieldWriter{e: e}
	for w.pass() {
		w.str("id", in.ID)
		w.str("wf", in.Workflow)
		w.int("v", in.Version)
		w.str("key", in.EventKey)
		w.str("in", in.InputRef)
		w.strOmit("dig", in.InputDigest)
		w.str("st", string(in.Status))
		w.strOmit("out", in.OutputRef)
		w.strOmit("err", in.Error)
		w.time("c", in.Created)
		w.time("u", in.Updated)
		w.timeOmit("e", in.Ended)
		w.uint64("n", in.Events)
		if w.key("steps") {
			w.err = encodeSteps(e, in.Steps)
		}
		if len(in.Timers) > 0 && w.key("timers") {
			tw := fieldWriter{e: e}
			for tw.pass() {
				for id, at := range in.Timers {
					tw.time(id, at)
				}
			}
			w.err = tw.err
		}
		w.parentOmit("parent", in.Parent)
		if len(in.Signals) > 0 && w.key("sig") {
			sw := fieldWriter{e: e}
			for sw.pass() {
				for name, ref := range in.Signals {
					sw.str(name, ref)
				}
			}
			w.err = sw.err
		}
		w.uint64Omit("tseq", in.TriggerSeq)
		w.intOmit("run", in.Run)
		w.strOmit("tp", in.Trace)
		w.strOmit("slot", in.Slot)
		w.strOmit("gate", in.Gate)
		if len(in.Resume) > 0 && w.key("res") {
			w.err = e.Encode(in.Resume)
		}
		w.intOmit("rt", in.Retries)
	}
	return w.err
}

// encodeSteps writes the steps map (nil as msgpack nil, as reflection
// does for a nil map that is not omitempty).
func encodeSteps(e *msgpack.Encoder, steps map[string]*workflow.StepState) error {
	if steps == nil {
		return e.EncodeNil()
	}
	if err := e.EncodeMapLen(len(steps)); err != nil {
		return err
	}
	for name, st := range steps {
		if err := e.EncodeString(name); err != nil {
			return err
		}
		if err := encodeStepState(e, st); err != nil {
			return err
		}
	}
	return nil
}

func encodeStepState(e *msgpack.Encoder, st *workflow.StepState) error {
	if st == nil {
		return e.EncodeNil()
	}
	w := fieldWriter{e: e}
	for w.pass() {
		w.str("st", string(st.Status))
		w.intOmit("a", st.Attempt)
		w.intOmit("p", st.Pending)
		w.strOmit("in", st.InputRef)
		w.strOmit("out", st.OutputRef)
		w.strOmit("err", st.Error)
		w.time("s", st.Started)
		w.timeOmit("e", st.Ended)
		w.timeOmit("as", st.AttemptStarted)
		w.historyOmit("h", st.History)
		w.intOmit("tot", st.Total)
		w.intOmit("cur", st.Cursor)
		w.intOmit("cf", st.ChunkFrom)
		w.intOmit("done", st.Done)
		w.intOmit("cfail", st.ChildFailed)
		w.intOmit("rc", st.Recounts)
		w.timeOmit("mv", st.Moved)
		w.strOmit("slot", st.Slot)
		w.strOmit("rate", st.Rate)
		w.strOmit("gate", st.Gate)
		w.timeOmit("gs", st.GateSince)
		w.strOmit("held", st.Held)
	}
	return w.err
}

func encodeEvent(e *msgpack.Encoder, ev *workflow.Event) error {
	w := fieldWriter{e: e}
	for w.pass() {
		w.str("k", string(ev.Kind))
		w.str("i", ev.Instance)
		w.strOmit("wf", ev.Workflow)
		w.intOmit("v", ev.Version)
		w.strOmit("key", ev.EventKey)
		w.strOmit("in", ev.InputRef)
		w.strOmit("dig", ev.InputDigest)
		w.uint64Omit("tseq", ev.TriggerSeq)
		w.intOmit("run", ev.Run)
		w.strOmit("s", ev.Step)
		w.intOmit("a", ev.Attempt)
		w.strOmit("out", ev.OutputRef)
		w.strOmit("err", ev.Error)
		w.strOmit("tok", ev.Token)
		w.boolOmit("perm", ev.Permanent)
		w.int64Omit("ra", int64(ev.RetryAfter))
		w.strOmit("w", ev.Worker)
		w.strOmit("t", ev.Timer)
		w.strOmit("r", ev.Reason)
		w.parentOmit("par", ev.Parent)
		w.intOmit("idx", ev.Index)
		w.strOmit("cst", string(ev.ChildStatus))
		w.strOmit("sig", ev.Signal)
		w.intOmit("cc", ev.Completed)
		w.intOmit("cf", ev.Failed)
		w.strOmit("rnd", ev.Round)
		w.strOmit("tp", ev.Trace)
		w.strOmit("g", ev.Gate)
		w.boolOmit("den", ev.Denied)
		w.timeOmit("gat", ev.GateAt)
	}
	return w.err
}

func encodeTask(e *msgpack.Encoder, t *workflow.Task) error {
	w := fieldWriter{e: e}
	for w.pass() {
		w.str("i", t.Instance)
		w.str("wf", t.Workflow)
		w.int("v", t.Version)
		w.str("s", t.Step)
		w.str("t", t.Type)
		w.int("a", t.Attempt)
		w.str("in", t.InputRef)
		w.str("ek", t.EffectKey)
		w.int64Omit("to", int64(t.Timeout))
		w.intOmit("ma", t.MaxAttempts)
		w.boolOmit("once", t.Once)
		w.bytesOmit("inl", t.Input)
		w.strOmit("tp", t.Trace)
		w.strOmit("tok", t.Token)
	}
	return w.err
}
