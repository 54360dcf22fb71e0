package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/jetstream"
)

func workersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "workers",
		Short: "List the workers connected now: task types, concurrency, busy slots, tasks done, last seen",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, _ []string) error {
			ctx := cmd.Context()
			ws, err := c.Present(ctx, jetstream.PresenceWorker)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), orEmpty(ws))
			}
			if len(ws) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no worker is connected")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tHOST\tVERSION\tTASK TYPES\tCONCURRENCY\tBUSY\tTASKS DONE\tLAST SEEN")
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", w.Name, w.Host, w.Version, strings.Join(w.TaskTypes, ","),
					w.Concurrency, w.Busy, w.TasksDone, ago(now, w.LastSeen))
			}
			return tw.Flush()
		}),
	}
}

func dispatchersCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "dispatchers",
		Short: "List the dispatchers connected now: shards, consuming, instances started and finished, last seen",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, _ []string) error {
			ctx := cmd.Context()
			ds, err := c.Present(ctx, jetstream.PresenceDispatcher)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), orEmpty(ds))
			}
			if len(ds) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no dispatcher is connected")
				return nil
			}
			now := time.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tHOST\tVERSION\tSHARDS\tCONSUMING\tSTARTED\tFINISHED\tUP\tLAST SEEN")
			for _, d := range ds {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%t\t%d\t%d\t%s\t%s\n", d.Name, d.Host, d.Version, d.Shards, d.Consuming,
					d.InstancesStarted, d.InstancesFinished, now.Sub(d.Started).Round(time.Second), ago(now, d.LastSeen))
			}
			return tw.Flush()
		}),
	}
}

// ago says how long before now t was, for people.
func ago(now, t time.Time) string {
	d := now.Sub(t)
	if d < time.Second {
		return "now"
	}
	return d.Round(time.Second).String() + " ago"
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
