package embedded

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// Config configures the embedded NATS server.
type Config struct {
	// StoreDir is the JetStream store directory. Required: the system temp
	// directory is not a safe default for data that must survive reboots.
	StoreDir string
	// Host to listen on. Default "127.0.0.1".
	Host string
	// Port to listen on. Default 4222; -1 picks a free port.
	Port int
	// DontListen serves in-process connections only. Default false.
	DontListen bool
	// SyncAlways fsyncs every write before acknowledging it. Default false:
	// the server fsyncs every 2 minutes, so an OS crash (not a process
	// crash) can lose the last writes. See README "Durability".
	SyncAlways bool
	// MaxPayload is the largest message the server accepts. Default 8 MiB.
	MaxPayload int32
	// ReadyTimeout bounds the wait for the server to start. Default 10s.
	ReadyTimeout time.Duration
	// ConfigFile is a NATS server configuration file to start from: its
	// accounts, users, permissions and TLS apply. JetStream is always on;
	// StoreDir, Host and Port apply where the file sets none. Default:
	// none.
	ConfigFile string
	// Insecure allows listening on an address other than loopback without
	// authentication (users, nkeys, a token, operator JWTs or verified
	// client certificates, and no no_auth_user). Default false: such a
	// server is refused, since anyone who reaches the port could read and
	// change every workflow.
	Insecure bool
	// Logger receives the server's log lines. Default: discarded.
	Logger *zerolog.Logger
}

// WithDefaults returns the config with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Port == 0 {
		c.Port = 4222
	}
	if c.MaxPayload == 0 {
		c.MaxPayload = 8 << 20
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 10 * time.Second
	}
	return c
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.StoreDir == "" {
		return errors.New("embedded server: store directory is required (set --store-dir)")
	}
	if c.MaxPayload < 1<<10 {
		return fmt.Errorf("embedded server: max payload %d is below 1 KiB", c.MaxPayload)
	}
	return nil
}

// Server is an embedded nats-server with JetStream.
type Server struct {
	s    *server.Server
	lock *storeLock
}

// Start starts an embedded server with JetStream on cfg.StoreDir and
// waits until it accepts connections. It first takes an exclusive lock on
// the store directory (StoreLockFile, held until Shutdown or the process
// exits): a store held by another process fails at once with a
// *StoreLockedError (errors.Is ErrStoreLocked) naming the directory and
// the holder's pid.
func Start(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("embedded server: store dir %q: %w", cfg.StoreDir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded server: create store dir %q: %w", dir, err)
	}
	lock, err := lockStore(dir)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName: "jetflow-embedded",
		Host:       cfg.Host,
		Port:       cfg.Port,
		DontListen: cfg.DontListen,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: cfg.SyncAlways,
		MaxPayload: cfg.MaxPayload,
		NoSigs:     true,
		NoLog:      cfg.Logger == nil,
	}
	if cfg.ConfigFile != "" {
		if opts, err = fileOptions(cfg, opts); err != nil {
			lock.release()
			return nil, err
		}
	}
	if err := checkExposure(opts, cfg.Insecure); err != nil {
		lock.release()
		return nil, err
	}
	s, err := server.NewServer(opts)
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("embedded server: %w", err)
	}
	if cfg.Logger != nil {
		s.SetLoggerV2(serverLogger{cfg.Logger}, false, false, false)
	}
	s.Start()
	if !s.ReadyForConnections(cfg.ReadyTimeout) {
		s.Shutdown()
		s.WaitForShutdown()
		lock.release()
		return nil, fmt.Errorf("embedded server: not ready after %s (is %s:%d in use?)", cfg.ReadyTimeout, opts.Host, opts.Port)
	}
	return &Server{s: s, lock: lock}, nil
}

// ClientURL is the URL clients connect to ("" with DontListen).
func (s *Server) ClientURL() string {
	if s.s.Addr() == nil {
		return ""
	}
	return s.s.ClientURL()
}

// InProcessConn returns a connection to the server that does not use the
// network, so a nats.go client can connect with nats.InProcessServer(srv).
func (s *Server) InProcessConn() (net.Conn, error) { return s.s.InProcessConn() }

// Shutdown stops the server, waits for it and releases the store lock.
func (s *Server) Shutdown() {
	s.s.Shutdown()
	s.s.WaitForShutdown()
	s.lock.release()
}

type serverLogger struct{ l *zerolog.Logger }

func (l serverLogger) Noticef(format string, v ...any) { l.l.Info().Msgf(format, v...) }
func (l serverLogger) Warnf(format string, v ...any)   { l.l.Warn().Msgf(format, v...) }
func (l serverLogger) Fatalf(format string, v ...any)  { l.l.Error().Msgf(format, v...) }
func (l serverLogger) Errorf(format string, v ...any)  { l.l.Error().Msgf(format, v...) }
func (l serverLogger) Debugf(format string, v ...any)  { l.l.Debug().Msgf(format, v...) }
func (l serverLogger) Tracef(format string, v ...any)  { l.l.Trace().Msgf(format, v...) }

// fileOptions reads cfg.ConfigFile and applies jetflow's needs over it:
// JetStream on, and the store directory, address, fsync and payload
// settings of cfg where the file sets none.
func fileOptions(cfg Config, base *server.Options) (*server.Options, error) {
	opts, err := server.ProcessConfigFile(cfg.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("embedded server: config file %s: %w", cfg.ConfigFile, err)
	}
	if opts.ServerName == "" {
		opts.ServerName = base.ServerName
	}
	opts.JetStream = true
	if opts.StoreDir == "" {
		opts.StoreDir = base.StoreDir
	}
	if opts.Host == "" && opts.Port == 0 {
		opts.Host, opts.Port = base.Host, base.Port
	}
	opts.DontListen = opts.DontListen || base.DontListen
	opts.SyncAlways = opts.SyncAlways || base.SyncAlways
	if opts.MaxPayload == 0 {
		opts.MaxPayload = base.MaxPayload
	}
	opts.NoSigs, opts.NoLog = true, base.NoLog
	return opts, nil
}

// ErrInsecureListen is returned for a server that would accept anyone on
// an address other than loopback.
var ErrInsecureListen = errors.New("embedded server: refusing to listen on a non-loopback address without authentication")

// checkExposure refuses a server that listens beyond loopback and lets
// clients in without credentials, unless insecure.
func checkExposure(opts *server.Options, insecure bool) error {
	if insecure || opts.DontListen || isLoopbackHost(opts.Host) || requiresAuth(opts) {
		return nil
	}
	host := opts.Host
	if host == "" {
		host = "0.0.0.0"
	}
	return fmt.Errorf("%w (%s): anyone who reaches port %d could read and change every workflow. Configure users with --server-config (see `jetflow security init`), listen on 127.0.0.1, or pass --insecure to accept the risk", ErrInsecureListen, host, opts.Port)
}

// requiresAuth reports whether the server options make every client
// authenticate.
func requiresAuth(o *server.Options) bool {
	if o.NoAuthUser != "" {
		return false // anyone is that user
	}
	return len(o.Users) > 0 || len(o.Nkeys) > 0 || o.Authorization != "" || o.Username != "" ||
		len(o.TrustedOperators) > 0 || len(o.TrustedKeys) > 0 || o.AuthCallout != nil || o.CustomClientAuthentication != nil ||
		(o.TLSConfig != nil && o.TLSVerify)
}

// isLoopbackHost reports whether host names only loopback interfaces.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
