// Command jetflow is the command-line client: register definitions, fire
// events, inspect and cancel instances, read dead letters, and run
// benchmarks.
package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/cli/dispatchercmd"
	"github.com/jetflow/jetflow/internal/cli/servercmd"
	"github.com/jetflow/jetflow/internal/cli/workercmd"
	"github.com/jetflow/jetflow/internal/run"
)

//go:generate go test -run TestGeneratedDocs -update-docs .

func main() { cli.Main(newRoot()) }

// newRoot builds the command tree. cobra (spf13/cobra) gives subcommands,
// help and flag parsing that a hand-written flag switch would repeat. The
// client commands share the connection flags, --json and
// --connect-timeout; dispatcher, worker and server have flags of their
// own (the same as the dispatcher and worker binaries).
func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "jetflow",
		Short: "jetflow: workflows on NATS JetStream",
		Long: `jetflow: workflows on NATS JetStream.

The client commands connect to NATS as natscli does (--nats-url, --context,
credentials). Their shared flags (the connection, --json, --connect-timeout;
before or after the command's name) and every flag of dispatcher, worker,
server and provision can also be set by an environment variable: JETFLOW_
and the flag's name in upper case with dashes as underscores (--nats-url: JETFLOW_NATS_URL).`,
	}
	pf := root.PersistentFlags()
	g.conn.Register(pf, run.ConnOptions{DefaultURL: "nats://127.0.0.1:4222", URLHelp: "default nats://127.0.0.1:4222 or the NATS context's", UseSelected: true})
	pf.BoolVar(&g.json, "json", false, "print JSON (snake_case fields) instead of text")
	pf.DurationVar(&g.connectTimeout, "connect-timeout", 2*time.Second, "give up when no NATS server answers within this long")
	root.AddCommand(
		validateCmd(), registerCmd(g), definitionsCmd(g), publishCmd(g), startCmd(g),
		instancesCmd(g), showCmd(g), waitCmd(g), cancelCmd(g), signalCmd(g), childrenCmd(g), statsCmd(g), dlqCmd(g), retryCmd(g), benchCmd(g),
		workersCmd(g), dispatchersCmd(g), explainCmd(g), decodeCmd(), uiCmd(g), schedulesCmd(g), scheduleCmd(g),
		provisionCmd(g), securityCmd(),
	)
	root.AddCommand(pauseCmds(g)...)
	// The long-running commands have flags of their own, and none of the
	// client commands' (cli.Setup).
	root.AddCommand(dispatchercmd.New(), workercmd.New(), servercmd.New())
	root.DisableAutoGenTag = true
	return cli.Setup(root)
}

// envDuration and envOr read the variables of `jetflow ui`, whose flags
// (--listen, --read-only) are named for that command alone and so take
// JETFLOW_UI_ variables rather than the JETFLOW_<FLAG> rule.
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
