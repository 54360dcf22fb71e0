package workflow_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/workflow"
)

// anyData answers every key: inputs and outputs of fuzzed definitions are
// unknown, so every load returns an empty object.
type anyData struct{}

func (anyData) Load(string) (any, error) { return map[string]any{}, nil }

func FuzzParse(f *testing.F) {
	seeds := []string{
		validYAML,
		validJSON,
		chainDef,
		parallelDef,
		switchDef,
		retryDef,
		onFailureDef,
		"",
		"name: w\nversion: 1\nsteps: []\n",
		def("{name: a, kind: task, task: t, nxt: b}"),
		def("{name: a, kind: task, task: t, next: b}", "{name: b, kind: task, task: t, next: a}"),
		def("{name: p, kind: parallel, branches: [a], next: z}", "{name: a, kind: task, task: t, next: z}", "{name: z, kind: task, task: t}"),
		def("{name: a, kind: task, task: t, input: 'now()'}"),
		def("{name: a, kind: task, task: t, timeout: 5}"),
		def("{name: s, kind: switch, cases: [{when: 'input.x ==', next: a}]}", okStep),
		trig("jetflow.x", "id"),
		trig("orders.created", "'header:'"),
		def("{name: b, kind: bulk, workflow: child, items: '[1, 2, 3]', max_in_flight: 2, next: a}", okStep),
		def("{name: b, kind: bulk, workflow: child, items: 'input.list'}"),
		"name: w\nversion: 1\nschedules:\n  - {name: n, cron: '0 0 2 * * *', timezone: Europe/Berlin, input: '{\"a\": 1}', overlap: skip}\n  - {name: e, cron: '@every 30s', overlap: allow}\nsteps:\n  - {name: a, kind: task, task: t}\n",
		"name: w\nversion: 1\nschedules:\n  - {name: n, cron: '@weekly', timezone: Nowhere}\n  - {name: n, cron: '61 * * * * *'}\nsteps:\n  - {name: a, kind: task, task: t}\n",
		"name: w\nversion: 1\ntrigger: {subject: a.b, key: id, debounce: 5s, max_wait: 1m}\nsteps:\n  - {name: a, kind: task, task: t}\n",
		"name: w\nversion: 1\ntrigger: {subject: a.b, key: id, debounce: 0s, max_wait: 1s}\nsteps:\n  - {name: a, kind: task, task: t}\n",
		"name: &a [*a]",
		"{\"name\": 1, \"steps\": {}}",
		"\xff\xfe\x00",
	}
	for _, name := range []string{"order/definition.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		require.NoError(f, err)
		seeds = append(seeds, string(b))
	}
	if b, err := os.ReadFile(filepath.Join("..", "examples", "order-processing.yaml")); err == nil {
		seeds = append(seeds, string(b))
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		d, err := workflow.Parse("fuzz.yaml", src)
		if err != nil {
			require.Nil(t, d)
			require.ErrorIs(t, err, workflow.ErrInvalidDefinition)
			require.ErrorContains(t, err, "fuzz.yaml")
			return
		}
		require.NotNil(t, d)
		_, ok := d.Step(d.StartStep())
		require.True(t, ok, "start step %q not found", d.StartStep())
		driveToEnd(t, d)
	})
}

// driveToEnd runs an instance of a valid definition with every task and
// every bulk child succeeding; it must end, and must end once.
func driveToEnd(t *testing.T, d *workflow.Definition) {
	t.Helper()
	dec, err := workflow.Apply(d, nil, workflow.Event{Kind: workflow.EventStart, Instance: "i", InputRef: "i.in"}, t0, anyData{})
	require.NoError(t, err)
	inst := dec.Instance
	apply := func(ev workflow.Event) {
		t.Helper()
		ev.Instance = "i"
		dec, err := workflow.Apply(d, inst, ev, t0, anyData{})
		require.NoError(t, err)
		requireForward(t, inst, dec.Instance)
		inst = dec.Instance
	}
	childDone := map[workflow.ParentRef]bool{} // the dispatcher's barrier
	for range 100_000 {
		if inst.Status.Terminal() {
			return
		}
		out := workflow.Outstanding(d, inst)
		progress := false
		for _, tk := range out.Tasks {
			apply(workflow.Event{Kind: workflow.EventResult, Step: tk.Step, Attempt: tk.Attempt, OutputRef: "o"})
			progress = true
		}
		for _, ch := range out.Children {
			if !childDone[ch.Parent] {
				childDone[ch.Parent] = true
				apply(workflow.Event{Kind: workflow.EventChildDone, Step: ch.Parent.Step, Index: ch.Parent.Index, ChildStatus: workflow.StatusCompleted})
				progress = true
			}
		}
		for _, oe := range out.Events {
			if oe.Event.Kind == workflow.EventContinue {
				apply(oe.Event)
				progress = true
			}
		}
		require.True(t, progress, "instance %s with nothing in flight", inst.Status)
	}
	require.True(t, inst.Status.Terminal(), "instance still %s after every step ran", inst.Status)
}

// FuzzApply decodes the fuzz input into events against the order
// definition of testdata; Apply must not panic, fail, modify its input or
// move the instance backwards.
//
// Each event takes three bytes: what (kind and outcome), which step, and
// an attempt plus a time step.
func FuzzApply(f *testing.F) {
	d := loadOrderDefinition(f)
	steps := make([]string, 0, len(d.Steps)+1)
	for _, s := range d.Steps {
		steps = append(steps, s.Name)
	}
	steps = append(steps, "ghost")
	index := map[string]byte{}
	for i, s := range steps {
		index[s] = byte(i)
	}
	ok := func(step string, attempt byte) []byte { return []byte{0, index[step], attempt} }
	fail := func(step string, attempt byte) []byte { return []byte{4, index[step], attempt} }
	timer := func(kind byte, step string, attempt byte) []byte { return []byte{5, index[step], kind<<4 | attempt} }
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	const retry, timeout = 0, 1
	f.Add([]byte{})
	f.Add(cat(ok("validate", 1), ok("charge-card", 1), ok("reserve-stock", 1), ok("manual-review", 1), ok("ship", 1)))
	f.Add(cat(ok("validate", 1), fail("charge-card", 1), timer(retry, "charge-card", 2), ok("charge-card", 1), ok("charge-card", 2),
		timer(timeout, "reserve-stock", 1), ok("reserve-stock", 1), timer(retry, "reserve-stock", 2), ok("reserve-stock", 2), ok("ship", 1)))
	f.Add(cat(fail("validate", 1), timer(retry, "validate", 2), []byte{6, 0, 0}, fail("validate", 2), timer(retry, "validate", 3), fail("validate", 3), ok("reject", 1)))
	f.Add(cat(ok("validate", 1), ok("validate", 1), []byte{7, 0, 0}, ok("charge-card", 1)))
	f.Add(cat(ok("validate", 1), []byte{3, 2, 0xff}, []byte{5, 9, 0x2f}, ok("ghost", 1)))

	f.Fuzz(func(t *testing.T, in []byte) {
		const id = "order-processing-fuzz"
		data := memData{workflow.InputKey(id): map[string]any{"orderId": "o", "amount": 10, "sku": "s", "qty": 1}}
		now := t0
		dec, err := workflow.Apply(d, nil, workflow.Event{Kind: workflow.EventStart, Instance: id, InputRef: workflow.InputKey(id)}, now, data)
		require.NoError(t, err)
		inst := dec.Instance
		emitted := map[string]map[int]bool{}
		record := func(tasks []workflow.Task) {
			for _, tk := range tasks {
				if emitted[tk.Step] == nil {
					emitted[tk.Step] = map[int]bool{}
				}
				require.False(t, emitted[tk.Step][tk.Attempt], "attempt %d of %q emitted twice", tk.Attempt, tk.Step)
				emitted[tk.Step][tk.Attempt] = true
			}
		}
		record(dec.Tasks)
		finished := 0
		for len(in) >= 3 {
			what, which, arg := in[0], in[1], in[2]
			in = in[3:]
			step := steps[int(which)%len(steps)]
			attempt := int(arg & 0x0f)
			now = now.Add(time.Duration(arg) * time.Second)
			ev := workflow.Event{Instance: id, Step: step, Attempt: attempt}
			switch what % 8 {
			case 0, 1, 2, 3:
				ev.Kind = workflow.EventResult
				ev.OutputRef = workflow.OutputKey(id, step, attempt)
				data[ev.OutputRef] = map[string]any{"amount": float64(what) * 10}
			case 4:
				ev.Kind, ev.Error, ev.Permanent = workflow.EventResult, "failed", what&0x80 != 0
				ev.RetryAfter = time.Duration(what>>4) * time.Second
			case 5:
				ev.Kind = workflow.EventTimer
				ev.Timer = [...]string{"retry.", "timeout.", "bogus.", ""}[arg>>4&3] + step + "." + string(rune('0'+attempt%10))
			case 6:
				ev.Kind, ev.EventKey = workflow.EventStart, "dup"
			case 7:
				// Cancels are rare, or nothing else gets explored; bulk
				// events address steps that are not bulk steps here.
				ev.Kind = [...]workflow.EventKind{workflow.EventCancel, workflow.EventGrant, workflow.EventResult, workflow.EventResult,
					workflow.EventChildDone, workflow.EventContinue, workflow.EventRecount, "bogus"}[which%8]
				ev.Gate = [...]string{workflow.GateSlot, workflow.GateRate, "", "x"}[arg>>4&3]
				ev.Denied = what&0x40 != 0
				ev.Index, ev.Completed, ev.Failed = attempt, attempt, int(what>>4)
				ev.ChildStatus = workflow.StatusCompleted
			}
			before := inst.Clone()
			dec, err := workflow.Apply(d, inst, ev, now, data)
			require.NoError(t, err)
			require.Equal(t, before, inst, "Apply modified its input")
			requireForward(t, inst, dec.Instance)
			if !dec.Changed {
				require.Same(t, inst, dec.Instance)
				require.Empty(t, dec.Tasks)
				require.Empty(t, dec.Timers)
				continue
			}
			require.Empty(t, dec.Children, "no bulk step in this definition")
			require.False(t, inst.Status.Terminal())
			if dec.Instance.Status.Terminal() {
				finished++
				require.Equal(t, 1, finished)
			}
			record(dec.Tasks)
			for _, w := range dec.Writes {
				data[w.Key] = w.Value
			}
			inst = dec.Instance
		}
		for _, tk := range workflow.Outstanding(d, inst).Tasks {
			require.True(t, emitted[tk.Step][tk.Attempt], "Outstanding invented attempt %d of %q", tk.Attempt, tk.Step)
		}
	})
}
