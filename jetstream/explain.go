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
	readSlot := func(key string) {
		if key == "" || inst.Status.Terminal() {
			return
		}
		if rec, err := c.GetSlot(ctx, key); err == nil {
			f.Slots[key] = rec
		} else {
			fmt.Fprintf(warn, "cannot read slot record %s: %v\n", key, err)
		}
	}
	if inst.Gate == workflow.GateSlot {
		readSlot(inst.Slot)
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
		switch s.Kind {
		case workflow.KindTask:
			if _, done := f.Tasks[s.Task]; !done {
				if q, err := c.TaskQueue(ctx, s.Task); err == nil {
					f.Tasks[s.Task] = workflow.TaskFacts{Stored: q.Stored, Pending: q.Pending, AckPending: q.AckPending,
						Redelivered: q.Redelivered, PullsWaiting: q.PullsWaiting, Consumer: q.Consumer}
				} else {
					fmt.Fprintf(warn, "cannot read the %s task queue: %v\n", s.Task, err)
				}
			}
			if st.Gate == workflow.GateSlot {
				readSlot(st.Slot)
				continue
			}
			if st.Gate != "" {
				continue
			}
			if st.Status == workflow.StepRunning {
				m, err := c.FindTask(ctx, s.Task, workflow.TaskMsgID(inst.ID, name, st.Attempt))
				if err != nil {
					fmt.Fprintf(warn, "cannot look for the task of step %s: %v\n", name, err)
					continue
				}
				f.Attempts[name] = workflow.AttemptFacts{Searched: true, Found: m.Found, Stored: m.Stored, Delivered: m.Delivered, Ahead: m.Ahead}
			}
		case workflow.KindWorkflow:
			cf := workflow.ChildFacts{Index: st.Attempt, ID: workflow.ChildInstanceID(s.Workflow, inst.ID, name, st.Attempt)}
			child, _, err := c.GetInstance(ctx, cf.ID)
			switch {
			case err == nil:
				cf.Status, cf.Updated, cf.Error = child.Status, child.Updated, child.Error
			case !errors.Is(err, workflow.ErrNotFound):
				return workflow.Explanation{}, err
			}
			f.Child[name] = cf
		case workflow.KindBulk:
			ok, failed, err := c.BarrierIndexes(ctx, inst.ID, name)
			if err != nil {
				fmt.Fprintf(warn, "cannot read the barriers of step %s: %v\n", name, err)
				continue
			}
			for i := 0; i < st.Cursor && len(f.Children[name]) < maxChildren; i++ {
				if ok[i] || failed[i] {
					continue
				}
				cf := workflow.ChildFacts{Index: i, ID: workflow.ChildInstanceID(s.Workflow, inst.ID, name, i)}
				child, _, err := c.GetInstance(ctx, cf.ID)
				switch {
				case err == nil:
					cf.Status, cf.Updated, cf.Error = child.Status, child.Updated, child.Error
				case !errors.Is(err, workflow.ErrNotFound):
					return workflow.Explanation{}, err
				}
				f.Children[name] = append(f.Children[name], cf)
			}
		}
	}
	return workflow.Explain(def, inst, f), nil
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
