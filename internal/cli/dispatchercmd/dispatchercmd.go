// Package dispatchercmd is the dispatcher command: `dispatcher` and
// `jetflow dispatcher` are this one command.
package dispatchercmd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/cli/servercmd"
	"github.com/jetflow/jetflow/internal/obs"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
)

// options are the dispatcher's flags.
type options struct {
	conn        run.ConnFlags
	server      servercmd.Flags
	noProvision bool
	replicas    int
	shards      int
	ackWait     time.Duration
	workerAck   time.Duration
	reqTimeout  time.Duration
	defsDir     string
	withWorker  bool
	logFormat   string
	logLevel    string
	cpuProfile  string
	pprofAddr   string
	repairInt   time.Duration
	staleTask   time.Duration
	maxPayload  string
	metricsAt   *string
	name        *string
	retention   time.Duration
}

// New returns the dispatcher command.
func New() *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "dispatcher",
		Short: "Run a jetflow dispatcher (with an embedded NATS server unless --nats-url is given)",
		Long: `Run a jetflow dispatcher until SIGINT or SIGTERM: it starts instances from
trigger events and drives them through their steps.

With no NATS URL (flag, JETFLOW_NATS_URL, NATS_URL or --context) it starts an
embedded NATS server with JetStream first, so this one command runs jetflow on
a fresh machine; with --worker it also runs the built-in task types
(echo, noop, sleep, fail, http) in-process.

Every flag can also be set by an environment variable: JETFLOW_ and the
flag's name in upper case with dashes as underscores (--repair-interval:
JETFLOW_REPAIR_INTERVAL). A flag on the command line wins over its variable.`,
		Example: `  dispatcher --worker --definitions examples --log-format console
  dispatcher --nats-url nats://nats1:4222,nats://nats2:4222 --replicas 3`,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd.Context()) },
	}
	fs := cmd.Flags()
	o.conn.Register(fs, run.ConnOptions{URLHelp: "empty starts an embedded server"})
	o.server.Register(fs, "embedded server: ")
	fs.BoolVar(&o.noProvision, "no-provision", false, "never create or update streams and consumers, only check they exist (what jetflow provision made); automatic when the NATS user may not provision")
	fs.IntVar(&o.replicas, "replicas", 1, "replicas of streams and buckets (3 on a cluster)")
	fs.IntVar(&o.shards, "shards", 64, "event-applying goroutines")
	fs.DurationVar(&o.ackWait, "ack-wait", 30*time.Second, "how soon events held by a crashed dispatcher are redelivered")
	fs.DurationVar(&o.workerAck, "worker-ack-wait", 10*time.Second, "with --worker: how soon a task held by a worker that died is redelivered, counted from its last heartbeat (every fifth of this); use the same value on every worker")
	fs.DurationVar(&o.reqTimeout, "request-timeout", 5*time.Second, "give up on a NATS request (a KV read or write, a publish's ack) unanswered this long, e.g. one sent to a stream leader that just died; its events are retried")
	fs.StringVar(&o.defsDir, "definitions", "", "register every *.yaml, *.yml and *.json definition in this directory at start")
	fs.BoolVar(&o.withWorker, "worker", false, "also run the built-in task types (echo, noop, sleep, fail, http) in this process")
	fs.StringVar(&o.logFormat, "log-format", "json", "json or console")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a CPU profile to this file until the dispatcher stops")
	fs.StringVar(&o.pprofAddr, "pprof-listen", "", "serve net/http/pprof (heap, goroutines, CPU) on this address, e.g. 127.0.0.1:6060; empty: off")
	fs.DurationVar(&o.repairInt, "repair-interval", 5*time.Second, "how often the repair loop looks for stalled instances; negative disables it")
	fs.DurationVar(&o.staleTask, "stale-task", 10*time.Minute, "a task attempt without a timeout and without a result for this long is presumed lost and retried")
	fs.StringVar(&o.maxPayload, "max-payload", "1MiB", "largest trigger payload, input and output; a larger trigger is dead-lettered; at least 1KiB and at most the NATS server's max_payload (the embedded server's is 8MiB)")
	o.metricsAt = run.MetricsFlag(fs)
	o.name = run.NameFlag(fs, "dispatcher")
	fs.DurationVar(&o.retention, "instance-retention", 0, "remove an ended instance's key this long after it ended (a duration such as 720h); 0 keeps instances forever; at least 24h (the trigger retention); a replay of the event key after that starts a new instance")
	return cli.Setup(cmd)
}

// Run runs the dispatcher command with args (without the program name)
// until ctx ends, as the dispatcher binary would.
func Run(ctx context.Context, args []string) error {
	cmd := New()
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}

func (o *options) run(ctx context.Context) error {
	log, err := run.Logger(os.Stderr, o.logFormat, o.logLevel, "dispatcher")
	if err != nil {
		return err
	}
	maxPayloadBytes, err := run.ParseSize(o.maxPayload)
	if err != nil {
		return fmt.Errorf("--max-payload (JETFLOW_MAX_PAYLOAD): %w", err)
	}
	metrics, err := run.StartMetrics(ctx, *o.metricsAt, log)
	if err != nil {
		return err
	}
	tracer, stopTracing, err := run.StartTracing(ctx, "jetflow-dispatcher", log)
	if err != nil {
		return err
	}
	defer stopTracing()
	if o.pprofAddr != "" {
		if err := run.ServePprof(o.pprofAddr, log); err != nil {
			return err
		}
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	c, err := o.conn.Resolve(jetstream.InboxPrefixDispatcher)
	if err != nil {
		return err
	}
	c.Replicas = o.replicas
	client, closeFn, err := servercmd.Open(ctx, c, o.server,
		jetstream.Config{Name: "jetflow-dispatcher", MaxPayload: maxPayloadBytes, DispatcherAckWait: o.ackWait, WorkerAckWait: o.workerAck,
			InstanceRetention: o.retention, RequestTimeout: o.reqTimeout, NoProvision: o.noProvision}, log)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := provision(ctx, client, log); err != nil || ctx.Err() != nil {
		return err // nil when stopped while provisioning
	}
	if o.defsDir != "" {
		if err := run.RegisterDir(ctx, client, o.defsDir); err != nil {
			return err
		}
	}
	d, err := dispatcher.New(client, dispatcher.Config{Name: *o.name, Tracer: tracer, Shards: o.shards, RepairInterval: o.repairInt, StaleTask: o.staleTask, Logger: log})
	if err != nil {
		return err
	}
	if err := metrics.Register(obs.ClientCollector(client), d.Collector()); err != nil {
		return err
	}
	checks := []func() error{d.Ready}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Run(gctx) })
	if o.withWorker {
		w, err := worker.New(client, worker.Config{Tracer: tracer, Logger: log})
		if err != nil {
			return err
		}
		if err := tasks.Register(w); err != nil {
			return err
		}
		if err := metrics.Register(w.Collector()); err != nil {
			return err
		}
		checks = append(checks, w.Ready)
		g.Go(func() error { return w.Run(gctx) })
	}
	metrics.SetReady(checks...)
	return g.Wait()
}

// provision creates or checks jetflow's streams, buckets and consumers. A
// cluster that is still forming answers provisioning requests with
// timeouts for a while: it retries for up to a minute. It returns nil
// when ctx ends first.
func provision(ctx context.Context, client *jetstream.Client, log zerolog.Logger) error {
	for attempt := 1; ; attempt++ {
		err := client.Provision(ctx)
		if errors.Is(err, jetstream.ErrPermissionDenied) && !client.NoProvision() {
			log.Warn().Err(err).Msg("this NATS user may not provision jetflow; checking that it was provisioned (by jetflow provision, as admin)")
			err = client.Verify(ctx)
		}
		if err == nil {
			return nil
		}
		if attempt >= 30 || ctx.Err() != nil || errors.Is(err, jetstream.ErrPermissionDenied) {
			return err
		}
		log.Warn().Err(err).Int("attempt", attempt).Msg("provisioning failed; retrying")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
}
