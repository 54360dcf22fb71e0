// Package servercmd is `jetflow server`, an embedded NATS server with
// JetStream and nothing else, and the embedded server of `dispatcher`:
// the one package of the commands that links nats-server.
package servercmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/jetflow/jetflow/internal/cli"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
)

// Flags configure an embedded server.
type Flags struct {
	StoreDir     string
	Listen       string
	SyncAlways   bool
	ServerConfig string
	Insecure     bool
}

// Register adds the embedded server's flags to fs; prefix starts their
// help ("embedded server: " in the dispatcher).
func (f *Flags) Register(fs *pflag.FlagSet, prefix string) {
	fs.StringVar(&f.StoreDir, "store-dir", "jetflow-data", prefix+"JetStream store directory")
	fs.StringVar(&f.Listen, "listen", "127.0.0.1:4222", prefix+"client address; empty for in-process only")
	fs.BoolVar(&f.SyncAlways, "sync-always", false, prefix+"fsync every write before acknowledging it")
	fs.StringVar(&f.ServerConfig, "server-config", "", prefix+"NATS server config file (accounts, users, TLS), e.g. from jetflow security init")
	fs.BoolVar(&f.Insecure, "insecure", false, prefix+"allow listening beyond loopback without authentication")
}

// New returns the server command.
func New() *cobra.Command {
	var f Flags
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
			srv, err := f.Start(log)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			srv.Shutdown()
			return nil
		},
	}
	f.Register(cmd.Flags(), "")
	cmd.Flags().StringVar(&logFormat, "log-format", "json", "json or console")
	cmd.Flags().StringVar(&logLevel, "log-level", "warn", "debug, info, warn or error")
	return cli.Setup(cmd)
}

// Start starts the embedded server f describes.
func (f Flags) Start(log zerolog.Logger) (*jetstream.Server, error) {
	sc, err := serverConfig(f.Listen)
	if err != nil {
		return nil, err
	}
	sc.StoreDir, sc.SyncAlways = f.StoreDir, f.SyncAlways
	sc.ConfigFile, sc.Insecure = f.ServerConfig, f.Insecure
	slog := log.With().Str("component", "nats-server").Logger()
	sc.Logger = &slog
	srv, err := jetstream.StartServer(sc)
	if errors.Is(err, jetstream.ErrStoreLocked) {
		return nil, fmt.Errorf("%w (a dispatcher started with `go run` keeps running when `go run` itself is sent SIGTERM or SIGKILL; see README \"Run it\")", err)
	}
	return srv, err
}

// serverConfig turns a listen address ("" for in-process only) into an
// embedded server config.
func serverConfig(listen string) (jetstream.ServerConfig, error) {
	var sc jetstream.ServerConfig
	if listen == "" {
		sc.DontListen = true
		return sc, nil
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return sc, fmt.Errorf("listen address %q: %w", listen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return sc, fmt.Errorf("listen port %q: %w", port, err)
	}
	sc.Host, sc.Port = host, p
	return sc, nil
}

// Open connects to NATS at c.URL, or, when it is empty, starts the
// embedded server f describes and connects to it in-process. closeFn
// releases both.
func Open(ctx context.Context, c run.Conn, f Flags, cfg jetstream.Config, log zerolog.Logger) (client *jetstream.Client, closeFn func(), err error) {
	cfg.URL = c.URL
	cfg.Replicas = c.Replicas
	cfg.Logger = log
	cfg.Auth, cfg.InboxPrefix = c.Auth, c.InboxPrefix
	var srv *jetstream.Server
	if c.URL == "" {
		srv, err = f.Start(log)
		if err != nil {
			return nil, nil, err
		}
		cfg.Server = srv
		log.Info().Str("store_dir", f.StoreDir).Str("listen", f.Listen).Bool("sync_always", f.SyncAlways).Str("server_config", f.ServerConfig).Msg("embedded NATS server started")
	}
	client, err = jetstream.Connect(ctx, cfg)
	if err != nil {
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, err
	}
	run.LogConnected(log, c)
	return client, func() {
		client.Close()
		if srv != nil {
			srv.Shutdown()
		}
	}, nil
}
