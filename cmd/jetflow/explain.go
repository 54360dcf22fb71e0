package main

import (
	"context"
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
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, args []string) error {
			ctx := cmd.Context()
			x, err := explain(ctx, c, args[0], policy, children, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), x)
			}
			printExplanation(cmd.OutOrStdout(), x)
			return nil
		}),
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
	return c.Explain(ctx, id, policy, maxChildren, warn)
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
