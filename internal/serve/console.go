package serve

import (
	"context"

	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/jetflow/jetflow/console"
	"github.com/jetflow/jetflow/jetstream"
)

// serveConsole serves the web console on addr in g, with client (the
// dispatcher's connection and credentials), until ctx ends.
func serveConsole(ctx context.Context, g *errgroup.Group, addr string, readOnly, allowRemote bool, client *jetstream.Client, log zerolog.Logger) error {
	cs, err := console.New(console.Config{Client: client, ReadOnly: readOnly, Logger: log})
	if err != nil {
		return err
	}
	g.Go(func() error { return console.Serve(ctx, addr, allowRemote, cs.Handler(), log, nil) })
	return nil
}
