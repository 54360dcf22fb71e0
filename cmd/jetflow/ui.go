package main

import (
	"fmt"
	"net"
	"os"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/console"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
)

// uiCmd serves the web console (package console) with the CLI's
// connection and credentials.
func uiCmd(g *globals) *cobra.Command {
	var (
		listen                string
		readOnly, allowRemote bool
		cfg                   console.Config
	)
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web console: overview, workflows, instances with timelines, dead letters; cancel, signal, retry, replay",
		Long: `Serves the web console on --listen (loopback only unless --allow-remote:
the console has no login of its own). It reads and acts with this
command's NATS credentials: cancel, signal, retry and replay are offered only
when the server says these credentials may publish them, and never with
--read-only. See docs/console.md.`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(cmd *cobra.Command, c *jetstream.Client, _ []string) error {
			ctx := cmd.Context()
			log, err := run.Logger(os.Stderr, "console", "info", "console")
			if err != nil {
				return err
			}
			cfg.Client, cfg.ReadOnly, cfg.Logger = c, readOnly, log
			cs, err := console.New(cfg)
			if err != nil {
				return err
			}
			return console.Serve(ctx, listen, allowRemote, cs.Handler(), log, func(a net.Addr) {
				fmt.Fprintf(cmd.ErrOrStderr(), "jetflow console on http://%s\n", a)
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", envOr("JETFLOW_UI_LISTEN", console.DefaultListen), "address to serve the console on (env JETFLOW_UI_LISTEN)")
	f.BoolVar(&readOnly, "read-only", run.EnvBool("JETFLOW_UI_READ_ONLY", false), "offer no action (cancel, signal, retry, replay), whatever the credentials allow (env JETFLOW_UI_READ_ONLY)")
	f.BoolVar(&allowRemote, "allow-remote", run.EnvBool("JETFLOW_UI_ALLOW_REMOTE", false), "listen beyond loopback (put an authenticating proxy in front) (env JETFLOW_UI_ALLOW_REMOTE)")
	f.DurationVar(&cfg.Refresh, "refresh", envDuration("JETFLOW_UI_REFRESH", 0), "how often open pages update themselves; default 2s, negative never (env JETFLOW_UI_REFRESH)")
	return cmd
}
