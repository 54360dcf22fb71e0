package run

import (
	"context"
	"errors"
	"flag"
	"os"
	"time"

	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
)

// Worker runs the reference worker command with args (without the program
// name) until ctx ends.
func Worker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var (
		url         = fs.String("nats-url", Env("JETFLOW_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URLs, comma-separated (env JETFLOW_NATS_URL)")
		concurrency = fs.Int("concurrency", EnvInt("JETFLOW_CONCURRENCY", 16), "handlers running at once (env JETFLOW_CONCURRENCY)")
		shutdown    = fs.Duration("shutdown-timeout", 30*time.Second, "how long a graceful stop waits for running handlers")
		ackWait     = fs.Duration("ack-wait", EnvDuration("JETFLOW_WORKER_ACK_WAIT", 10*time.Second), "how soon a task held by a worker that died is redelivered, counted from its last heartbeat (every fifth of this); use the same value on every worker (env JETFLOW_WORKER_ACK_WAIT)")
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
	if *url == "" {
		return errors.New("--nats-url is required")
	}
	client, err := jetstream.Connect(ctx, jetstream.Config{URL: *url, Name: "jetflow-worker", WorkerAckWait: *ackWait, Logger: log})
	if err != nil {
		return err
	}
	defer client.Close()
	// Wait for a dispatcher to provision jetflow on this server: soon
	// after it, when both start together (100 ms, doubling up to 2 s), and
	// logged once a second has passed.
	for wait, waited := 100*time.Millisecond, time.Duration(0); ; wait = min(2*wait, 2*time.Second) {
		err := client.Bind(ctx)
		if err == nil {
			break
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
	w, err := worker.New(client, worker.Config{Concurrency: *concurrency, ShutdownTimeout: *shutdown, Logger: log})
	if err != nil {
		return err
	}
	if err := tasks.Register(w); err != nil {
		return err
	}
	return w.Run(ctx)
}
