// Package run holds what the binaries in cmd/ share: flag defaults from the
// environment, logger setup and the connection or embedded server.
package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/jetstream"
)

// Env returns the environment variable or def.
func Env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// EnvInt returns the environment variable as an int, or def.
func EnvInt(name string, def int) int {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}

// EnvBool returns the environment variable as a bool, or def.
func EnvBool(name string, def bool) bool {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		if b, err := strconv.ParseBool(v); err == nil {
			return b
		}
	}
	return def
}

// EnvDuration returns the environment variable as a duration, or def.
func EnvDuration(name string, def time.Duration) time.Duration {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

// ParseSize reads a size in bytes: a plain number, or one with a KiB,
// MiB or GiB suffix ("1MiB", "512KiB").
func ParseSize(s string) (int, error) {
	num, mult := strings.TrimSpace(s), 1
	for _, u := range []struct {
		suffix string
		mult   int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(n), u.mult
			break
		}
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || n > (1<<31-1)/mult {
		return 0, fmt.Errorf("%q is not a size: use bytes, or KiB, MiB or GiB (for example 1MiB)", s)
	}
	return n * mult, nil
}

// Logger builds the process logger: JSON by default, "console" for people.
func Logger(w io.Writer, format, level, component string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("unknown log level %q (use debug, info, warn or error)", level)
	}
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Logger{}, fmt.Errorf("unknown log format %q (use json or console)", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("service", component).Logger(), nil
}

// Conn describes how to reach NATS.
type Conn struct {
	URL        string // empty: embedded server
	StoreDir   string // embedded: JetStream store directory
	Listen     string // embedded: host:port to listen on, "" for in-process only
	SyncAlways bool   // embedded: fsync every write
	Replicas   int
	// Auth and InboxPrefix: credentials, TLS and reply subjects (also of
	// the in-process connection to an embedded server with users).
	Auth        jetstream.Auth
	InboxPrefix string
	// Context is the natscli context the settings came from ("" for none).
	Context string
	// ServerConfig is a NATS server config file for the embedded server.
	ServerConfig string
	// Insecure lets the embedded server listen beyond loopback without
	// authentication.
	Insecure bool
}

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
func Open(ctx context.Context, c Conn, cfg jetstream.Config, log zerolog.Logger) (client *jetstream.Client, srv *embedded.Server, closeFn func(), err error) {
	cfg.URL = c.URL
	cfg.Replicas = c.Replicas
	cfg.Logger = log
	cfg.Auth, cfg.InboxPrefix = c.Auth, c.InboxPrefix
	if c.URL == "" {
		sc, err := serverConfig(c.Listen)
		if err != nil {
			return nil, nil, nil, err
		}
		sc.StoreDir, sc.SyncAlways = c.StoreDir, c.SyncAlways
		sc.ConfigFile, sc.Insecure = c.ServerConfig, c.Insecure
		slog := log.With().Str("component", "nats-server").Logger()
		sc.Logger = &slog
		srv, err = embedded.Start(sc)
		if errors.Is(err, embedded.ErrStoreLocked) {
			return nil, nil, nil, fmt.Errorf("%w (a dispatcher started with `go run` keeps running when `go run` itself is sent SIGTERM or SIGKILL; see README \"Run it\")", err)
		}
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
	logConnected(log, c)
	return client, srv, func() {
		client.Close()
		if srv != nil {
			srv.Shutdown()
		}
	}, nil
}

// logConnected logs where and how a process connected, without secrets.
func logConnected(log zerolog.Logger, c Conn) {
	url := jetstream.RedactURL(c.URL)
	if url == "" {
		url = "embedded (in-process)"
	}
	log.Info().Str("url", url).Str("auth", c.Auth.String()).Str("inbox_prefix", c.InboxPrefix).Str("nats_context", c.Context).Msg("connected to NATS")
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
