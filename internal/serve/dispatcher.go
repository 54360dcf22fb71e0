package serve

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/internal/link"
	"github.com/jetflow/jetflow/internal/obs"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/tasks"
	"github.com/jetflow/jetflow/tasktoken"
	"github.com/jetflow/jetflow/worker"
)

// DispatcherOptions configure a dispatcher process (the flags of the
// dispatcher command, internal/cli/dispatchercmd).
type DispatcherOptions struct {
	Conn          run.ConnFlags
	StoreDir      string
	Listen        string
	SyncAlways    bool
	ServerConfig  string
	Insecure      bool
	NoProvision   bool
	TokenKeys     string
	Replicas      int
	Shards        int
	AckWait       time.Duration
	WorkerAckWait time.Duration
	ReqTimeout    time.Duration
	DefsDir       string
	HTTPAllow     string
	WithWorker    bool
	LogFormat     string
	LogLevel      string
	CPUProfile    string
	PprofAddr     string
	RepairInt     time.Duration
	StaleTask     time.Duration
	MaxPayload    string
	MetricsAt     string
	Name          string
	UIListen      string
	UIReadOnly    bool
	UIRemote      bool
	Retention     time.Duration
}

// RunDispatcher runs a dispatcher as o says until ctx ends.
func RunDispatcher(ctx context.Context, o DispatcherOptions) error {
	conn := o.Conn
	log, err := run.Logger(os.Stderr, o.LogFormat, o.LogLevel, "dispatcher")
	if err != nil {
		return err
	}
	maxPayloadBytes, err := run.ParseSize(o.MaxPayload)
	if err != nil {
		return fmt.Errorf("--max-payload (JETFLOW_MAX_PAYLOAD): %w", err)
	}
	instanceRetention := o.Retention

	metrics, err := run.StartMetrics(ctx, o.MetricsAt, log)
	if err != nil {
		return err
	}
	tracer, stopTracing, err := run.StartTracing(ctx, "jetflow-dispatcher", log)
	if err != nil {
		return err
	}
	defer stopTracing()
	stopProfiling, err := startProfiling(o.PprofAddr, o.CPUProfile, log)
	if err != nil {
		return err
	}
	defer stopProfiling()
	tokens, err := loadTaskTokens(o.TokenKeys, log)
	if err != nil {
		return err
	}
	c, err := conn.Resolve(jetstream.InboxPrefixDispatcher)
	if err != nil {
		return err
	}
	c.StoreDir, c.Listen, c.SyncAlways, c.Replicas = o.StoreDir, o.Listen, o.SyncAlways, o.Replicas
	c.ServerConfig, c.Insecure = o.ServerConfig, o.Insecure
	client, _, closeFn, err := Open(ctx, c,
		jetstream.Config{Name: "jetflow-dispatcher", MaxPayload: maxPayloadBytes, DispatcherAckWait: o.AckWait, WorkerAckWait: o.WorkerAckWait,
			InstanceRetention: instanceRetention, RequestTimeout: o.ReqTimeout, NoProvision: o.NoProvision}, log)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := provision(ctx, client, log); err != nil || ctx.Err() != nil {
		return err
	}
	if o.DefsDir != "" {
		if err := run.RegisterDir(ctx, client, o.DefsDir); err != nil {
			return err
		}
	}
	d, err := dispatcher.New(client, dispatcher.Config{Name: o.Name, Tracer: tracer, TaskTokens: tokens, Shards: o.Shards, RepairInterval: o.RepairInt, StaleTask: o.StaleTask, Logger: log})
	if err != nil {
		return err
	}
	if err := metrics.Register(obs.ClientCollector(client), d.Collector()); err != nil {
		return err
	}
	checks := []func() error{d.Ready}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Run(gctx) })
	if o.WithWorker {
		w, err := builtinWorker(client, tracer, o.HTTPAllow, log)
		if err != nil {
			return err
		}
		if err := metrics.Register(w.Collector()); err != nil {
			return err
		}
		checks = append(checks, w.Ready)
		g.Go(func() error { return w.Run(gctx) })
	}
	if o.UIListen != "" {
		if err := serveConsole(gctx, g, o.UIListen, o.UIReadOnly, o.UIRemote, client, log); err != nil {
			return err
		}
	}
	metrics.SetReady(checks...)
	return g.Wait()
}

// loadTaskTokens reads the task token key file (nil when path is empty)
// provision creates or updates jetflow's streams, consumers and buckets.
// A user that may not provision (a runtime role of a secured account)
// only checks that they exist (jetflow provision, run as admin, made
// them). A cluster that is still forming answers provisioning requests
// with timeouts for a while: retried for up to a minute. nil when ctx
// ended first.
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

// builtinWorker is the worker of dispatcher --worker: the built-in task
// types (tasks package), http limited to the allowlist.
func builtinWorker(client *jetstream.Client, tracer trace.TracerProvider, httpAllow string, log zerolog.Logger) (*worker.Worker, error) {
	w, err := worker.New(link.Client(client).(*jetflow.Client), worker.Config{Tracer: tracer, Logger: log})
	if err != nil {
		return nil, err
	}
	if err := tasks.RegisterWith(w, tasks.Options{HTTPAllow: run.SplitList(httpAllow)}); err != nil {
		return nil, err
	}
	return w, nil
}

// startProfiling serves net/http/pprof on addr and writes a CPU profile
// to cpuFile, each when set; stop ends the CPU profile.
func startProfiling(addr, cpuFile string, log zerolog.Logger) (stop func(), _ error) {
	if addr != "" {
		if err := servePprof(addr, log); err != nil {
			return nil, err
		}
	}
	if cpuFile == "" {
		return func() {}, nil
	}
	f, err := os.Create(cpuFile)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// and logs which keys are in use, never the secrets.
func loadTaskTokens(path string, log zerolog.Logger) (*tasktoken.Keyring, error) {
	if path == "" {
		log.Info().Msg("task tokens off (--task-token-key-file): results are accepted without a token")
		return nil, nil
	}
	ring, err := tasktoken.Load(path)
	if err != nil {
		return nil, fmt.Errorf("--task-token-key-file (JETFLOW_TASK_TOKEN_KEY_FILE): %w", err)
	}
	ids := func() []string {
		var ids []string
		for _, k := range ring.Keys().Keys {
			ids = append(ids, k.ID())
		}
		return ids
	}
	ring.OnReload = func(err error) {
		if err != nil {
			log.Error().Err(err).Str("file", path).Msg("task token key file changed but cannot be read; keeping the keys in use")
			return
		}
		log.Info().Str("file", path).Strs("key_ids", ids()).Msg("task token keys reloaded")
	}
	log.Info().Str("file", path).Strs("key_ids", ids()).Msg("task tokens on")
	return ring, nil
}
