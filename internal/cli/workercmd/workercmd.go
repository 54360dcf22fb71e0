// Package workercmd is the reference worker command: `worker` and
// `jetflow worker` are this one command. It links no NATS server.
package workercmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/obs"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
)

// options are the worker's flags.
type options struct {
	conn        run.ConnFlags
	noProvision bool
	taskTypes   string
	concurrency int
	shutdown    time.Duration
	ackWait     time.Duration
	metricsAt   *string
	name        *string
	logFormat   string
	logLevel    string
}

// New returns the worker command.
func New() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run jetflow's reference worker (the built-in task types)",
		Long: `Run jetflow's reference worker until SIGINT or SIGTERM: it runs the built-in
task types (echo, noop, sleep, fail, http). Run as many replicas as you like.

Every flag can also be set by an environment variable: JETFLOW_ and the
flag's name in upper case with dashes as underscores (--task-types:
JETFLOW_TASK_TYPES). A flag on the command line wins over its variable.`,
		Example: `  worker --nats-url nats://127.0.0.1:4222 --concurrency 32
  worker --context jetflow-worker --task-types echo,sleep --no-provision`,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context()) },
	}
	fs := cmd.Flags()
	o.conn.Register(fs, run.ConnOptions{DefaultURL: "nats://127.0.0.1:4222", URLHelp: "default nats://127.0.0.1:4222 or the NATS context's", UseSelected: true})
	fs.BoolVar(&o.noProvision, "no-provision", false, "never create or update task consumers, only bind the ones jetflow provision made; automatic when the NATS user may not create them")
	fs.StringVar(&o.taskTypes, "task-types", "", "comma-separated built-in task types to run (echo, noop, sleep, fail, http); default all")
	fs.IntVar(&o.concurrency, "concurrency", 16, "handlers running at once")
	fs.DurationVar(&o.shutdown, "shutdown-timeout", 30*time.Second, "how long a graceful stop waits for running handlers")
	fs.DurationVar(&o.ackWait, "worker-ack-wait", 10*time.Second, "how soon a task held by a worker that died is redelivered, counted from its last heartbeat (every fifth of this); use the same value on every worker and on a dispatcher --worker")
	// --ack-wait was this flag's name; JETFLOW_ACK_WAIT is the
	// dispatcher's --ack-wait, so the worker's has the dispatcher's name
	// for the same setting.
	fs.DurationVar(&o.ackWait, "ack-wait", 10*time.Second, "")
	_ = fs.MarkDeprecated("ack-wait", "use --worker-ack-wait")
	o.metricsAt = run.MetricsFlag(fs)
	o.name = run.NameFlag(fs, "worker")
	fs.StringVar(&o.logFormat, "log-format", "json", "json or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	return cli.Setup(cmd)
}

// Run runs the worker command with args (without the program name) until
// ctx ends, as the worker binary would.
func Run(ctx context.Context, args []string) error {
	cmd := New()
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}

func (o *options) run(ctx context.Context) error {
	log, err := run.Logger(os.Stderr, o.logFormat, o.logLevel, "worker")
	if err != nil {
		return err
	}
	metrics, err := run.StartMetrics(ctx, *o.metricsAt, log)
	if err != nil {
		return err
	}
	tracer, stopTracing, err := run.StartTracing(ctx, "jetflow-worker", log)
	if err != nil {
		return err
	}
	defer stopTracing()
	c, err := o.conn.Resolve(jetstream.InboxPrefixWorker)
	if err != nil {
		return err
	}
	client, err := jetstream.Connect(ctx, jetstream.Config{URL: c.URL, Name: "jetflow-worker", WorkerAckWait: o.ackWait, Logger: log, Auth: c.Auth, InboxPrefix: c.InboxPrefix, NoProvision: o.noProvision})
	if err != nil {
		return err
	}
	defer client.Close()
	run.LogConnected(log, c)
	if err := waitBound(ctx, client, log); err != nil || ctx.Err() != nil {
		return err // nil when stopped while waiting
	}
	w, err := worker.New(client, worker.Config{Name: *o.name, Tracer: tracer, Concurrency: o.concurrency, ShutdownTimeout: o.shutdown, Logger: log})
	if err != nil {
		return err
	}
	if err := tasks.RegisterTypes(w, run.SplitList(o.taskTypes)...); err != nil {
		return err
	}
	if err := metrics.Register(obs.ClientCollector(client), w.Collector()); err != nil {
		return err
	}
	metrics.SetReady(w.Ready)
	if err := w.Run(ctx); errors.Is(err, jetstream.ErrPermissionDenied) {
		return fmt.Errorf("%w (limit this worker with --task-types to the task types its NATS user may run)", err)
	} else if err != nil {
		return err
	}
	return nil
}

// waitBound waits for a dispatcher to provision jetflow on this server:
// soon after it, when both start together (100 ms, doubling up to 2 s),
// and logged once a second has passed. It returns nil when ctx ends
// first.
func waitBound(ctx context.Context, client *jetstream.Client, log zerolog.Logger) error {
	for wait, waited := 100*time.Millisecond, time.Duration(0); ; wait = min(2*wait, 2*time.Second) {
		err := client.Bind(ctx)
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrPermissionDenied) {
			return err
		}
		if waited >= time.Second {
			log.Warn().Err(err).Msg("waiting for jetflow to be provisioned")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		waited += wait
	}
}
