// Package servercmd is `jetflow server`: an embedded NATS server with
// JetStream and nothing else.
package servercmd

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/internal/serve"
)

// New returns the server command.
func New() *cobra.Command {
	var c run.Conn
	var logFormat, logLevel string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run only an embedded NATS server with JetStream",
		Long: `Run only an embedded NATS server with JetStream, until SIGINT or SIGTERM,
so a dispatcher (--nats-url) and the server can run as separate processes,
for example to measure them apart (jetflow bench --separate-server).`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := run.Logger(os.Stderr, logFormat, logLevel, "server")
			if err != nil {
				return err
			}
			srv, err := serve.StartServer(c, log)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			srv.Shutdown()
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&c.StoreDir, "store-dir", "jetflow-data", "JetStream store directory")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:4222", "client address; empty for in-process only")
	fs.BoolVar(&c.SyncAlways, "sync-always", false, "fsync every write before acknowledging it")
	fs.StringVar(&c.ServerConfig, "server-config", "", "NATS server config file (accounts, users, TLS), e.g. from jetflow security init")
	fs.BoolVar(&c.Insecure, "insecure", false, "allow listening beyond loopback without authentication")
	fs.StringVar(&logFormat, "log-format", "json", "json or console")
	fs.StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return cli.Setup(cmd)
}
