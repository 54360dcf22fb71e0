package serve

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/internal/run"
)

// Server runs only an embedded NATS server with JetStream until ctx ends,
// so benchmarks can measure the server and the dispatcher as separate
// processes.
func Server(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	var (
		storeDir   = fs.String("store-dir", "jetflow-data", "JetStream store directory")
		listen     = fs.String("listen", "127.0.0.1:4222", "client address")
		syncAlways = fs.Bool("sync-always", false, "fsync every write before acknowledging it")
		config     = fs.String("server-config", "", "NATS server config file (accounts, users, TLS)")
		insecure   = fs.Bool("insecure", false, "allow listening beyond loopback without authentication")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := run.Logger(os.Stderr, "json", "warn", "server")
	if err != nil {
		return err
	}
	sc, err := serverConfig(*listen)
	if err != nil {
		return err
	}
	sc.StoreDir, sc.SyncAlways = *storeDir, *syncAlways
	sc.ConfigFile, sc.Insecure = *config, *insecure
	slog := log.With().Str("component", "nats-server").Logger()
	sc.Logger = &slog
	srv, err := embedded.Start(sc)
	if err != nil {
		return err
	}
	<-ctx.Done()
	srv.Shutdown()
	return nil
}
