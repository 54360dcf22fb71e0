package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/jetstream"
)

// dlqScanLimit is the most dead letters one replay or purge looks at.
const dlqScanLimit = 1_000_000

// dlqAction is the outcome of a replay or purge for one dead letter, as
// printed by --json.
type dlqAction struct {
	Seq           uint64 `json:"seq"`
	SourceSubject string `json:"source_subject"`
	Reason        string `json:"reason"`
	// Result: replayed, purged, would_replay, would_purge (--dry-run),
	// already_replayed, not_replayable, failed.
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
}

// dlqSummary is what replay and purge print with --json.
type dlqSummary struct {
	DryRun  bool           `json:"dry_run"`
	Counts  map[string]int `json:"counts"`
	Actions []dlqAction    `json:"actions"`
}

// dlqFilterFlags adds the filter flags shared by replay and purge.
func dlqFilterFlags(cmd *cobra.Command, f *jetstream.DLQFilter, seqs *[]uint, dryRun *bool) {
	fl := cmd.Flags()
	fl.UintSliceVar(seqs, "seq", nil, "dead letters with these JETFLOW_DLQ sequences (repeat or comma-separate)")
	fl.StringVar(&f.Reason, "reason", "", "dead letters whose reason contains this text")
	fl.StringVar(&f.Subject, "subject", "", "dead letters whose source subject matches this NATS subject (* and > allowed)")
	fl.BoolVar(&f.All, "all", false, "every dead letter the other filters allow (required when no other filter is given)")
	fl.BoolVar(dryRun, "dry-run", false, "list what would be done, change nothing")
}

func dlqReplayCmd(g *globals) *cobra.Command {
	var (
		f      jetstream.DLQFilter
		seqs   []uint
		dryRun bool
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Publish dead letters again on their original subjects (for example after registering a missing definition)",
		Long: `Publishes each selected dead letter again on the subject it was rejected
from, with its payload and headers, as a new message. Each dead letter is
marked replayed before it is published, so it is replayed once however often
the command runs (--force replays marked ones again). A fire of a schedule
is replayed with the fire time its dead letter kept, so it starts the
instance the fire named. A dead letter whose payload was truncated (larger
than the dead-letter stream keeps) cannot be replayed. The dead letters
stay in JETFLOW_DLQ; remove them with jetflow dlq purge.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return dlqAct(cmd, g, withSeqs(f, seqs), dryRun, "replay", func(c *jetstream.Client, d jetstream.DeadLetter) (string, error) {
				notReplayable := jetstream.Replayable(d)
				switch {
				case d.Replayed && !force:
					return "already_replayed", nil
				case notReplayable != nil:
					return "not_replayable", notReplayable
				case dryRun:
					return "would_replay", nil
				}
				if force && d.Replayed {
					if err := c.PurgeReplayMark(cmd.Context(), d.Seq); err != nil {
						return "failed", err
					}
				}
				err := c.ReplayDeadLetter(cmd.Context(), d)
				switch {
				case errors.Is(err, jetstream.ErrAlreadyReplayed):
					return "already_replayed", nil
				case errors.Is(err, jetstream.ErrNotReplayable):
					return "not_replayable", err
				case err != nil:
					return "failed", err
				}
				return "replayed", nil
			})
		},
	}
	dlqFilterFlags(cmd, &f, &seqs, &dryRun)
	cmd.Flags().BoolVar(&force, "force", false, "replay dead letters that were replayed before")
	return cmd
}

func dlqPurgeCmd(g *globals) *cobra.Command {
	var (
		f      jetstream.DLQFilter
		seqs   []uint
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Remove dead letters from JETFLOW_DLQ",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return dlqAct(cmd, g, withSeqs(f, seqs), dryRun, "purge", func(c *jetstream.Client, d jetstream.DeadLetter) (string, error) {
				if dryRun {
					return "would_purge", nil
				}
				if err := c.PurgeDeadLetter(cmd.Context(), d.Seq); err != nil {
					return "failed", err
				}
				return "purged", nil
			})
		},
	}
	dlqFilterFlags(cmd, &f, &seqs, &dryRun)
	return cmd
}

// dlqAct applies act to every dead letter f selects, with progress on
// stderr, and prints what it did.
func dlqAct(cmd *cobra.Command, g *globals, f jetstream.DLQFilter, dryRun bool, verb string,
	act func(*jetstream.Client, jetstream.DeadLetter) (string, error)) error {
	if f.Empty() {
		return fmt.Errorf("say which dead letters to %s: --seq, --reason, --subject, or --all", verb)
	}
	ctx := cmd.Context()
	c, err := g.client(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	dls, err := c.DeadLetters(ctx, dlqScanLimit)
	if err != nil {
		return err
	}
	var selected []jetstream.DeadLetter
	for _, d := range dls {
		if f.Match(d) {
			selected = append(selected, d)
		}
	}
	sum := dlqSummary{DryRun: dryRun, Counts: map[string]int{}, Actions: []dlqAction{}}
	progress := newProgress(cmd.ErrOrStderr(), verb, len(selected))
	failed := 0
	for _, d := range selected {
		res, err := act(c, d)
		a := dlqAction{Seq: d.Seq, SourceSubject: d.SourceSubject, Reason: d.Reason, Result: res}
		if err != nil {
			a.Error = err.Error()
			if res == "failed" {
				failed++
			}
		}
		sum.Counts[res]++
		sum.Actions = append(sum.Actions, a)
		progress.step()
	}
	progress.done()
	if g.json {
		if err := printJSON(cmd.OutOrStdout(), sum); err != nil {
			return err
		}
	} else {
		printDLQSummary(cmd.OutOrStdout(), sum)
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d dead letters could not be %s", failed, len(selected), map[string]string{"replay": "replayed", "purge": "purged"}[verb])
	}
	return nil
}

func printDLQSummary(w io.Writer, sum dlqSummary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tSUBJECT\tRESULT\tREASON")
	for _, a := range sum.Actions {
		detail := a.Reason
		if a.Error != "" {
			detail = a.Error
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", a.Seq, a.SourceSubject, a.Result, detail)
	}
	_ = tw.Flush() // an output error shows as missing output, as for fmt.Fprint
	fmt.Fprintf(w, "%d selected:", len(sum.Actions))
	for _, k := range []string{"replayed", "purged", "would_replay", "would_purge", "already_replayed", "not_replayable", "failed"} {
		if n := sum.Counts[k]; n > 0 {
			fmt.Fprintf(w, " %s %d", k, n)
		}
	}
	fmt.Fprintln(w)
}

// progress prints "verb: n/total" on stderr as work goes (a line per
// tenth, so logs stay short).
type progress struct {
	w           io.Writer
	verb        string
	n, total    int
	lastPrinted int
}

func newProgress(w io.Writer, verb string, total int) *progress {
	return &progress{w: w, verb: verb, total: total}
}

func (p *progress) step() {
	p.n++
	if p.total >= 20 && (p.n-p.lastPrinted)*10 >= p.total {
		fmt.Fprintf(p.w, "%s: %d/%d\n", p.verb, p.n, p.total)
		p.lastPrinted = p.n
	}
}

func (p *progress) done() {
	if p.total >= 20 && p.lastPrinted != p.n {
		fmt.Fprintf(p.w, "%s: %d/%d\n", p.verb, p.n, p.total)
	}
}

func withSeqs(f jetstream.DLQFilter, seqs []uint) jetstream.DLQFilter {
	for _, s := range seqs {
		f.Seqs = append(f.Seqs, uint64(s))
	}
	return f
}
