// Package workercmd is the reference worker command: `worker` and
// `jetflow worker` are this one command. It links no NATS server.
package workercmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/link"
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
	httpAllow   string
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
	fs.StringVar(&o.httpAllow, "http-allow", "", "hosts the built-in http task may call, comma-separated: names, *.domain, IP addresses, CIDR prefixes, or * for any; loopback is always allowed, nothing else by default (a definition or an input could otherwise send data to any URL or reach internal addresses)")
	fs.IntVar(&o.concurrency, "concurrency", 16, "handlers running at once")
	fs.DurationVar(&o.shutdown, "shutdown-timeout", 30*time.Second, "how long a graceful stop waits for running handlers")
	fs.DurationVar(&o.ackWait, "worker-ack-wait", 10*time.Second, "how soon a task held by a worker that died is redelivered, counted from its last heartbeat (every fifth of this); use the same value on every worker and on a dispatcher --worker")
	// --ack-wait was this flag's name; JETFLOW_ACK_WAIT is the
	// dispatcher's --ack-wait, so the worker's has the dispatcher's name
	// for the same setting.
	fs.DurationVar(&o.ackWait, "ack-wait", 10*time.Second, "")
	if err := fs.MarkDeprecated("ack-wait", "use --worker-ack-wait"); err != nil {
		panic(err) // no such flag: a mistake in this code
	}
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
	// Run waits for a dispatcher to provision jetflow on this server.
	w, err := worker.New(link.Client(client).(*jetflow.Client), worker.Config{Name: *o.name, Tracer: tracer, Concurrency: o.concurrency, ShutdownTimeout: o.shutdown, Logger: log})
	if err != nil {
		return err
	}
	if err := tasks.RegisterWith(w, tasks.Options{HTTPAllow: run.SplitList(o.httpAllow)}, run.SplitList(o.taskTypes)...); err != nil {
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
