package security_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/jetflow/jetflow/embedded"
	"github.com/jetflow/jetflow/internal/jftest"
	"github.com/jetflow/jetflow/jetstream"
	"github.com/jetflow/jetflow/security"
)

// secured is an embedded server started with the config `jetflow
// security init` writes, and clients of each role.
type secured struct {
	t    *testing.T
	res  *security.Result
	srv  *embedded.Server
	url  string // "" when the server does not listen
	tls  bool
	mu   sync.Mutex
	logs []*roleLog
}

// roleLog collects one client's log lines.
type roleLog struct {
	role security.Role
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (l *roleLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// violations returns the subjects of the permissions violations the
// client logged.
func (l *roleLog) violations() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		var rec struct {
			Message string `json:"message"`
			Subject string `json:"subject"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Message == "nats permissions violation" {
			out = append(out, rec.Subject)
		}
	}
	return out
}

func (l *roleLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

type securedOptions struct {
	scope  security.Scope
	tls    bool
	listen bool
}

func startSecured(t *testing.T, o securedOptions) *secured {
	t.Helper()
	res, err := security.Init(security.InitConfig{Dir: t.TempDir(), Scope: o.scope, TLS: o.tls})
	require.NoError(t, err)
	sc := embedded.Config{StoreDir: t.TempDir(), ConfigFile: filepath.Join(res.Dir, security.ServerConfigFile), DontListen: !o.listen, Port: -1}
	srv, err := embedded.Start(sc)
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	s := &secured{t: t, res: res, srv: srv, tls: o.tls}
	if o.listen {
		s.url = srv.ClientURL()
		if o.tls {
			s.url = strings.Replace(s.url, "nats://", "tls://", 1)
		}
	}
	return s
}

// auth is the role's credentials as the generated files give them.
func (s *secured) auth(role security.Role) jetstream.Auth {
	a := jetstream.Auth{NKey: filepath.Join(s.res.Dir, security.SeedFile(role))}
	if s.tls {
		a.TLSCA = filepath.Join(s.res.Dir, security.CAFile)
		a.TLSCert = filepath.Join(s.res.Dir, security.CertFile(role))
		a.TLSKey = filepath.Join(s.res.Dir, security.KeyFile(role))
	}
	return a
}

// connect opens a client of a role. cfg may set anything but the
// connection itself.
func (s *secured) connect(role security.Role, cfg jetstream.Config) (*jetstream.Client, *roleLog) {
	s.t.Helper()
	l := &roleLog{role: role}
	s.mu.Lock()
	s.logs = append(s.logs, l)
	s.mu.Unlock()
	cfg.Name = "jetflow-" + string(role)
	cfg.Auth = s.auth(role)
	cfg.InboxPrefix = role.InboxPrefix()
	cfg.Logger = zerolog.New(zerolog.MultiLevelWriter(l, testLogWriter(s.t))).With().Str("role", string(role)).Logger()
	if s.url != "" {
		cfg.URL = s.url
	} else {
		cfg.Server = s.srv
	}
	if cfg.DispatcherAckWait == 0 {
		cfg.DispatcherAckWait = 5 * time.Second
	}
	if cfg.WorkerAckWait == 0 {
		cfg.WorkerAckWait = 2 * time.Second
	}
	c, err := jetstream.Connect(context.Background(), cfg)
	require.NoError(s.t, err, "connect as %s", role)
	s.t.Cleanup(c.Close)
	return c, l
}

// raw opens a plain nats.go connection of a role, for operations no
// jetflow client makes; the server's async errors arrive on errs.
func (s *secured) raw(role security.Role) (nc *nats.Conn, errs <-chan error) {
	s.t.Helper()
	ch := make(chan error, 64)
	opt, err := nats.NkeyOptionFromSeed(filepath.Join(s.res.Dir, security.SeedFile(role)))
	require.NoError(s.t, err)
	opts := []nats.Option{opt, nats.CustomInboxPrefix(role.InboxPrefix()), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case ch <- err:
		default:
		}
	})}
	url := s.url
	if url == "" {
		opts = append(opts, nats.InProcessServer(s.srv))
	}
	if s.tls {
		opts = append(opts, nats.RootCAs(filepath.Join(s.res.Dir, security.CAFile)),
			nats.ClientCert(filepath.Join(s.res.Dir, security.CertFile(role)), filepath.Join(s.res.Dir, security.KeyFile(role))))
	}
	nc, err = nats.Connect(url, opts...)
	require.NoError(s.t, err, "raw connect as %s", role)
	s.t.Cleanup(nc.Close)
	return nc, ch
}

// testLogWriter writes to the test log when JETFLOW_TEST_LOG is set.
func testLogWriter(t *testing.T) zerolog.LevelWriter {
	if jftest.Logger(t).GetLevel() == zerolog.Disabled {
		return zerolog.MultiLevelWriter(io.Discard)
	}
	return zerolog.MultiLevelWriter(zerolog.ConsoleWriter{Out: zerolog.TestWriter{T: t}})
}
