package jetflowtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jetflow/jetflow"
	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/worker"
	"github.com/jetflow/jetflow/workflow"
)

// Ack waits of the engine: short, so a test that stops a worker or a
// dispatcher sees its work handed over within seconds.
const (
	workerAckWait     = 2 * time.Second
	dispatcherAckWait = 5 * time.Second
)

// Engine is a real jetflow for an integration test: an embedded NATS
// server with JetStream (in a temporary directory, on a free loopback
// port) and a dispatcher, with jetflow provisioned. Nothing is mocked.
type Engine struct {
	// Client is an application's client, on its own connection to URL.
	// Pass it to worker.New.
	Client *jetflow.Client
	// URL is the server's address (nats://127.0.0.1:<port>), for
	// connections of your own (jetflow.New).
	URL string

	dir     string
	srv     *embedded.Server
	adapter *jetstream.Client // the dispatcher's
	stop    chan struct{}     // closed by Close: the dispatcher and workers stop
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
	closed  sync.Once
	err     error
}

// Start starts an Engine with the given workflow definitions (YAML or
// JSON sources, as `jetflow register` takes them) and closes it when the
// test ends. It fails the test when the engine cannot start, and when a
// dispatcher or a worker run with Engine.Run stopped with an error.
func Start(t testing.TB, defs ...string) *Engine {
	t.Helper()
	e, err := NewEngine(t.Context(), defs...)
	if err != nil {
		t.Fatalf("jetflowtest: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("jetflowtest: %v", err)
		}
	})
	return e
}

// NewEngine is Start without a test: the caller must Close the engine.
// ctx bounds the start only.
func NewEngine(ctx context.Context, defs ...string) (_ *Engine, err error) {
	dir, err := os.MkdirTemp("", "jetflowtest-")
	if err != nil {
		return nil, err
	}
	e := &Engine{dir: dir, stop: make(chan struct{})}
	defer func() {
		if err != nil {
			_ = e.Close()
		}
	}()
	if e.srv, err = embedded.Start(embedded.Config{StoreDir: dir, Host: "127.0.0.1", Port: -1}); err != nil {
		return nil, err
	}
	e.URL = e.srv.ClientURL()
	e.adapter, err = jetstream.Connect(ctx, jetstream.Config{Server: e.srv, Name: "jetflowtest-dispatcher",
		DispatcherAckWait: dispatcherAckWait, WorkerAckWait: workerAckWait})
	if err != nil {
		return nil, err
	}
	if err := e.adapter.Provision(ctx); err != nil {
		return nil, err
	}
	for _, src := range defs {
		if err := e.Register(ctx, src); err != nil {
			return nil, err
		}
	}
	d, err := dispatcher.New(e.adapter, dispatcher.Config{StatsInterval: -1, RetryDelay: 200 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	e.background("dispatcher", d.Run)
	if e.Client, err = jetflow.Connect(ctx, e.URL, jetflow.WithName("jetflowtest"), jetflow.WithWorkerAckWait(workerAckWait)); err != nil {
		return nil, err
	}
	return e, nil
}

// Register validates a workflow definition and stores it; the dispatcher
// picks it up at once, and its trigger subject is captured from then on.
func (e *Engine) Register(ctx context.Context, src string) error {
	def, err := workflow.Parse("definition", []byte(src))
	if err != nil {
		return err
	}
	if def.Trigger != nil {
		if err := e.adapter.EnsureTriggerSubjects(ctx, def.Trigger.Subject); err != nil {
			return fmt.Errorf("definition %s: %w", def.Name, err)
		}
	}
	return e.adapter.PutDefinition(ctx, def, []byte(src))
}

// Run runs w in the background until the engine closes, which drains it
// first. Call it before Close.
func (e *Engine) Run(w *worker.Worker) {
	e.background("worker", w.Run)
}

// background runs run until it returns, under a context that ends at
// Close, and keeps its error for Close.
func (e *Engine) background(what string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		<-e.stop
		cancel()
	}()
	go func() {
		defer e.wg.Done()
		defer cancel()
		if err := run(ctx); err != nil {
			e.mu.Lock()
			e.errs = append(e.errs, fmt.Errorf("%s: %w", what, err))
			e.mu.Unlock()
		}
	}()
}

// Close stops the workers started with Run (draining them), the
// dispatcher and the server, removes the store directory, and returns
// the errors the workers and the dispatcher stopped with.
func (e *Engine) Close() error {
	e.closed.Do(func() {
		close(e.stop)
		e.wg.Wait()
		if e.Client != nil {
			e.Client.Close()
		}
		if e.adapter != nil {
			e.adapter.Close()
		}
		if e.srv != nil {
			e.srv.Shutdown()
		}
		e.errs = append(e.errs, os.RemoveAll(e.dir))
		e.err = errors.Join(e.errs...)
	})
	return e.err
}
