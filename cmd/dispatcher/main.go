// Command dispatcher runs a jetflow dispatcher. With no NATS URL it starts
// an embedded NATS server with JetStream first, so this one command runs
// jetflow on a fresh machine; with --worker it also runs the built-in task
// types in-process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}

func mainErr() error {
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	var (
		url        = fs.String("nats-url", run.Env("JETFLOW_NATS_URL", ""), "NATS server URLs, comma-separated; empty starts an embedded server (env JETFLOW_NATS_URL)")
		storeDir   = fs.String("store-dir", run.Env("JETFLOW_STORE_DIR", "jetflow-data"), "embedded server: JetStream store directory (env JETFLOW_STORE_DIR)")
		listen     = fs.String("listen", run.Env("JETFLOW_LISTEN", "127.0.0.1:4222"), "embedded server: client address; empty for in-process only (env JETFLOW_LISTEN)")
		syncAlways = fs.Bool("sync-always", run.EnvBool("JETFLOW_SYNC_ALWAYS", false), "embedded server: fsync every write before acknowledging it (env JETFLOW_SYNC_ALWAYS)")
		replicas   = fs.Int("replicas", run.EnvInt("JETFLOW_REPLICAS", 1), "replicas of streams and buckets (3 on a cluster) (env JETFLOW_REPLICAS)")
		shards     = fs.Int("shards", run.EnvInt("JETFLOW_SHARDS", 16), "event-applying goroutines (env JETFLOW_SHARDS)")
		ackWait    = fs.Duration("ack-wait", 30*time.Second, "how soon events held by a crashed dispatcher are redelivered")
		defsDir    = fs.String("definitions", run.Env("JETFLOW_DEFINITIONS", ""), "register every *.yaml, *.yml and *.json definition in this directory at start (env JETFLOW_DEFINITIONS)")
		withWorker = fs.Bool("worker", run.EnvBool("JETFLOW_WORKER", false), "also run the built-in task types (echo, noop, sleep, fail, http) in this process (env JETFLOW_WORKER)")
		logFormat  = fs.String("log-format", run.Env("JETFLOW_LOG_FORMAT", "json"), "json or console (env JETFLOW_LOG_FORMAT)")
		logLevel   = fs.String("log-level", run.Env("JETFLOW_LOG_LEVEL", "info"), "debug, info, warn or error (env JETFLOW_LOG_LEVEL)")
	)
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := run.Logger(os.Stderr, *logFormat, *logLevel, "dispatcher")
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	client, _, closeFn, err := run.Open(ctx, run.Conn{URL: *url, StoreDir: *storeDir, Listen: *listen, SyncAlways: *syncAlways, Replicas: *replicas},
		jetstream.Config{Name: "jetflow-dispatcher", DispatcherAckWait: *ackWait}, log)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := client.Provision(ctx); err != nil {
		return err
	}
	if *defsDir != "" {
		if err := registerDir(ctx, client, *defsDir); err != nil {
			return err
		}
	}
	d, err := dispatcher.New(client, dispatcher.Config{Shards: *shards, Logger: log})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Run(gctx) })
	if *withWorker {
		w, err := worker.New(client, worker.Config{Logger: log})
		if err != nil {
			return err
		}
		if err := tasks.Register(w); err != nil {
			return err
		}
		g.Go(func() error { return w.Run(gctx) })
	}
	return g.Wait()
}

func registerDir(ctx context.Context, client *jetstream.Client, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("definitions: %w", err)
	}
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		def, err := workflow.Parse(path, src)
		if err != nil {
			return err
		}
		if err := client.PutDefinition(ctx, def, src); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if def.Trigger != nil {
			if err := client.EnsureTriggerSubjects(ctx, def.Trigger.Subject); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	return nil
}
