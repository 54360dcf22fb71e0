// Command worker is jetflow's reference worker: it runs the built-in task
// types (echo, noop, sleep, fail, http). Run as many replicas as you like.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var (
		url         = fs.String("nats-url", run.Env("JETFLOW_NATS_URL", "nats://127.0.0.1:4222"), "NATS server URLs, comma-separated (env JETFLOW_NATS_URL)")
		concurrency = fs.Int("concurrency", run.EnvInt("JETFLOW_CONCURRENCY", 16), "handlers running at once (env JETFLOW_CONCURRENCY)")
		shutdown    = fs.Duration("shutdown-timeout", 30*time.Second, "how long a graceful stop waits for running handlers")
		logFormat   = fs.String("log-format", run.Env("JETFLOW_LOG_FORMAT", "json"), "json or console (env JETFLOW_LOG_FORMAT)")
		logLevel    = fs.String("log-level", run.Env("JETFLOW_LOG_LEVEL", "info"), "debug, info, warn or error (env JETFLOW_LOG_LEVEL)")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := run.Logger(os.Stderr, *logFormat, *logLevel, "worker")
	if err != nil {
		return err
	}
	if *url == "" {
		return errors.New("--nats-url is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	client, err := jetstream.Connect(ctx, jetstream.Config{URL: *url, Name: "jetflow-worker", Logger: log})
	if err != nil {
		return err
	}
	defer client.Close()
	// Wait for a dispatcher to provision jetflow on this server.
	for {
		err := client.Bind(ctx)
		if err == nil {
			break
		}
		log.Warn().Err(err).Msg("waiting for jetflow to be provisioned")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
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
