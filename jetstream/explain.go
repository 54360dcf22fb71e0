package jetstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jetflow/jetflow/workflow"
)

// Explain reads what workflow.Explain needs about instance id — its
// definition, the queues of the task types its open steps wait on, the
// task message of each running attempt, who is connected, and up to
// maxChildren uncounted children of each open bulk step — and returns
// what the instance waits for. What it cannot read it leaves out and
// says so on warn. It never writes. `jetflow explain` and the console
// use it.
func (c *Client) Explain(ctx context.Context, id string, policy workflow.RepairPolicy, maxChildren int, warn io.Writer) (workflow.Explanation, error) {
	inst, _, err := c.GetInstance(ctx, id)
	if err != nil {
		return workflow.Explanation{}, err
	}
	def, err := c.Definition(ctx, inst.Workflow, inst.Version)
	if err != nil {
		return workflow.Explanation{}, err
	}
	f := workflow.ExplainFacts{
		Now: time.Now(), Policy: policy,
		Tasks: map[string]workflow.TaskFacts{}, Attempts: map[string]workflow.AttemptFacts{},
		Children: map[string][]workflow.ChildFacts{}, Workers: map[string][]string{},
		Slots: map[string]workflow.SlotRecord{}, Child: map[string]workflow.ChildFacts{},
	}
	r := explainReader{c: c, inst: inst, f: &f, warn: warn}
	if inst.Gate == workflow.GateSlot {
		r.slot(ctx, inst.Slot)
	}
	if !inst.Status.Terminal() {
		c.readPresence(ctx, &f, warn)
		if len(workflow.PausedAttempts(inst)) > 0 {
			if st, err := c.PauseOf(ctx, inst.Workflow); err == nil {
				f.PausedKnown, f.Paused = true, st.Paused
			} else {
				fmt.Fprintf(warn, "cannot read the pause record of %s: %v\n", inst.Workflow, err)
			}
		}
	}
	for name, st := range inst.Steps {
		s, ok := def.Step(name)
		if !ok || inst.Status.Terminal() || (st.Status != workflow.StepRunning && st.Status != workflow.StepWaiting) {
			continue
		}
		var err error
		switch s.Kind {
		case workflow.KindTask:
			r.task(ctx, name, s, st)
		case workflow.KindWorkflow:
			err = r.child(ctx, name, s, st)
		case workflow.KindBulk:
			err = r.bulkChildren(ctx, name, s, st, maxChildren)
		}
		if err != nil {
			return workflow.Explanation{}, err
		}
	}
	return workflow.Explain(def, inst, f), nil
}

// explainReader gathers the facts of Explain about one instance's open
// steps. What it cannot read it leaves out and says so on warn; only an
// error reading a child instance fails the explanation.
type explainReader struct {
	c    *Client
	inst *workflow.Instance
	f    *workflow.ExplainFacts
	warn io.Writer
}

// slot reads the concurrency slot record key that the instance or one of
// its steps waits on.
func (r explainReader) slot(ctx context.Context, key string) {
	if key == "" || r.inst.Status.Terminal() {
		return
	}
	if rec, err := r.c.GetSlot(ctx, key); err == nil {
		r.f.Slots[key] = rec
	} else {
		fmt.Fprintf(r.warn, "cannot read slot record %s: %v\n", key, err)
	}
}

// task reads what task step name waits on: its task type's queue, the
// slot it waits for, or where the task message of its running attempt is.
func (r explainReader) task(ctx context.Context, name string, s *workflow.Step, st *workflow.StepState) {
	if _, done := r.f.Tasks[s.Task]; !done {
		if q, err := r.c.TaskQueue(ctx, s.Task); err == nil {
			r.f.Tasks[s.Task] = workflow.TaskFacts{Stored: q.Stored, Pending: q.Pending, AckPending: q.AckPending,
				Redelivered: q.Redelivered, PullsWaiting: q.PullsWaiting, Consumer: q.Consumer}
		} else {
			fmt.Fprintf(r.warn, "cannot read the %s task queue: %v\n", s.Task, err)
		}
	}
	if st.Gate == workflow.GateSlot {
		r.slot(ctx, st.Slot)
		return
	}
	if st.Gate != "" || st.Status != workflow.StepRunning {
		return
	}
	m, err := r.c.FindTask(ctx, s.Task, workflow.TaskMsgID(r.inst.ID, name, st.Attempt))
	if err != nil {
		fmt.Fprintf(r.warn, "cannot look for the task of step %s: %v\n", name, err)
		return
	}
	r.f.Attempts[name] = workflow.AttemptFacts{Searched: true, Found: m.Found, Stored: m.Stored, Delivered: m.Delivered, Ahead: m.Ahead}
}

// child reads the state of the child instance of workflow step name.
func (r explainReader) child(ctx context.Context, name string, s *workflow.Step, st *workflow.StepState) error {
	cf, err := r.childFacts(ctx, name, s, st.Attempt)
	if err != nil {
		return err
	}
	r.f.Child[name] = cf
	return nil
}

// bulkChildren reads the state of up to maxChildren children of bulk step
// name that its barriers do not count yet.
func (r explainReader) bulkChildren(ctx context.Context, name string, s *workflow.Step, st *workflow.StepState, maxChildren int) error {
	ok, failed, err := r.c.BarrierIndexes(ctx, r.inst.ID, name)
	if err != nil {
		fmt.Fprintf(r.warn, "cannot read the barriers of step %s: %v\n", name, err)
		return nil
	}
	for i := 0; i < st.Cursor && len(r.f.Children[name]) < maxChildren; i++ {
		if ok[i] || failed[i] {
			continue
		}
		cf, err := r.childFacts(ctx, name, s, i)
		if err != nil {
			return err
		}
		r.f.Children[name] = append(r.f.Children[name], cf)
	}
	return nil
}

// childFacts reads child index of step name; a child not started yet has
// no status.
func (r explainReader) childFacts(ctx context.Context, name string, s *workflow.Step, index int) (workflow.ChildFacts, error) {
	cf := workflow.ChildFacts{Index: index, ID: workflow.ChildInstanceID(s.Workflow, r.inst.ID, name, index)}
	child, _, err := r.c.GetInstance(ctx, cf.ID)
	switch {
	case err == nil:
		cf.Status, cf.Updated, cf.Error = child.Status, child.Updated, child.Error
	case !errors.Is(err, workflow.ErrNotFound):
		return workflow.ChildFacts{}, err
	}
	return cf, nil
}

// readPresence fills in who is connected, when the presence bucket can
// be read.
func (c *Client) readPresence(ctx context.Context, f *workflow.ExplainFacts, warn io.Writer) {
	ws, err := c.Present(ctx, PresenceWorker)
	if err == nil {
		var ds []Presence
		ds, err = c.Present(ctx, PresenceDispatcher)
		f.Dispatchers = len(ds)
	}
	if err != nil {
		fmt.Fprintf(warn, "cannot tell which workers and dispatchers are connected: %v\n", err)
		return
	}
	f.PresenceKnown = true
	for _, w := range ws {
		for _, t := range w.TaskTypes {
			f.Workers[t] = append(f.Workers[t], w.Name)
		}
	}
}
