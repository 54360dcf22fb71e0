package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

type globals struct {
	conn           run.ConnFlags
	json           bool
	connectTimeout time.Duration
}

// connect connects without binding, taking replies under inbox (the
// role the command acts as: operator for most, producer for publish).
func (g *globals) connect(ctx context.Context, inbox string, cfg jetstream.Config) (*jetstream.Client, error) {
	conn, err := g.conn.Resolve(inbox)
	if err != nil {
		return nil, err
	}
	cfg.URL, cfg.Auth, cfg.InboxPrefix = conn.URL, conn.Auth, conn.InboxPrefix
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = g.connectTimeout
	}
	if cfg.Name == "" {
		cfg.Name = "jetflow-cli"
	}
	return jetstream.Connect(ctx, cfg)
}

func (g *globals) client(ctx context.Context) (*jetstream.Client, error) {
	c, err := g.connect(ctx, jetstream.InboxPrefixOperator, jetstream.Config{})
	if err != nil {
		return nil, err
	}
	if err := c.Bind(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// withClient makes a command's RunE that opens a bound client for fn and
// closes it when fn returns.
func (g *globals) withClient(fn func(cmd *cobra.Command, c *jetstream.Client, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := g.client(cmd.Context())
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(cmd, c, args)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func readDefinition(path string) (*workflow.Definition, []byte, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	def, err := workflow.Parse(path, src)
	return def, src, err
}

func validateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check definitions without connecting to NATS",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			failed := 0
			for _, p := range args {
				def, _, err := readDefinition(p)
				if err != nil {
					failed++
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: ok (%s version %d, %d steps)\n", p, def.Name, def.Version, len(def.Steps))
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d definitions are invalid", failed, len(args))
			}
			return nil
		},
	}
}

func registerCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "register FILE...",
		Short: "Validate and store workflow definitions",
		Args:  cobra.MinimumNArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, args []string) error {
			ctx := cmd.Context()
			var registered []*workflow.Definition
			defer func() { warnMissingChildren(cmd, c, registered) }()
			for _, p := range args {
				def, src, err := readDefinition(p)
				if err != nil {
					return err
				}
				registered = append(registered, def)
				if def.Trigger != nil {
					if err := c.EnsureTriggerSubjects(ctx, def.Trigger.Subject); err != nil {
						return fmt.Errorf("%s: %w", p, err)
					}
				}
				if err := c.PutDefinition(ctx, def, src); err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				trig := "no trigger (start with: jetflow start " + def.Name + ")"
				if def.Trigger != nil {
					trig = "triggered by " + def.Trigger.Subject + ", key " + def.Trigger.Key
				}
				fmt.Fprintf(cmd.OutOrStdout(), "registered %s version %d: %s\n", def.Name, def.Version, trig)
			}
			return nil
		}),
	}
}

// warnMissingChildren warns about bulk and workflow steps whose child
// workflow is not registered: registering it later is fine, but a step
// that starts a missing workflow fails (its on_failure applies).
func warnMissingChildren(cmd *cobra.Command, c *jetstream.Client, defs []*workflow.Definition) {
	if len(defs) == 0 {
		return
	}
	known := map[string]bool{}
	for _, d := range defs {
		known[d.Name] = true
	}
	stored, err := c.Definitions(cmd.Context())
	if err != nil {
		return // no read permission: nothing to say
	}
	for _, d := range stored {
		known[d.Name] = true
	}
	for _, d := range defs {
		for _, s := range d.Steps {
			if (s.Kind == workflow.KindWorkflow || s.Kind == workflow.KindBulk) && !known[s.Workflow] {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: step %q starts workflow %q, which is not registered; until it is, the step fails when it starts\n", d.Name, s.Name, s.Workflow)
			}
		}
	}
}

func definitionsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "definitions",
		Aliases: []string{"defs"},
		Short:   "List registered definitions",
		Args:    cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, _ []string) error {
			ctx := cmd.Context()
			defs, err := c.Definitions(ctx)
			if err != nil {
				return err
			}
			pauses, err := c.Pauses(ctx)
			if err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: cannot read the pause records: %v\n", err)
			}
			if g.json {
				type trigger struct {
					Subject     string `json:"subject"`
					Key         string `json:"key"`
					OnDuplicate string `json:"on_duplicate,omitempty"`
				}
				type definition struct {
					Name    string   `json:"name"`
					Version int      `json:"version"`
					Steps   int      `json:"steps"`
					Trigger *trigger `json:"trigger,omitempty"`
					// Paused: the workflow is paused (jetflow pause).
					Paused bool `json:"paused"`
				}
				out := make([]definition, 0, len(defs))
				for _, d := range defs {
					v := definition{Name: d.Name, Version: d.Version, Steps: len(d.Steps), Paused: pauses[d.Name].Paused}
					if d.Trigger != nil {
						v.Trigger = &trigger{Subject: d.Trigger.Subject, Key: d.Trigger.Key, OnDuplicate: string(d.Trigger.OnDuplicate)}
					}
					out = append(out, v)
				}
				return printJSON(cmd.OutOrStdout(), out)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tSTEPS\tTRIGGER\tPAUSED")
			for _, d := range defs {
				trig := "-"
				if d.Trigger != nil {
					trig = d.Trigger.Subject + " (key " + d.Trigger.Key + ")"
				}
				paused := "-"
				if pauses[d.Name].Paused {
					paused = "paused since " + pauses[d.Name].Since.Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", d.Name, d.Version, len(d.Steps), trig, paused)
			}
			return tw.Flush()
		}),
	}
}

func payloadArg(args []string, i int) ([]byte, error) {
	if len(args) <= i {
		return []byte("{}"), nil
	}
	if args[i] == "-" {
		return io.ReadAll(os.Stdin)
	}
	if strings.HasPrefix(args[i], "@") {
		return os.ReadFile(strings.TrimPrefix(args[i], "@"))
	}
	return []byte(args[i]), nil
}

func publishCmd(g *globals) *cobra.Command {
	var msgID string
	cmd := &cobra.Command{
		Use:   "publish SUBJECT [JSON|@FILE|-]",
		Short: "Publish an event on a trigger subject",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			subject := args[0]
			if err := checkTriggerSubject(subject); err != nil {
				return err
			}
			data, err := payloadArg(args, 1)
			if err != nil {
				return err
			}
			// A producer may publish on trigger subjects and nothing
			// else: no binding.
			c, err := g.connect(ctx, jetstream.InboxPrefixProducer, jetstream.Config{})
			if err != nil {
				return err
			}
			defer c.Close()
			triggers, err := warnUnbound(cmd, c, subject)
			if err != nil {
				return err
			}
			h := map[string]string{}
			if msgID != "" {
				h[jetstream.HeaderMsgID] = msgID
			}
			dup, err := c.Publish(ctx, subject, data, h)
			if errors.Is(err, jetstream.ErrNotStored) {
				return fmt.Errorf("nothing was published: no stream captures %s, so no workflow would ever see it (trigger subjects: %s)", subject, listOrNone(triggers))
			}
			if err != nil {
				return err
			}
			if dup {
				fmt.Fprintf(cmd.OutOrStdout(), "published to %s (duplicate message id %q: dropped by the stream)\n", args[0], msgID)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published to %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&msgID, "msg-id", "", "Nats-Msg-Id header (deduplicates re-publishes)")
	return cmd
}

// checkTriggerSubject fails when subject is not one a producer may
// publish a trigger on: jetflow's own subjects and NATS's are reserved.
func checkTriggerSubject(subject string) error {
	if strings.HasPrefix(subject, workflow.SubjectPrefix) || strings.HasPrefix(subject, workflow.SystemSubjectPrefix) {
		return fmt.Errorf("subject %s is reserved (jetflow.* for jetflow itself, $* for NATS): publish to a trigger subject, or start a workflow with: jetflow start WORKFLOW", subject)
	}
	return workflow.ValidateSubject(subject, false)
}

// warnUnbound warns on stderr when no definition is triggered by subject
// and returns the trigger subjects of the latest definitions, if the
// definitions can be read (a producer may not read them: then none and
// no warning).
func warnUnbound(cmd *cobra.Command, c *jetstream.Client, subject string) ([]string, error) {
	ctx := cmd.Context()
	if err := c.Bind(ctx); err != nil {
		return nil, nil // the definitions cannot be read: no warning
	}
	defs, err := c.Definitions(ctx)
	if err != nil {
		return nil, err
	}
	var triggers []string
	bound := false
	for _, d := range latest(defs) {
		if d.Trigger != nil {
			triggers = append(triggers, d.Trigger.Subject)
			bound = bound || workflow.SubjectMatches(d.Trigger.Subject, subject)
		}
	}
	if !bound {
		fmt.Fprintf(cmd.ErrOrStderr(), "warning: no registered workflow is triggered by %s (trigger subjects: %s)\n", subject, listOrNone(triggers))
	}
	return triggers, nil
}

func startCmd(g *globals) *cobra.Command {
	var key, traceParent string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "start WORKFLOW [JSON|@FILE|-]",
		Short: "Start a workflow explicitly; prints the instance id",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			data, err := payloadArg(args, 1)
			if err != nil {
				return err
			}
			if key == "" {
				b := make([]byte, 8)
				_, _ = rand.Read(b)
				key = hex.EncodeToString(b)
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			defs, err := c.Definitions(ctx)
			if err != nil {
				return err
			}
			if _, ok := latest(defs)[args[0]]; !ok {
				return fmt.Errorf("%w %s (registered: %s)", errUnknownWorkflow, args[0], listOrNone(slices.Sorted(maps.Keys(latest(defs)))))
			}
			sent := time.Now()
			if err := c.PublishStart(ctx, jetstream.Start{Workflow: args[0], EventKey: key, Payload: data, TraceParent: traceParent}); err != nil {
				return err
			}
			id := workflow.InstanceID(args[0], key)
			if wait <= 0 {
				fmt.Fprintln(cmd.OutOrStdout(), id)
				return nil
			}
			inst, err := waitFor(ctx, c, id, wait, &startRef{msgID: jetstream.TriggerMsgID(args[0], key), sent: sent})
			if err != nil {
				return err
			}
			return showInstance(ctx, cmd.OutOrStdout(), c, inst, g.json)
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "event key (default: random); the same key never starts a second instance")
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the instance to finish and show it")
	cmd.Flags().StringVar(&traceParent, "traceparent", "", "W3C traceparent: the instance's spans join that trace")
	return cmd
}

// errUnknownWorkflow is what start says of a workflow nobody registered.
var errUnknownWorkflow = errors.New("unknown workflow")

// latest keeps the newest version of each definition, by name.
func latest(defs []*workflow.Definition) map[string]*workflow.Definition {
	out := map[string]*workflow.Definition{}
	for _, d := range defs {
		if cur := out[d.Name]; cur == nil || d.Version > cur.Version {
			out[d.Name] = d
		}
	}
	return out
}

func listOrNone(items []string) string {
	if len(items) == 0 {
		return "none"
	}
	return strings.Join(items, ", ")
}

// startRef identifies a start the CLI published, so a wait can look for
// its dead letter.
type startRef struct {
	msgID string
	sent  time.Time
}

// rejection returns the reason a dispatcher dead-lettered the start, or
// "" while it has not.
func (s *startRef) rejection(ctx context.Context, c *jetstream.Client) (string, error) {
	// A minute of slack for clocks that disagree (the server stamps the
	// dead letter).
	dls, err := c.DeadLettersSince(ctx, "trigger", s.sent.Add(-time.Minute), 10000)
	if err != nil {
		return "", err
	}
	for _, d := range dls {
		if d.SourceMsgID == s.msgID {
			return d.Reason, nil
		}
	}
	return "", nil
}

// waitFor waits until the instance is terminal. For a start the CLI just
// published (start non-nil) it also looks, once a second, for the start's
// dead letter, and fails with its reason when a dispatcher rejected it.
func waitFor(ctx context.Context, c *jetstream.Client, id string, timeout time.Duration, start *startRef) (*workflow.Instance, error) {
	deadline := time.Now().Add(timeout)
	nextDLQ := time.Now().Add(time.Second)
	for {
		inst, _, err := c.GetInstance(ctx, id)
		if err == nil && inst.Status.Terminal() {
			return inst, nil
		}
		if err != nil && !errors.Is(err, workflow.ErrNotFound) {
			return nil, err
		}
		if inst == nil && start != nil && (time.Now().After(nextDLQ) || time.Now().After(deadline)) {
			nextDLQ = time.Now().Add(time.Second)
			reason, err := start.rejection(ctx, c)
			if err != nil {
				return nil, err
			}
			if reason != "" {
				return nil, fmt.Errorf("the start of %s was rejected (see jetflow dlq): %s", id, reason)
			}
		}
		if time.Now().After(deadline) {
			if inst != nil {
				return inst, fmt.Errorf("instance %s is still %s after %s", id, inst.Status, timeout)
			}
			if start != nil {
				return nil, fmt.Errorf("instance %s does not exist after %s, and its start was not rejected: no dispatcher has applied it yet (is one running? jetflow stats lists the running dispatchers)", id, timeout)
			}
			return nil, fmt.Errorf("instance %s does not exist after %s (check the id; jetflow instances lists them)", id, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func instancesCmd(g *globals) *cobra.Command {
	var status, wf, key, after string
	var limit int
	cmd := &cobra.Command{
		Use:   "instances",
		Short: "List instances, newest first, a page at a time (--limit, --after)",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, _ []string) error {
			rows, err := c.Instances(cmd.Context(), jetstream.InstanceFilter{Workflow: wf, Status: workflow.Status(status), EventKey: key})
			if err != nil {
				return err
			}
			page, more, err := pageOf(rows, after, limit)
			if err != nil {
				return err
			}
			return printInstances(cmd, g.json, page, more)
		}),
	}
	cmd.Flags().StringVar(&status, "status", "", "only this status (running, completed, failed, cancelled)")
	cmd.Flags().StringVar(&wf, "workflow", "", "only this workflow")
	cmd.Flags().StringVar(&key, "key", "", "only this event key (every run of it, under on_duplicate: rerun)")
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many instances (0: all); when more exist, the last line (stderr) or next_after (--json) names the --after of the next page")
	cmd.Flags().StringVar(&after, "after", "", "start after this instance id (the previous page's last)")
	return cmd
}

// printInstances prints a page of `jetflow instances`, as a table or
// JSON, and how to ask for the next page when more follow.
func printInstances(cmd *cobra.Command, asJSON bool, page []*workflow.Instance, more bool) error {
	next := ""
	if more {
		next = page[len(page)-1].ID
	}
	if asJSON {
		out := struct {
			Instances []instanceView `json:"instances"`
			More      bool           `json:"more"`
			NextAfter string         `json:"next_after,omitempty"`
		}{Instances: make([]instanceView, 0, len(page)), More: more, NextAfter: next}
		for _, in := range page {
			out.Instances = append(out.Instances, viewInstance(in))
		}
		return printJSON(cmd.OutOrStdout(), out)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKFLOW\tSTATUS\tCREATED\tDURATION\tEVENT KEY")
	for _, in := range page {
		fmt.Fprintf(tw, "%s\t%s@%d\t%s\t%s\t%s\t%s\n", in.ID, in.Workflow, in.Version, in.Status,
			in.Created.Local().Format(time.DateTime), duration(in), in.EventKey)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if more {
		fmt.Fprintf(cmd.ErrOrStderr(), "more instances: next page with --after %s\n", next)
	}
	return nil
}

// pageOf orders instances newest first (then by id) and returns at most
// limit (0: all) of those after the instance with id after, and whether
// more follow. An after that is not among them is an error.
func pageOf(rows []*workflow.Instance, after string, limit int) ([]*workflow.Instance, bool, error) {
	sort.Slice(rows, func(i, j int) bool {
		if !rows[i].Created.Equal(rows[j].Created) {
			return rows[i].Created.After(rows[j].Created)
		}
		return rows[i].ID < rows[j].ID
	})
	if after != "" {
		i := slices.IndexFunc(rows, func(in *workflow.Instance) bool { return in.ID == after })
		if i < 0 {
			return nil, false, fmt.Errorf("--after %s: no such instance among those listed (with these filters)", after)
		}
		rows = rows[i+1:]
	}
	if limit > 0 && len(rows) > limit {
		return rows[:limit], true, nil
	}
	return rows, false, nil
}

func duration(in *workflow.Instance) string {
	end := in.Ended
	if end.IsZero() {
		return "-"
	}
	return end.Sub(in.Created).Round(time.Millisecond).String()
}

func showCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show INSTANCE",
		Short: "Show an instance: state, steps, attempts, errors, timings, output",
		Args:  cobra.ExactArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, args []string) error {
			ctx := cmd.Context()
			inst, _, err := c.GetInstance(ctx, args[0])
			if err != nil {
				return err
			}
			return showInstance(ctx, cmd.OutOrStdout(), c, inst, g.json)
		}),
	}
}

func waitCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait INSTANCE",
		Short: "Wait for an instance to finish, then show it",
		Args:  cobra.ExactArgs(1),
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, args []string) error {
			ctx := cmd.Context()
			inst, err := waitFor(ctx, c, args[0], timeout, nil)
			if err != nil {
				return err
			}
			return showInstance(ctx, cmd.OutOrStdout(), c, inst, g.json)
		}),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait")
	return cmd
}

func showInstance(ctx context.Context, w io.Writer, c *jetstream.Client, in *workflow.Instance, asJSON bool) error {
	v := viewInstance(in)
	if err := withValues(ctx, c, &v); err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, v)
	}
	fmt.Fprintf(w, "instance  %s\nworkflow  %s version %d\nevent key %s\nstatus    %s\n", in.ID, in.Workflow, in.Version, in.EventKey, in.Status)
	if in.RunNumber() > 1 {
		fmt.Fprintf(w, "run       %d of the event key (run 1: %s)\n", in.RunNumber(), workflow.InstanceID(in.Workflow, in.EventKey))
	}
	if in.TriggerSeq > 0 {
		fmt.Fprintf(w, "trigger   %s sequence %d\n", jetstream.StreamTriggers, in.TriggerSeq)
	}
	fmt.Fprintf(w, "created   %s\n", in.Created.Local().Format(time.RFC3339Nano))
	if !in.Ended.IsZero() {
		fmt.Fprintf(w, "ended     %s (%s)\n", in.Ended.Local().Format(time.RFC3339Nano), duration(in))
	}
	if in.Error != "" {
		fmt.Fprintf(w, "error     %s\n", in.Error)
	}
	fmt.Fprintf(w, "input     %s\n", compactRaw(v.Input))
	if in.Status == workflow.StatusCompleted {
		fmt.Fprintf(w, "output    %s\n", compactRaw(v.Output))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nSTEP\tSTATUS\tATTEMPT\tTOOK\tPROGRESS\tERROR")
	for _, st := range v.Steps {
		took := "-"
		if !st.Ended.IsZero() {
			took = st.Ended.Sub(st.Started).Round(time.Millisecond).String()
		}
		progress := "-"
		if b := st.Bulk; b != nil {
			progress = fmt.Sprintf("bulk: %d dispatched, %d completed, %d failed of %d", b.Dispatched, b.Completed, b.Failed, b.Total)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", st.Name, st.Status, st.Attempt, took, progress, st.Error)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	printAttempts(w, v.Steps)
	if len(v.Timers) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "\nTIMER\tDUE")
		for _, t := range v.Timers {
			fmt.Fprintf(tw, "%s\t%s\n", t.ID, t.Due.Local().Format(time.RFC3339))
		}
		return tw.Flush()
	}
	return nil
}

// printAttempts lists every attempt of every task step: when it started
// and ended, the worker that ran it and why it failed.
func printAttempts(w io.Writer, steps []stepView) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := false
	for _, st := range steps {
		for _, a := range st.Attempts {
			if !header {
				fmt.Fprintln(tw, "\nSTEP\tATTEMPT\tSTARTED\tENDED\tWORKER\tERROR")
				header = true
			}
			ended, worker := "-", a.Worker
			if !a.Ended.IsZero() {
				ended = a.Ended.Local().Format("15:04:05.000") + " (" + a.Ended.Sub(a.Started).Round(time.Millisecond).String() + ")"
			}
			if worker == "" {
				worker = "-"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", st.Name, a.Attempt, a.Started.Local().Format(time.DateTime), ended, worker, a.Error)
		}
	}
	_ = tw.Flush() // an output error shows as missing output, as for fmt.Fprint
}

// compactRaw prints a JSON value on one line, cut after 2000 bytes.
func compactRaw(j json.RawMessage) string {
	if len(j) == 0 {
		return "null"
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, j); err != nil {
		return string(j)
	}
	if buf.Len() > 2000 {
		return string(buf.Bytes()[:2000]) + "…"
	}
	return buf.String()
}

func cancelCmd(g *globals) *cobra.Command {
	var (
		reason, wf, status string
		since              time.Duration
		dryRun             bool
	)
	cmd := &cobra.Command{
		Use:   "cancel [INSTANCE]",
		Short: "Cancel a running instance, or every running instance of a workflow",
		Long: `Cancels one running instance, or with --workflow every running instance of
that workflow (started within --since, when given), with progress on stderr
and a summary. A cancel is an event the dispatchers apply like any other;
sending it twice changes nothing.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (wf != "") {
				return fmt.Errorf("name one instance, or select instances with --workflow")
			}
			if status != "" && status != string(workflow.StatusRunning) {
				return fmt.Errorf("--status %s: only running instances can be cancelled", status)
			}
			ctx := cmd.Context()
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			if len(args) == 1 {
				return cancelOne(cmd, c, args[0], reason, dryRun)
			}
			picked, err := cancelRunning(cmd, c, wf, since, reason, dryRun)
			if err != nil {
				return err
			}
			verb := "cancel requested for"
			if dryRun {
				verb = "would cancel"
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), map[string]any{"dry_run": dryRun, "instances": picked, "count": len(picked)})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %d running instances of %s\n", verb, len(picked), wf)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "cancelled by operator", "recorded as the instance error")
	f.StringVar(&wf, "workflow", "", "cancel every running instance of this workflow")
	f.StringVar(&status, "status", "", "with --workflow: running (the only status a cancel applies to)")
	f.DurationVar(&since, "since", 0, "with --workflow: only instances started within this long (0: any)")
	f.BoolVar(&dryRun, "dry-run", false, "show what would be cancelled, change nothing")
	return cmd
}

// cancelOne requests the cancel of the running instance id (with dryRun,
// only says it would).
func cancelOne(cmd *cobra.Command, c *jetstream.Client, id, reason string, dryRun bool) error {
	ctx := cmd.Context()
	inst, _, err := c.GetInstance(ctx, id)
	if err != nil {
		return err
	}
	if inst.Status.Terminal() {
		return fmt.Errorf("instance %s is already %s", inst.ID, inst.Status)
	}
	if dryRun {
		fmt.Fprintf(cmd.OutOrStdout(), "would cancel %s\n", inst.ID)
		return nil
	}
	if err := c.Cancel(ctx, inst.ID, reason); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "cancel requested for %s\n", inst.ID)
	return nil
}

// cancelRunning requests the cancel of every running instance of
// workflow wf started within since (0: any), with progress on stderr,
// and returns their ids (with dryRun, only picks them).
func cancelRunning(cmd *cobra.Command, c *jetstream.Client, wf string, since time.Duration, reason string, dryRun bool) ([]string, error) {
	targets, err := selectInstances(cmd, c, wf, string(workflow.StatusRunning), 0)
	if err != nil {
		return nil, err
	}
	var picked []string
	for _, in := range targets {
		if since <= 0 || time.Since(in.Created) <= since {
			picked = append(picked, in.ID)
		}
	}
	p := newProgress(cmd.ErrOrStderr(), "cancel", len(picked))
	for _, id := range picked {
		if !dryRun {
			if err := c.Cancel(cmd.Context(), id, reason); err != nil {
				return nil, fmt.Errorf("cancel %s (after %d of %d): %w", id, p.n, len(picked), err)
			}
		}
		p.step()
	}
	p.done()
	return picked, nil
}

func childrenCmd(g *globals) *cobra.Command {
	var page, size int
	cmd := &cobra.Command{
		Use:   "children PARENT STEP",
		Short: "List the children of a bulk step, page by page, with their status and output",
		Args:  cobra.ExactArgs(2),
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, args []string) error {
			ctx := cmd.Context()
			parent, _, err := c.GetInstance(ctx, args[0])
			if err != nil {
				return err
			}
			st := parent.Steps[args[1]]
			def, err := c.Definition(ctx, parent.Workflow, parent.Version)
			if err != nil {
				return err
			}
			step, ok := def.Step(args[1])
			if !ok || step.Kind != workflow.KindBulk || st == nil {
				return fmt.Errorf("step %q of %s is not a bulk step that has started", args[1], parent.ID)
			}
			from := page * size
			to := min(from+size, st.Cursor)
			fmt.Fprintf(cmd.ErrOrStderr(), "children %d-%d of %d (dispatched %d, completed %d, failed %d)\n",
				from, max(from, to-1), st.Total, st.Cursor, st.Done, st.ChildFailed)
			rows, err := readChildren(ctx, c, parent.ID, step, from, to)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(cmd.OutOrStdout(), rows)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "INDEX\tID\tSTATUS\tOUTPUT\tERROR")
			for _, r := range rows {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", r.Index, r.ID, r.Status, compactRaw(r.Output), r.Error)
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().IntVar(&page, "page", 0, "page number, from 0")
	cmd.Flags().IntVar(&size, "size", 50, "children per page")
	return cmd
}

// childRow is one child of a bulk step in `jetflow children`.
type childRow struct {
	Index  int             `json:"index"`
	ID     string          `json:"id"`
	Status string          `json:"status"`
	Output json.RawMessage `json:"output,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// readChildren reads children from .. to-1 of bulk step step of instance
// parent, with their outputs; a child not started yet is "not started".
func readChildren(ctx context.Context, c *jetstream.Client, parent string, step *workflow.Step, from, to int) ([]childRow, error) {
	var rows []childRow
	for i := from; i < to; i++ {
		id := workflow.ChildInstanceID(step.Workflow, parent, step.Name, i)
		r := childRow{Index: i, ID: id, Status: "not started"}
		ch, _, err := c.GetInstance(ctx, id)
		switch {
		case errors.Is(err, workflow.ErrNotFound):
		case err != nil:
			return nil, err
		default:
			r.Status, r.Error = string(ch.Status), ch.Error
			if ch.OutputRef != "" {
				if r.Output, err = loadJSON(ctx, c, ch.OutputRef); err != nil {
					return nil, fmt.Errorf("output of %s: %w", id, err)
				}
			}
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func statsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show every running dispatcher's counters (duplicates dropped, repairs, conflicts, ...)",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, _ []string) error {
			ctx := cmd.Context()
			answers, err := c.CollectStats(ctx, time.Second)
			if err != nil {
				return err
			}
			if len(answers) == 0 {
				return errors.New("no dispatcher answered on jetflow.stats")
			}
			type answer struct {
				Dispatcher string            `json:"dispatcher"`
				Stats      map[string]uint64 `json:"stats"`
			}
			all := make([]answer, 0, len(answers))
			for _, a := range answers {
				var v answer
				if err := json.Unmarshal(a, &v); err != nil {
					return fmt.Errorf("a dispatcher's answer on %s: %w", jetstream.StatsSubject, err)
				}
				all = append(all, v)
			}
			sort.Slice(all, func(i, j int) bool { return all[i].Dispatcher < all[j].Dispatcher })
			if g.json {
				return printJSON(cmd.OutOrStdout(), all)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for i, a := range all {
				if i > 0 {
					fmt.Fprintln(tw)
				}
				fmt.Fprintf(tw, "dispatcher %s\n", a.Dispatcher)
				for _, k := range slices.Sorted(maps.Keys(a.Stats)) {
					fmt.Fprintf(tw, "  %s\t%d\n", k, a.Stats[k])
				}
			}
			return tw.Flush()
		}),
	}
}

func signalCmd(g *globals) *cobra.Command {
	var id string
	cmd := &cobra.Command{
		Use:   "signal INSTANCE NAME [JSON|@FILE|-]",
		Short: "Send a named signal to an instance (resumes a wait step)",
		Args:  cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			data, err := payloadArg(args, 2)
			if err != nil {
				return err
			}
			if id == "" {
				b := make([]byte, 8)
				_, _ = rand.Read(b)
				id = hex.EncodeToString(b)
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.Signal(ctx, args[0], args[1], data, id); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signal %s sent to %s\n", args[1], args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "signal id (default: random); the same id is delivered once")
	return cmd
}

func dlqCmd(g *globals) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List dead-lettered messages with their reasons",
		Args:  cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, _ []string) error {
			ctx := cmd.Context()
			dls, err := c.DeadLetters(ctx, limit)
			if err != nil {
				return err
			}
			if g.json {
				views := make([]deadLetterView, 0, len(dls))
				for _, d := range dls {
					views = append(views, viewDeadLetter(d))
				}
				return printJSON(cmd.OutOrStdout(), views)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tFROM\tSUBJECT\tSIZE\tREPLAYED\tREASON")
			for _, d := range dls {
				size := strconv.Itoa(d.Size)
				if d.Truncated {
					size += " (kept " + strconv.Itoa(len(d.Data)) + ")"
				}
				replayed := "-"
				if d.Replayed {
					replayed = "yes"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Seq, d.Time.Local().Format(time.DateTime), d.Component, d.SourceSubject, size, replayed, d.Reason)
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "most messages to show")
	cmd.AddCommand(dlqReplayCmd(g), dlqPurgeCmd(g))
	return cmd
}
