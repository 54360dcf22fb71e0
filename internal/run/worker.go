package run

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/internal/link"
	"github.com/jetflow/jetflow/internal/obs"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
)

// Worker runs the reference worker command with args (without the program
// name) until ctx ends.
func Worker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var conn ConnFlags
	conn.Register(fs, ConnOptions{DefaultURL: "nats://127.0.0.1:4222", URLHelp: "default nats://127.0.0.1:4222 or the NATS context's", UseSelected: true})
	var (
		noProvision = fs.Bool("no-provision", EnvBool("JETFLOW_NO_PROVISION", false), "never create or update task consumers, only bind the ones `jetflow provision` made; automatic when the NATS user may not create them (env JETFLOW_NO_PROVISION)")
		taskTypes   = fs.String("task-types", Env("JETFLOW_TASK_TYPES", ""), "comma-separated built-in task types to run (echo, noop, sleep, fail, http); default all (env JETFLOW_TASK_TYPES)")
		concurrency = fs.Int("concurrency", EnvInt("JETFLOW_CONCURRENCY", 16), "handlers running at once (env JETFLOW_CONCURRENCY)")
		shutdown    = fs.Duration("shutdown-timeout", 30*time.Second, "how long a graceful stop waits for running handlers")
		ackWait     = fs.Duration("ack-wait", EnvDuration("JETFLOW_WORKER_ACK_WAIT", 10*time.Second), "how soon a task held by a worker that died is redelivered, counted from its last heartbeat (every fifth of this); use the same value on every worker (env JETFLOW_WORKER_ACK_WAIT)")
		metricsAt   = MetricsFlag(fs)
		name        = NameFlag(fs, "worker")
		logFormat   = fs.String("log-format", Env("JETFLOW_LOG_FORMAT", "json"), "json or console (env JETFLOW_LOG_FORMAT)")
		logLevel    = fs.String("log-level", Env("JETFLOW_LOG_LEVEL", "info"), "debug, info, warn or error (env JETFLOW_LOG_LEVEL)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := Logger(os.Stderr, *logFormat, *logLevel, "worker")
	if err != nil {
		return err
	}
	metrics, err := StartMetrics(ctx, *metricsAt, log)
	if err != nil {
		return err
	}
	tracer, stopTracing, err := StartTracing(ctx, "jetflow-worker", log)
	if err != nil {
		return err
	}
	defer stopTracing()
	c, err := conn.Resolve(jetstream.InboxPrefixWorker)
	if err != nil {
		return err
	}
	client, err := jetstream.Connect(ctx, jetstream.Config{URL: c.URL, Name: "jetflow-worker", WorkerAckWait: *ackWait, Logger: log, Auth: c.Auth, InboxPrefix: c.InboxPrefix, NoProvision: *noProvision})
	if err != nil {
		return err
	}
	defer client.Close()
	LogConnected(log, c)
	// Run waits for a dispatcher to provision jetflow on this server.
	w, err := worker.New(link.Client(client).(*jetflow.Client), worker.Config{Name: *name, Tracer: tracer, Concurrency: *concurrency, ShutdownTimeout: *shutdown, Logger: log})
	if err != nil {
		return err
	}
	if err := tasks.RegisterTypes(w, SplitList(*taskTypes)...); err != nil {
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
