// Command dispatcher runs a jetflow dispatcher. With no NATS URL it starts
// an embedded NATS server with JetStream first, so this one command runs
// jetflow on a fresh machine; with --worker it also runs the built-in task
// types in-process. Flags: see internal/serve.Dispatcher or --help.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/jetflow/jetflow/internal/serve"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := serve.Dispatcher(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}
