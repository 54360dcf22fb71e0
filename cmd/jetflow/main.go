// Command jetflow is the command-line client: register definitions, fire
// events, inspect and cancel instances, read dead letters, and run
// benchmarks.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/internal/run"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "jetflow:", err)
		os.Exit(1)
	}
}

// newRoot builds the command tree. cobra (spf13/cobra) gives subcommands,
// help and flag parsing that a hand-written flag switch would repeat.
func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "jetflow",
		Short:         "jetflow: workflows on NATS JetStream",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	g.conn.Register(root.PersistentFlags(), run.ConnOptions{DefaultURL: "nats://127.0.0.1:4222", URLHelp: "default nats://127.0.0.1:4222 or the NATS context's", UseSelected: true})
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print JSON instead of text")
	root.PersistentFlags().DurationVar(&g.connectTimeout, "connect-timeout", envDuration("JETFLOW_CONNECT_TIMEOUT", 2*time.Second), "give up when no NATS server answers within this long (env JETFLOW_CONNECT_TIMEOUT)")
	root.AddCommand(
		validateCmd(), registerCmd(g), definitionsCmd(g), publishCmd(g), startCmd(g),
		instancesCmd(g), showCmd(g), waitCmd(g), cancelCmd(g), signalCmd(g), childrenCmd(g), statsCmd(g), dlqCmd(g), retryCmd(g), benchCmd(g),
		workersCmd(g), dispatchersCmd(g), explainCmd(g), uiCmd(g), schedulesCmd(g), scheduleCmd(g),
		provisionCmd(g), securityCmd(),
	)
	root.AddCommand(processCmds()...)
	return root
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
