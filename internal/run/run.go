// Package run holds what the commands share: connection flags, logger
// setup, metrics and tracing, sizes and lists; the embedded server is
// package serve's.
package run

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

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

// LogConnected logs where and how a process connected, without secrets.
func LogConnected(log zerolog.Logger, c Conn) {
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
