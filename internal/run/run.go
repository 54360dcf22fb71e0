// Package run holds what the commands share: connection flags, logger
// setup, metrics and tracing, sizes and lists; the embedded server is
// servercmd's.
package run

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/jetflow/jetflow/jetstream"
)

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
	URL      string // empty: embedded server (the dispatcher's)
	Replicas int
	// Auth and InboxPrefix: credentials, TLS and reply subjects (also of
	// the in-process connection to an embedded server with users).
	Auth        jetstream.Auth
	InboxPrefix string
	// Context is the natscli context the settings came from ("" for none).
	Context string
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
