// Package serve runs the commands that may start an embedded NATS server:
// the dispatcher and the bare server. It is the only part of the binaries
// that links nats-server (through package embedded); the worker command
// (package run) does not, so a worker binary stays small.
package serve

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/internal/run"
	"github.com/jetflow/jetflow/jetstream"
)

// serverConfig turns a listen address ("" for in-process only) into an
// embedded server config.
func serverConfig(listen string) (embedded.Config, error) {
	var sc embedded.Config
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

// Open connects to NATS, starting the embedded server when no URL is set.
// close releases both.
func Open(ctx context.Context, c run.Conn, cfg jetstream.Config, log zerolog.Logger) (client *jetstream.Client, srv *embedded.Server, closeFn func(), err error) {
	cfg.URL = c.URL
	cfg.Replicas = c.Replicas
	cfg.Logger = log
	cfg.Auth, cfg.InboxPrefix = c.Auth, c.InboxPrefix
	if c.URL == "" {
		srv, err = StartServer(c, log)
		if err != nil {
			return nil, nil, nil, err
		}
		cfg.Server = srv
		log.Info().Str("store_dir", c.StoreDir).Str("listen", c.Listen).Bool("sync_always", c.SyncAlways).Str("server_config", c.ServerConfig).Msg("embedded NATS server started")
	}
	client, err = jetstream.Connect(ctx, cfg)
	if err != nil {
		if srv != nil {
			srv.Shutdown()
		}
		return nil, nil, nil, err
	}
	run.LogConnected(log, c)
	return client, srv, func() {
		client.Close()
		if srv != nil {
			srv.Shutdown()
		}
	}, nil
}
