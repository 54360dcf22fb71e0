package serve

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/link"
	"github.com/jetflow/jetflow/internal/obs"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// Dispatcher runs the dispatcher command with args (without the program
// name) until ctx ends.
func Dispatcher(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dispatcher", flag.ContinueOnError)
	var conn run.ConnFlags
	conn.Register(fs, run.ConnOptions{URLHelp: "empty starts an embedded server"})
	var (
		noProvision  = fs.Bool("no-provision", run.EnvBool("JETFLOW_NO_PROVISION", false), "never create or update streams and consumers, only check they exist (what `jetflow provision` made); automatic when the NATS user may not provision (env JETFLOW_NO_PROVISION)")
		serverConfig = fs.String("server-config", run.Env("JETFLOW_SERVER_CONFIG", ""), "embedded server: NATS server config file (accounts, users, TLS), e.g. from jetflow security init (env JETFLOW_SERVER_CONFIG)")
		insecure     = fs.Bool("insecure", run.EnvBool("JETFLOW_INSECURE", false), "embedded server: allow listening beyond loopback without authentication (env JETFLOW_INSECURE)")
	)
	var (
		storeDir   = fs.String("store-dir", run.Env("JETFLOW_STORE_DIR", "jetflow-data"), "embedded server: JetStream store directory (env JETFLOW_STORE_DIR)")
		listen     = fs.String("listen", run.Env("JETFLOW_LISTEN", "127.0.0.1:4222"), "embedded server: client address; empty for in-process only (env JETFLOW_LISTEN)")
		syncAlways = fs.Bool("sync-always", run.EnvBool("JETFLOW_SYNC_ALWAYS", false), "embedded server: fsync every write before acknowledging it (env JETFLOW_SYNC_ALWAYS)")
		replicas   = fs.Int("replicas", run.EnvInt("JETFLOW_REPLICAS", 1), "replicas of streams and buckets (3 on a cluster) (env JETFLOW_REPLICAS)")
		shards     = fs.Int("shards", run.EnvInt("JETFLOW_SHARDS", 64), "event-applying goroutines (env JETFLOW_SHARDS)")
		ackWait    = fs.Duration("ack-wait", 30*time.Second, "how soon events held by a crashed dispatcher are redelivered")
		workerAck  = fs.Duration("worker-ack-wait", run.EnvDuration("JETFLOW_WORKER_ACK_WAIT", 10*time.Second), "with --worker: how soon a task held by a worker that died is redelivered, counted from its last heartbeat (every fifth of this); use the same value on every worker (env JETFLOW_WORKER_ACK_WAIT)")
		reqTimeout = fs.Duration("request-timeout", 5*time.Second, "give up on a NATS request (a KV read or write, a publish's ack) unanswered this long, e.g. one sent to a stream leader that just died; its events are retried")
		defsDir    = fs.String("definitions", run.Env("JETFLOW_DEFINITIONS", ""), "register every *.yaml, *.yml and *.json definition in this directory at start (env JETFLOW_DEFINITIONS)")
		withWorker = fs.Bool("worker", run.EnvBool("JETFLOW_WORKER", false), "also run the built-in task types (echo, noop, sleep, fail, http) in this process (env JETFLOW_WORKER)")
		logFormat  = fs.String("log-format", run.Env("JETFLOW_LOG_FORMAT", "json"), "json or console (env JETFLOW_LOG_FORMAT)")
		logLevel   = fs.String("log-level", run.Env("JETFLOW_LOG_LEVEL", "info"), "debug, info, warn or error (env JETFLOW_LOG_LEVEL)")
		cpuProfile = fs.String("cpu-profile", "", "write a CPU profile to this file until the dispatcher stops")
		pprofAddr  = fs.String("pprof-listen", run.Env("JETFLOW_PPROF_LISTEN", ""), "serve net/http/pprof (heap, goroutines, CPU) on this address, e.g. 127.0.0.1:6060; empty: off (env JETFLOW_PPROF_LISTEN)")
		repairInt  = fs.Duration("repair-interval", 5*time.Second, "how often the repair loop looks for stalled instances; negative disables it")
		staleTask  = fs.Duration("stale-task", 10*time.Minute, "a task attempt without a timeout and without a result for this long is presumed lost and retried")
		maxPayload = fs.String("max-payload", run.Env("JETFLOW_MAX_PAYLOAD", "1MiB"), "largest trigger payload, input and output; a larger trigger is dead-lettered; at least 1KiB and at most the NATS server's max_payload (the embedded server's is 8MiB) (env JETFLOW_MAX_PAYLOAD)")
		metricsAt  = run.MetricsFlag(fs)
		name       = run.NameFlag(fs, "dispatcher")
		uiListen   = fs.String("ui-listen", run.Env("JETFLOW_DISPATCHER_UI_LISTEN", ""), "also serve the web console (jetflow ui) on this address, e.g. 127.0.0.1:8233, with the dispatcher's connection; empty: off (env JETFLOW_DISPATCHER_UI_LISTEN)")
		uiReadOnly = fs.Bool("ui-read-only", run.EnvBool("JETFLOW_DISPATCHER_UI_READ_ONLY", false), "with --ui-listen: offer no action (cancel, signal, retry, replay) (env JETFLOW_DISPATCHER_UI_READ_ONLY)")
		uiRemote   = fs.Bool("ui-allow-remote", run.EnvBool("JETFLOW_DISPATCHER_UI_ALLOW_REMOTE", false), "with --ui-listen: listen beyond loopback (the console has no login; put an authenticating proxy in front) (env JETFLOW_DISPATCHER_UI_ALLOW_REMOTE)")
		retention  = fs.String("instance-retention", run.Env("JETFLOW_INSTANCE_RETENTION", "0"), "remove an ended instance's key this long after it ended; 0 keeps instances forever; at least 24h (the trigger retention); a replay of the event key after that starts a new instance (env JETFLOW_INSTANCE_RETENTION)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := run.Logger(os.Stderr, *logFormat, *logLevel, "dispatcher")
	if err != nil {
		return err
	}
	maxPayloadBytes, err := run.ParseSize(*maxPayload)
	if err != nil {
		return fmt.Errorf("--max-payload (JETFLOW_MAX_PAYLOAD): %w", err)
	}
	instanceRetention, err := time.ParseDuration(*retention)
	if err != nil {
		return fmt.Errorf("--instance-retention (JETFLOW_INSTANCE_RETENTION): %w (use Go durations such as 720h)", err)
	}

	metrics, err := run.StartMetrics(ctx, *metricsAt, log)
	if err != nil {
		return err
	}
	tracer, stopTracing, err := run.StartTracing(ctx, "jetflow-dispatcher", log)
	if err != nil {
		return err
	}
	defer stopTracing()
	if *pprofAddr != "" {
		if err := servePprof(*pprofAddr, log); err != nil {
			return err
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	c, err := conn.Resolve(jetstream.InboxPrefixDispatcher)
	if err != nil {
		return err
	}
	c.StoreDir, c.Listen, c.SyncAlways, c.Replicas = *storeDir, *listen, *syncAlways, *replicas
	c.ServerConfig, c.Insecure = *serverConfig, *insecure
	client, _, closeFn, err := Open(ctx, c,
		jetstream.Config{Name: "jetflow-dispatcher", MaxPayload: maxPayloadBytes, DispatcherAckWait: *ackWait, WorkerAckWait: *workerAck,
			InstanceRetention: instanceRetention, RequestTimeout: *reqTimeout, NoProvision: *noProvision}, log)
	if err != nil {
		return err
	}
	defer closeFn()
	// A cluster that is still forming answers provisioning requests with
	// timeouts for a while: retry for up to a minute.
	for attempt := 1; ; attempt++ {
		err := client.Provision(ctx)
		if errors.Is(err, jetstream.ErrPermissionDenied) && !client.NoProvision() {
			log.Warn().Err(err).Msg("this NATS user may not provision jetflow; checking that it was provisioned (by jetflow provision, as admin)")
			err = client.Verify(ctx)
		}
		if err == nil {
			break
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
	if *defsDir != "" {
		if err := RegisterDir(ctx, client, *defsDir); err != nil {
			return err
		}
	}
	d, err := dispatcher.New(client, dispatcher.Config{Name: *name, Tracer: tracer, Shards: *shards, RepairInterval: *repairInt, StaleTask: *staleTask, Logger: log})
	if err != nil {
		return err
	}
	if err := metrics.Register(obs.ClientCollector(client), d.Collector()); err != nil {
		return err
	}
	checks := []func() error{d.Ready}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Run(gctx) })
	if *withWorker {
		w, err := worker.New(link.Client(client).(*jetflow.Client), worker.Config{Tracer: tracer, Logger: log})
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
	if *uiListen != "" {
		if err := serveConsole(gctx, g, *uiListen, *uiReadOnly, *uiRemote, client, log); err != nil {
			return err
		}
	}
	metrics.SetReady(checks...)
	return g.Wait()
}

// RegisterDir validates and stores every *.yaml, *.yml and *.json definition
// in dir, and makes the trigger stream capture their trigger subjects.
func RegisterDir(ctx context.Context, client *jetstream.Client, dir string) error {
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
