package dispatcher_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jetflow/jetflow/dispatcher"
	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/workflow"
)

// A dispatcher in your own binary: an embedded server, jetflow
// provisioned, a definition registered, and the dispatcher applying a
// start. (cmd/dispatcher does this from flags; jetflowtest.Start does it
// for tests.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, _ := os.MkdirTemp("", "jetflow-dispatcher-example-")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Config{StoreDir: dir, DontListen: true})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	client, err := jetstream.Connect(ctx, jetstream.Config{Server: srv})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	if err := client.Provision(ctx); err != nil {
		panic(err)
	}
	src := []byte("name: nap\nversion: 1\nsteps:\n  - {name: a, kind: sleep, duration: 1s}\n")
	def, err := workflow.Parse("nap.yaml", src)
	if err != nil {
		panic(err)
	}
	if err := client.PutDefinition(ctx, def, src); err != nil {
		panic(err)
	}

	d, err := dispatcher.New(client, dispatcher.Config{StatsInterval: -1})
	if err != nil {
		panic(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- d.Run(runCtx) }()

	if err := client.PublishStart(ctx, jetstream.Start{Workflow: "nap", EventKey: "k"}); err != nil {
		panic(err)
	}
	id := workflow.InstanceID("nap", "k")
	for {
		inst, _, err := client.GetInstance(ctx, id)
		if err == nil && inst.Status.Terminal() {
			fmt.Println(inst.Status)
			break
		}
		select {
		case <-ctx.Done():
			panic(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	stop()
	fmt.Println("dispatcher stopped:", <-stopped)
	// Output:
	// completed
	// dispatcher stopped: <nil>
}
