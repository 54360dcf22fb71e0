// Package dispatchercmd is the dispatcher command: `dispatcher` and
// `jetflow dispatcher` are this one command.
package dispatchercmd

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/internal/serve"
)

// New returns the dispatcher command.
func New() *cobra.Command {
	var o serve.DispatcherOptions
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
		RunE: func(cmd *cobra.Command, _ []string) error { return serve.RunDispatcher(cmd.Context(), o) },
	}
	fs := cmd.Flags()
	o.Conn.Register(fs, run.ConnOptions{URLHelp: "empty starts an embedded server"})
	fs.StringVar(&o.StoreDir, "store-dir", "jetflow-data", "embedded server: JetStream store directory")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:4222", "embedded server: client address; empty for in-process only")
	fs.BoolVar(&o.SyncAlways, "sync-always", false, "embedded server: fsync every write before acknowledging it")
	fs.StringVar(&o.ServerConfig, "server-config", "", "embedded server: NATS server config file (accounts, users, TLS), e.g. from jetflow security init")
	fs.BoolVar(&o.Insecure, "insecure", false, "embedded server: allow listening beyond loopback without authentication")
	fs.BoolVar(&o.NoProvision, "no-provision", false, "never create or update streams and consumers, only check they exist (what jetflow provision made); automatic when the NATS user may not provision")
	fs.StringVar(&o.TokenKeys, "task-token-key-file", "", "sign tasks and accept only results that echo their token, with the keys in this file (jetflow security token-key); every dispatcher must read the same file; re-read when it changes; empty: off, any NATS user allowed to publish results can complete any step")
	fs.IntVar(&o.Replicas, "replicas", 1, "replicas of streams and buckets (3 on a cluster)")
	fs.IntVar(&o.Shards, "shards", 64, "event-applying goroutines")
	fs.DurationVar(&o.AckWait, "ack-wait", 30*time.Second, "how soon events held by a crashed dispatcher are redelivered")
	fs.DurationVar(&o.WorkerAckWait, "worker-ack-wait", 10*time.Second, "with --worker: how soon a task held by a worker that died is redelivered, counted from its last heartbeat (every fifth of this); use the same value on every worker")
	fs.DurationVar(&o.ReqTimeout, "request-timeout", 5*time.Second, "give up on a NATS request (a KV read or write, a publish's ack) unanswered this long, e.g. one sent to a stream leader that just died; its events are retried")
	fs.StringVar(&o.DefsDir, "definitions", "", "register every *.yaml, *.yml and *.json definition in this directory at start")
	fs.StringVar(&o.HTTPAllow, "http-allow", "", "with --worker: hosts the built-in http task may call, comma-separated: names, *.domain, IP addresses, CIDR prefixes, or * for any; loopback is always allowed, nothing else by default (a definition or an input could otherwise send data to any URL or reach internal addresses)")
	fs.BoolVar(&o.WithWorker, "worker", false, "also run the built-in task types (echo, noop, sleep, fail, http) in this process")
	fs.StringVar(&o.LogFormat, "log-format", "json", "json or console")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.CPUProfile, "cpu-profile", "", "write a CPU profile to this file until the dispatcher stops")
	fs.StringVar(&o.PprofAddr, "pprof-listen", "", "serve net/http/pprof (heap, goroutines, CPU) on this address, e.g. 127.0.0.1:6060; empty: off")
	fs.DurationVar(&o.RepairInt, "repair-interval", 5*time.Second, "how often the repair loop looks for stalled instances; negative disables it")
	fs.DurationVar(&o.StaleTask, "stale-task", 10*time.Minute, "a task attempt without a timeout and without a result for this long is presumed lost and retried")
	fs.StringVar(&o.MaxPayload, "max-payload", "1MiB", "largest trigger payload, input and output; a larger trigger is dead-lettered; at least 1KiB and at most the NATS server's max_payload (the embedded server's is 8MiB)")
	fs.StringVar(&o.MetricsAt, "metrics-listen", "", "serve Prometheus /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9090 or :9090; empty: off")
	fs.StringVar(&o.Name, "name", "", "this dispatcher's name in the list of jetflow dispatchers; default <host>-<pid>")
	fs.StringVar(&o.UIListen, "ui-listen", "", "also serve the web console (jetflow ui) on this address, e.g. 127.0.0.1:8233, with the dispatcher's connection; empty: off")
	fs.BoolVar(&o.UIReadOnly, "ui-read-only", false, "with --ui-listen: offer no action (cancel, signal, retry, replay)")
	fs.BoolVar(&o.UIRemote, "ui-allow-remote", false, "with --ui-listen: listen beyond loopback (the console has no login; put an authenticating proxy in front)")
	fs.DurationVar(&o.Retention, "instance-retention", 0, "remove an ended instance's key this long after it ended (a duration such as 720h); 0 keeps instances forever; at least 24h (the trigger retention); a replay of the event key after that starts a new instance")
	return cli.Setup(cmd)
}

// Run runs the dispatcher command with args (without the program name)
// until ctx ends, as the dispatcher binary would.
func Run(ctx context.Context, args []string) error {
	cmd := New()
	cmd.SetArgs(args)
	return cmd.ExecuteContext(ctx)
}
