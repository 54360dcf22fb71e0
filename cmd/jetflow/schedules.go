package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// scheduleRow is one schedule as `jetflow schedules --json` prints it.
type scheduleRow struct {
	Workflow string `json:"workflow"`
	Version  int    `json:"version"`
	Name     string `json:"name"`
	Cron     string `json:"cron"`
	Timezone string `json:"timezone,omitempty"`
	Overlap  string `json:"overlap"`
	// Installed: the server holds the schedule (a dispatcher synced it).
	Installed bool `json:"installed"`
	Paused    bool `json:"paused"`
	// NextFire is the next fire time (RFC 3339 UTC); empty when unknown:
	// an @every schedule that has not fired yet.
	NextFire     string `json:"next_fire,omitempty"`
	LastFire     string `json:"last_fire,omitempty"`
	LastInstance string `json:"last_instance,omitempty"`
	Started      uint64 `json:"started"`
	Skipped      uint64 `json:"skipped"`
}

// nextFire is a schedule's next fire time after now: from the pattern for
// cron; for @every, from the server's next fire time of the last fire
// seen, in steps of the interval.
func nextFire(s *workflow.Schedule, st workflow.ScheduleState, now time.Time) time.Time {
	spec, err := s.Spec()
	if err != nil {
		return time.Time{}
	}
	if every := spec.Every(); every > 0 {
		if st.Next.IsZero() {
			return time.Time{}
		}
		n := st.Next
		if !n.After(now) {
			n = n.Add((now.Sub(n)/every + 1) * every)
		}
		return n
	}
	n, err := spec.Next(now)
	if err != nil {
		return time.Time{}
	}
	return n
}

func schedulesCmd(g *globals) *cobra.Command {
	var wf string
	cmd := &cobra.Command{
		Use:   "schedules",
		Short: "List the schedules of the latest definitions with their next fire times",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, _ []string) error {
			ctx := cmd.Context()
			rows, err := scheduleRows(ctx, c, wf, time.Now())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			return printSchedules(cmd.OutOrStdout(), rows)
		}),
	}
	cmd.Flags().StringVar(&wf, "workflow", "", "only this workflow")
	return cmd
}

func scheduleRows(ctx context.Context, c *jetstream.Client, wf string, now time.Time) ([]scheduleRow, error) {
	defs, err := c.Definitions(ctx)
	if err != nil {
		return nil, err
	}
	installed, err := c.InstalledSchedules(ctx, wf)
	if err != nil {
		return nil, err
	}
	isInstalled := map[string]bool{}
	for _, h := range installed {
		isInstalled[h.Workflow+"."+h.Name] = !h.Removed
	}
	rows := []scheduleRow{}
	latest := latest(defs)
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range latest {
			if !yield(n) {
				return
			}
		}
	}) {
		def := latest[name]
		if wf != "" && def.Name != wf {
			continue
		}
		for i := range def.Schedules {
			s := &def.Schedules[i]
			st, _, err := c.ScheduleState(ctx, def.Name, s.Name)
			if err != nil {
				return nil, err
			}
			r := scheduleRow{
				Workflow: def.Name, Version: def.Version, Name: s.Name, Cron: s.Cron, Timezone: s.Timezone,
				Overlap: s.Overlap, Installed: isInstalled[def.Name+"."+s.Name], Paused: st.Paused,
				LastInstance: st.Last, Started: st.Started, Skipped: st.Skipped,
			}
			if r.Overlap == "" {
				r.Overlap = workflow.OverlapSkip
			}
			if n := nextFire(s, st, now); !n.IsZero() {
				r.NextFire = n.UTC().Format(time.RFC3339)
			}
			if !st.LastFire.IsZero() {
				r.LastFire = st.LastFire.UTC().Format(time.RFC3339)
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func printSchedules(w io.Writer, rows []scheduleRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKFLOW\tSCHEDULE\tCRON\tTIME ZONE\tOVERLAP\tSTATE\tNEXT FIRE\tLAST FIRE\tLAST INSTANCE")
	for _, r := range rows {
		state := "active"
		switch {
		case !r.Installed:
			state = "not installed (no dispatcher synced it yet)"
		case r.Paused:
			state = "paused"
		}
		fmt.Fprintf(tw, "%s@%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Workflow, r.Version, r.Name, r.Cron, orDash(r.Timezone), r.Overlap, state,
			orDash(r.NextFire), orDash(r.LastFire), orDash(r.LastInstance))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

var errUnknownSchedule = errors.New("unknown schedule")

func scheduleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Pause, resume or trigger a schedule",
	}
	action := func(use, short string, do func(ctx context.Context, c *jetstream.Client, wf, name string) (string, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " WORKFLOW SCHEDULE",
			Short: short,
			Args:  cobra.ExactArgs(2),
			RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, args []string) error {
				ctx := cmd.Context()
				defs, err := c.Definitions(ctx)
				if err != nil {
					return err
				}
				def := latest(defs)[args[0]]
				if def == nil {
					return fmt.Errorf("%w %s", errUnknownWorkflow, args[0])
				}
				if _, ok := def.Schedule(args[1]); !ok {
					names := make([]string, 0, len(def.Schedules))
					for _, s := range def.Schedules {
						names = append(names, s.Name)
					}
					return fmt.Errorf("%w %q in %s@%d (its schedules: %s)", errUnknownSchedule, args[1], def.Name, def.Version, listOrNone(names))
				}
				msg, err := do(ctx, c, args[0], args[1])
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(cmd.OutOrStdout(), map[string]string{"workflow": args[0], "schedule": args[1], "result": msg})
				}
				fmt.Fprintln(cmd.OutOrStdout(), msg)
				return nil
			}),
		}
	}
	cmd.AddCommand(
		action("pause", "Skip the schedule's fires until resumed", func(ctx context.Context, c *jetstream.Client, wf, name string) (string, error) {
			return "paused", c.SetSchedulePaused(ctx, wf, name, true)
		}),
		action("resume", "Let a paused schedule start runs again", func(ctx context.Context, c *jetstream.Client, wf, name string) (string, error) {
			return "resumed", c.SetSchedulePaused(ctx, wf, name, false)
		}),
		action("trigger", "Start a run of the schedule now (also while paused; overlap applies)", func(ctx context.Context, c *jetstream.Client, wf, name string) (string, error) {
			now := time.Now()
			if err := c.TriggerSchedule(ctx, wf, name, now); err != nil {
				return "", err
			}
			id := workflow.InstanceID(wf, workflow.ScheduleManualKey(name, now))
			return "triggered: instance " + id + " (unless overlap: skip finds the last run still running)", nil
		}),
	)
	return cmd
}
