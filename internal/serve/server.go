package serve

import (
	"errors"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/internal/run"
)

// StartServer starts the embedded server c describes (StoreDir, Listen,
// SyncAlways, ServerConfig, Insecure): the dispatcher's when it has no
// URL, and `jetflow server`.
func StartServer(c run.Conn, log zerolog.Logger) (*embedded.Server, error) {
	sc, err := serverConfig(c.Listen)
	if err != nil {
		return nil, err
	}
	sc.StoreDir, sc.SyncAlways = c.StoreDir, c.SyncAlways
	sc.ConfigFile, sc.Insecure = c.ServerConfig, c.Insecure
	slog := log.With().Str("component", "nats-server").Logger()
	sc.Logger = &slog
	srv, err := embedded.Start(sc)
	if errors.Is(err, embedded.ErrStoreLocked) {
		return nil, fmt.Errorf("%w (a dispatcher started with `go run` keeps running when `go run` itself is sent SIGTERM or SIGKILL; see README \"Run it\")", err)
	}
	return srv, err
}
