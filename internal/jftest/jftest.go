// Package jftest starts real embedded JetStream servers and jetflow
// components for tests. Nothing here mocks NATS.
package jftest

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/internal/link"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// Env is one embedded server with a provisioned client.
type Env struct {
	T      testing.TB
	Dir    string
	Server *embedded.Server
	Client *jetstream.Client
	Config jetstream.Config
	Log    zerolog.Logger
	// URL is the server's client URL on loopback (StartTCP), or "".
	URL string
	tcp bool
}

// Logger returns a logger that writes to the test log when JETFLOW_TEST_LOG
// is set, and discards otherwise.
func Logger(t testing.TB) zerolog.Logger {
	if os.Getenv("JETFLOW_TEST_LOG") == "" {
		return zerolog.Nop()
	}
	return zerolog.New(zerolog.ConsoleWriter{Out: zerolog.TestWriter{T: t}}).Level(zerolog.DebugLevel).With().Timestamp().Logger()
}

// Start starts an embedded server in a temporary directory and a client
// with jetflow provisioned. cfg may adjust the client config.
func Start(t testing.TB, cfg jetstream.Config) *Env {
	t.Helper()
	return start(t, cfg, false)
}

// StartTCP is Start with the server also listening on a free loopback
// port (Env.URL), for clients in other processes.
func StartTCP(t testing.TB, cfg jetstream.Config) *Env {
	t.Helper()
	return start(t, cfg, true)
}

func start(t testing.TB, cfg jetstream.Config, tcp bool) *Env {
	t.Helper()
	e := &Env{T: t, Dir: t.TempDir(), Log: Logger(t), tcp: tcp}
	if cfg.DispatcherAckWait == 0 {
		cfg.DispatcherAckWait = 5 * time.Second
	}
	if cfg.WorkerAckWait == 0 {
		cfg.WorkerAckWait = 2 * time.Second
	}
	e.Config = cfg
	e.start()
	t.Cleanup(e.stop)
	return e
}

func (e *Env) start() {
	t := e.T
	sc := embedded.Config{StoreDir: e.Dir, DontListen: true}
	if e.tcp {
		sc = embedded.Config{StoreDir: e.Dir, Host: "127.0.0.1", Port: -1}
	}
	srv, err := embedded.Start(sc)
	require.NoError(t, err)
	e.URL = srv.ClientURL()
	cfg := e.Config
	cfg.Server = srv
	cfg.Logger = e.Log
	client, err := jetstream.Connect(context.Background(), cfg)
	require.NoError(t, err)
	require.NoError(t, client.Provision(context.Background()))
	e.Server, e.Client = srv, client
}

func (e *Env) stop() {
	if e.Client != nil {
		e.Client.Close()
	}
	if e.Server != nil {
		e.Server.Shutdown()
	}
	e.Client, e.Server = nil, nil
}

// Restart stops the server and starts it again on the same store
// directory. Components holding the old client must be restarted too.
func (e *Env) Restart() {
	e.stop()
	e.start()
}

// RestartAfter stops the server, keeps it down for downtime (the
// scenario under test, such as schedules missing fire times), and starts
// it again on the same store directory.
func (e *Env) RestartAfter(downtime time.Duration) {
	e.stop()
	time.Sleep(downtime)
	e.start()
}

// NewClient opens another connection to the same server (another
// "process").
func (e *Env) NewClient() *jetstream.Client {
	cfg := e.Config
	cfg.Server = e.Server
	cfg.Logger = e.Log
	c, err := jetstream.Connect(context.Background(), cfg)
	require.NoError(e.T, err)
	require.NoError(e.T, c.Bind(context.Background()))
	e.T.Cleanup(c.Close)
	return c
}

// App is the *jetflow.Client on an adapter client that is bound (the
// clients Start and NewClient return are).
func App(c *jetstream.Client) *jetflow.Client { return link.Client(c).(*jetflow.Client) }

// Register parses and stores a definition.
func (e *Env) Register(src string) *workflow.Definition {
	e.T.Helper()
	def, err := workflow.Parse("test.yaml", []byte(src))
	require.NoError(e.T, err)
	require.NoError(e.T, e.Client.PutDefinition(context.Background(), def, []byte(src)))
	if def.Trigger != nil {
		require.NoError(e.T, e.Client.EnsureTriggerSubjects(context.Background(), def.Trigger.Subject))
	}
	return def
}

// Running is a component running in the background.
type Running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Stop stops the component gracefully and returns its error.
func (r *Running) Stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
	})
	return r.err
}

func background(t testing.TB, fn func(ctx context.Context) error) *Running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- fn(ctx) }()
	t.Cleanup(func() { _ = r.Stop() })
	return r
}

// Dispatcher runs a dispatcher on client (e.Client when nil): a
// *jetstream.Client, or a test's wrapper of one that injects faults.
func (e *Env) Dispatcher(client dispatcher.Backend, cfg dispatcher.Config) (*dispatcher.Dispatcher, *Running) {
	e.T.Helper()
	if client == nil {
		client = e.Client
	}
	cfg.Logger = e.Log
	if cfg.StatsInterval == 0 {
		cfg.StatsInterval = -1
	}
	if cfg.RetryDelay == 0 {
		cfg.RetryDelay = 200 * time.Millisecond
	}
	d, err := dispatcher.New(client, cfg)
	require.NoError(e.T, err)
	return d, background(e.T, d.Run)
}

// Worker runs a worker with the given handlers on client (e.Client when
// nil).
func (e *Env) Worker(client *jetstream.Client, cfg worker.Config, handlers map[string]worker.Handler) (*worker.Worker, *Running) {
	e.T.Helper()
	if client == nil {
		client = e.Client
	}
	cfg.Logger = e.Log
	w, err := worker.New(App(client), cfg)
	require.NoError(e.T, err)
	for name, h := range handlers {
		require.NoError(e.T, w.Handle(name, h))
	}
	return w, background(e.T, w.Run)
}

// Instance reads an instance (nil when it does not exist).
func (e *Env) Instance(id string) *workflow.Instance {
	inst, _, err := e.Client.GetInstance(context.Background(), id)
	if err != nil {
		return nil
	}
	return inst
}

// WaitTerminal polls until the instance is terminal or the deadline passes.
func (e *Env) WaitTerminal(id string, timeout time.Duration) *workflow.Instance {
	e.T.Helper()
	var inst *workflow.Instance
	Eventually(e.T, timeout, func() bool {
		inst = e.Instance(id)
		return inst != nil && inst.Status.Terminal()
	}, "instance %s did not finish", id)
	return inst
}

// Eventually polls cond every 20ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// EventuallyProgressing polls cond every 20ms until it holds, for a
// condition the system reaches through many steps at a pace set by the
// machine's load (a thousand workflows finishing, a fan-out counting its
// children). It fails when progress, a measure that changes with every
// step the system takes (a count of writes, of children counted), has not
// changed for stall, or when limit has passed in all. A loaded machine
// then takes longer but does not fail; a system that stopped moving fails
// after stall, however long limit is.
func EventuallyProgressing(t testing.TB, stall, limit time.Duration, cond func() bool, progress func() int64, msg string, args ...any) {
	t.Helper()
	start := time.Now()
	last, moved := progress(), start
	for !cond() {
		now := time.Now()
		if p := progress(); p != last {
			last, moved = p, now
		}
		switch {
		case now.Sub(moved) > stall:
			t.Fatalf("no progress for %s (progress %d, after %s): "+msg, append([]any{stall, last, now.Sub(start).Round(time.Second)}, args...)...)
		case now.Sub(start) > limit:
			t.Fatalf("still progressing but not done after %s (progress %d): "+msg, append([]any{limit, last}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
