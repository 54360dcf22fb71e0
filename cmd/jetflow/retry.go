package main

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// retryResult is one instance's outcome of jetflow retry, as --json
// prints it.
type retryResult struct {
	Instance string   `json:"instance"`
	Workflow string   `json:"workflow"`
	Status   string   `json:"status"`
	Steps    []string `json:"steps,omitempty"`
	// Result: retried, would_retry (--dry-run), skipped.
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"`
}

func retryCmd(g *globals) *cobra.Command {
	var (
		from, wf, status string
		since            time.Duration
		dryRun           bool
	)
	cmd := &cobra.Command{
		Use:   "retry [INSTANCE]",
		Short: "Continue a failed or cancelled instance from its failed step (same id, history kept)",
		Long: `Continues a failed or cancelled instance with the same id: the steps that
failed (without an on_failure step taking over), and the task, sleep and wait
steps that were still running when it ended, start fresh attempts; with
--from STEP that step is activated anew and the chain goes on from it. Earlier
attempts stay in the instance; a late result of an old attempt is ignored.
The retry is an event the dispatchers apply like any other (read, apply,
compare-and-swap) and is applied once however often it is sent.

With --workflow (and --status, default failed; --since) it retries every
matching instance, with progress on stderr and a summary.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (wf != "") {
				return fmt.Errorf("name one instance, or select instances with --workflow")
			}
			ctx := cmd.Context()
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			var targets []*workflow.Instance
			if len(args) == 1 {
				inst, _, err := c.GetInstance(ctx, args[0])
				if err != nil {
					return fmt.Errorf("instance %s: %w", args[0], err)
				}
				targets = append(targets, inst)
			} else {
				if status == "" {
					status = string(workflow.StatusFailed)
				}
				targets, err = selectInstances(cmd, c, wf, status, since)
				if err != nil {
					return err
				}
			}
			results, err := retryEach(cmd, c, targets, from, dryRun)
			if err != nil {
				return err
			}
			if len(args) == 1 && results[0].Result == "skipped" {
				return fmt.Errorf("instance %s cannot be retried: %s", args[0], results[0].Reason)
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), results)
			}
			printRetry(cmd.OutOrStdout(), results)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "continue from this step instead of the failed ones")
	f.StringVar(&wf, "workflow", "", "retry every instance of this workflow that --status and --since select")
	f.StringVar(&status, "status", "", "with --workflow: instances in this status (failed or cancelled; default failed)")
	f.DurationVar(&since, "since", 0, "with --workflow: only instances that ended within this long (0: any)")
	f.BoolVar(&dryRun, "dry-run", false, "show what would be retried, change nothing")
	return cmd
}

// retryEach retries each of targets (from step from, when set) unless
// workflow.Retryable says why not, with progress on stderr, and returns
// what became of each (with dryRun, what would).
func retryEach(cmd *cobra.Command, c *jetstream.Client, targets []*workflow.Instance, from string, dryRun bool) ([]retryResult, error) {
	ctx := cmd.Context()
	p := newProgress(cmd.ErrOrStderr(), "retry", len(targets))
	var results []retryResult
	for _, inst := range targets {
		r := retryResult{Instance: inst.ID, Workflow: inst.Workflow, Status: string(inst.Status)}
		def, err := c.Definition(ctx, inst.Workflow, inst.Version)
		if err != nil {
			return nil, fmt.Errorf("definition of %s: %w", inst.ID, err)
		}
		steps, why := workflow.Retryable(def, inst, from)
		r.Steps = steps
		switch {
		case why != "":
			r.Result, r.Reason = "skipped", why
		case dryRun:
			r.Result = "would_retry"
		default:
			if err := c.Retry(ctx, inst, from); err != nil {
				return nil, err
			}
			r.Result = "retried"
		}
		results = append(results, r)
		p.step()
	}
	p.done()
	return results, nil
}

// selectInstances lists the instances of workflow wf in status that ended
// (or last changed) within since (0: any), oldest first.
func selectInstances(cmd *cobra.Command, c *jetstream.Client, wf, status string, since time.Duration) ([]*workflow.Instance, error) {
	all, err := c.Instances(cmd.Context(), jetstream.InstanceFilter{Workflow: wf, Status: workflow.Status(status)})
	if err != nil {
		return nil, err
	}
	var out []*workflow.Instance
	for _, inst := range all {
		when := inst.Ended
		if when.IsZero() {
			when = inst.Updated
		}
		if since <= 0 || time.Since(when) <= since {
			out = append(out, inst)
		}
	}
	slices.Reverse(out) // Instances is newest first
	return out, nil
}

func printRetry(w io.Writer, rs []retryResult) {
	counts := map[string]int{}
	for _, r := range rs {
		counts[r.Result]++
		switch r.Result {
		case "skipped":
			fmt.Fprintf(w, "%s: skipped: %s\n", r.Instance, r.Reason)
		default:
			fmt.Fprintf(w, "%s: %s from %v\n", r.Instance, r.Result, r.Steps)
		}
	}
	if len(rs) > 1 {
		fmt.Fprintf(w, "%d selected: retried %d, would retry %d, skipped %d\n", len(rs), counts["retried"], counts["would_retry"], counts["skipped"])
	}
}
