package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

func explainCmd(g *globals) *cobra.Command {
	var (
		policy   workflow.RepairPolicy
		children int
	)
	cmd := &cobra.Command{
		Use:   "explain INSTANCE",
		Short: "Say what an instance waits for and since when: tasks, timers, signals, children, retries (reads only)",
		Long: `Reads the instance, its task queues, who is connected and its bulk
children, and says for every open step what it waits for and since when:
a task in JETFLOW_TASKS (delivered or not, ack pending, whether any worker
serves its task type), a timer (overdue, and when the repair loop fires
it), a signal, a bulk step's children, a retry and the error before it;
with the last error and when the repair loop may next act. It never
writes. The repair settings are the dispatchers' defaults unless given.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			x, err := explain(ctx, c, args[0], policy, children, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), x)
			}
			printExplanation(cmd.OutOrStdout(), x)
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&policy.StaleTask, "stale-task", 10*time.Minute, "the dispatchers' --stale-task")
	f.DurationVar(&policy.TimerGrace, "timer-grace", 5*time.Second, "how far past due the dispatchers' repair loop fires a timer")
	f.DurationVar(&policy.StaleBulk, "stale-bulk", 30*time.Second, "how long a bulk step may stand still before the repair loop reconciles it")
	f.DurationVar(&policy.StaleGate, "stale-gate", time.Minute, "the dispatchers' stale gate time: after it a wait for a slot or rate start is sent again")
	f.IntVar(&children, "children", 50, "read at most this many uncounted children of each bulk step")
	return cmd
}

// explain reads what workflow.Explain needs; what it cannot read it
// leaves out (and warns on w).
func explain(ctx context.Context, c *jetstream.Client, id string, policy workflow.RepairPolicy, maxChildren int, warn io.Writer) (workflow.Explanation, error) {
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
		readPresence(ctx, c, &f, warn)
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
func readPresence(ctx context.Context, c *jetstream.Client, f *workflow.ExplainFacts, warn io.Writer) {
	ws, err := c.Present(ctx, jetstream.PresenceWorker)
	if err == nil {
		var ds []jetstream.Presence
		ds, err = c.Present(ctx, jetstream.PresenceDispatcher)
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

func printExplanation(w io.Writer, x workflow.Explanation) {
	fmt.Fprintln(w, x.Summary)
	fmt.Fprintf(w, "  workflow %s version %d, created %s, last changed %s\n", x.Workflow, x.Version, x.Created.Format(time.RFC3339), x.Updated.Format(time.RFC3339))
	for _, wt := range x.Waits {
		fmt.Fprintf(w, "\nstep %s (%s) waits for %s since %s:\n  %s\n", wt.Step, wt.Kind, wt.For, wt.Since.Format(time.RFC3339), wt.Detail)
	}
	for _, n := range x.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
	if x.LastError != "" {
		where := ""
		if x.LastErrorStep != "" {
			where = " (step " + x.LastErrorStep + ")"
		}
		fmt.Fprintf(w, "\nlast error%s: %s\n", where, x.LastError)
	}
	if !x.NextRepair.IsZero() {
		fmt.Fprintf(w, "next repair due: %s\n", x.NextRepair.Format(time.RFC3339))
	}
	for _, p := range x.Problems {
		fmt.Fprintf(w, "PROBLEM: %s\n", p)
	}
}
