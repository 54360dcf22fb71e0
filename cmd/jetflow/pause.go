package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/jetstream"
)

// pauseResult is what jetflow pause and resume print with --json.
type pauseResult struct {
	Workflow string `json:"workflow"`
	Paused   bool   `json:"paused"`
	// Result: paused, resumed, already_paused, not_paused.
	Result   string    `json:"result"`
	Since    time.Time `json:"since,omitzero"`
	Revision uint64    `json:"revision"`
	jetstream.PauseConfirmation
}

func pauseCmds(g *globals) []*cobra.Command {
	mk := func(use, short, long string, paused bool) *cobra.Command {
		var wait time.Duration
		cmd := &cobra.Command{
			Use:   use + " WORKFLOW",
			Short: short,
			Long:  long,
			Args:  cobra.ExactArgs(1),
			RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, args []string) error {
				ctx := cmd.Context()
				wf := args[0]
				defs, err := c.Definitions(ctx)
				if err != nil {
					return err
				}
				if known := latest(defs); known[wf] == nil {
					return fmt.Errorf("%w %s (registered: %s)", errUnknownWorkflow, wf, listOrNone(slices.Sorted(maps.Keys(known))))
				}
				st, changed, err := c.SetPaused(ctx, wf, paused, time.Now())
				if err != nil {
					return err
				}
				r := pauseResult{Workflow: wf, Paused: paused, Since: st.Since, Revision: st.Revision}
				r.Result = pauseOutcome(paused, changed)
				if wait > 0 && st.Revision > 0 {
					if r.PauseConfirmation, err = c.AwaitPause(ctx, st.Revision, wait); err != nil {
						return err
					}
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), r)
				}
				printPause(cmd, r, wait)
				return nil
			}),
		}
		cmd.Flags().DurationVar(&wait, "wait", 5*time.Second, "wait at most this long until every running dispatcher applied it (0: do not wait)")
		return cmd
	}
	return []*cobra.Command{
		mk("pause", "Hold every new task of a workflow's instances until resumed (triggers are still accepted)",
			`Pauses a workflow: its triggers are still accepted and its instances created,
and running tasks finish, but no new task attempt of its instances is
dispatched: an attempt that is to start (the first step, the step after a
finished one, a retry, the step after a sleep or a signal) waits at the pause
gate, with no timeout running, until the workflow is resumed. Timers still
fire. Child instances (bulk and workflow steps) are held by their own
workflow's pause. Tasks already in the task queue when the pause is applied
still run.

The command waits (--wait) until every running dispatcher reports that it
applied the pause, so no attempt that starts after the command returns is
dispatched. Pausing a paused workflow changes nothing and says so.`, true),
		mk("resume", "Release the tasks a paused workflow holds and dispatch new ones again",
			`Resumes a paused workflow: every attempt held by the pause is released (its
task is published, after its concurrency and rate limits, if any), and new
attempts start as usual. Nothing held is lost or run twice. Resuming a
workflow that is not paused changes nothing and says so.`, false),
	}
}

// pauseOutcome names what a pause or resume did (pauseResult.Result).
func pauseOutcome(paused, changed bool) string {
	switch {
	case changed && paused:
		return "paused"
	case changed:
		return "resumed"
	case paused:
		return "already_paused"
	}
	return "not_paused"
}

// printPause prints r as text, with what the dispatchers confirmed when
// the command waited for them.
func printPause(cmd *cobra.Command, r pauseResult, wait time.Duration) {
	out, wf := cmd.OutOrStdout(), r.Workflow
	switch r.Result {
	case "paused":
		fmt.Fprintf(out, "workflow %s paused: its instances keep being created; no new task of them is dispatched until jetflow resume %s\n", wf, wf)
	case "resumed":
		fmt.Fprintf(out, "workflow %s resumed: the attempts it held are released\n", wf)
	case "already_paused":
		fmt.Fprintf(out, "workflow %s was already paused (since %s); nothing changed\n", wf, r.Since.Format(time.RFC3339))
	case "not_paused":
		fmt.Fprintf(out, "workflow %s is not paused; nothing changed\n", wf)
	}
	switch {
	case wait <= 0:
	case len(r.Unconfirmed) > 0:
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: not confirmed within %s by dispatcher(s) %s: each applies it as soon as its watch delivers it (a dispatcher that stopped drops out of the list when its presence record expires)\n",
			wait, strings.Join(r.Unconfirmed, ", "))
	case len(r.Confirmed) == 0:
		fmt.Fprintln(cmd.ErrOrStderr(), "warning: no dispatcher is running; the next one to start applies it before its first event")
	default:
		fmt.Fprintf(out, "applied by every dispatcher (%s)\n", strings.Join(r.Confirmed, ", "))
	}
}
